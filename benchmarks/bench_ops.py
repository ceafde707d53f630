"""Old-versus-new microbenchmarks of each speed change, at BASE shapes (2 x 15 s: 750 frames, batch 2),
forward + backward, the two alternating in one process; prints best and median milliseconds.

    PYTHONPATH=. python benchmarks/bench_ops.py --threads 1 --rounds 20
    PYTHONPATH=. python benchmarks/bench_ops.py --only attention_dropout qkv
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from w2v2.models.transformer import _attention_with_dropout  # noqa: E402
from w2v2.models.wav2vec2 import _unit  # noqa: E402

T, B, C, H = 750, 2, 768, 12
Case = Tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).requires_grad_()


def qkv() -> Case:
    """Three q/k/v projections against one matmul over the concatenated weights."""
    x, ws, bs = _leaf(T, B, C), [_leaf(C, C) for _ in range(3)], [_leaf(C) for _ in range(3)]
    return (lambda: sum(F.linear(x, w, b).sum() for w, b in zip(ws, bs)),
            lambda: F.linear(x, torch.cat(ws), torch.cat(bs)).sum())


def attention_dropout() -> Case:
    """SDPA with dropout 0.1 (its CPU fallback) against our explicit path; one padded utterance."""
    q, k, v = (_leaf(B, H, T, C // H) for _ in range(3))
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[1, 600:] = True
    return (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=~padding[:, None, None, :], dropout_p=0.1).sum(),
            lambda: _attention_with_dropout(q, k, v, padding, 0.1).sum())


def cosine() -> Case:
    """torch.cosine_similarity of x with 101 candidates against normalising x once (masked frames: ~375)."""
    x, candidates = _leaf(B, 375, 256), _leaf(101, B, 375, 256)
    return (lambda: torch.cosine_similarity(x, candidates, dim=-1).sum(),
            lambda: (_unit(x).unsqueeze(0) * _unit(candidates)).sum(-1).sum())


def quantizer() -> Case:
    """fairseq's broadcast product summed over the codebook against one batched matmul (2 groups x 320)."""
    rows, groups, num_vars, dim = B * 375, 2, 320, 128
    onehot = F.one_hot(torch.randint(0, num_vars, (rows * groups,)), num_vars).float().view(rows, -1)
    onehot.requires_grad_()
    codebook = _leaf(1, groups * num_vars, dim)
    return (lambda: (onehot.unsqueeze(-1) * codebook).view(rows, groups, num_vars, -1).sum(-2).sum(),
            lambda: torch.bmm(onehot.view(rows, groups, -1).transpose(0, 1), codebook.view(groups, num_vars, -1)).sum())


def adamw() -> Case:
    """One AdamW step over BASE-sized parameters: torch's CPU default (a loop per tensor) against fused."""
    shapes = [(C, C)] * 48 + [(3072, C)] * 24 + [(C,)] * 130 + [(512, 512, 3)] * 6

    def make(fused: bool) -> Callable[[], torch.Tensor]:
        params = [torch.zeros(s, requires_grad=True) for s in shapes]
        for param in params:
            param.grad = torch.randn_like(param) * 1e-3
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused, foreach=False)
        return lambda: (optimizer.step(), torch.zeros(()))[1]

    return make(False), make(True)


CASES = {"qkv": qkv, "attention_dropout": attention_dropout, "cosine": cosine, "quantizer": quantizer,
         "adamw": adamw}


def timed(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    out = fn()
    if out.requires_grad:
        out.backward()
    return time.perf_counter() - start


def main(argv: List[str]) -> None:
    """Run each case `--rounds` times, old and new alternating (order flipped each round)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--only", nargs="+", choices=tuple(CASES), default=list(CASES))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.only:
        old, new = CASES[name]()
        times: Dict[str, List[float]] = {"old": [], "new": []}
        timed(old), timed(new)  # warm-up
        for r in range(args.rounds):
            for label, fn in ((("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))):
                times[label].append(timed(fn))
        cells = "  ".join(f"{k} best {min(v) * 1e3:7.1f} median {statistics.median(v) * 1e3:7.1f} ms"
                          for k, v in times.items())
        print(f"{name:18} {cells}  new/old best {min(times['new']) / min(times['old']):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
