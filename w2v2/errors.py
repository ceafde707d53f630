"""The one exception type for bad user input; the command line prints it as a paragraph."""


class W2v2Error(Exception):
    """A problem with the user's files, configs or arguments, explained in one paragraph."""
