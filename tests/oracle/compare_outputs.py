"""Development tool (our venv): our outputs on the fixed input of fairseq_outputs.py, against fairseq's.

    python tests/oracle/compare_outputs.py CKPT FAIRSEQ_OUT.pt

Prints the relative error max|ours - fairseq| / max|fairseq| over the finite entries (and whether
the -inf entries, padded frames forced to blank, agree); exits 1 above 1e-5.
"""

from __future__ import annotations

import sys

import torch

from tests.oracle.outputs import our_outputs, relative_error


def main(checkpoint: str, reference: str) -> int:
    """Compare and print; 0 if within 1e-5."""
    expected = torch.load(reference, weights_only=True)
    ours = our_outputs(checkpoint, expected["source"], expected["padding_mask"])
    error = relative_error(ours, expected["lprobs" if expected["kind"] == "ctc" else "x"])
    print(f"{checkpoint}: {expected['kind']} rel. err {error:.3g}")
    return 0 if error <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
