"""Thin commands that parse arguments and call the library."""
