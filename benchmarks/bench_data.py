"""Data pipeline benchmark: manifest preparation files/s, and loading audio-seconds/s with the padding
(fine-tuning) or crop (pretraining) waste of length-bucketed batches against naive unsorted batches.

    PYTHONPATH=. python benchmarks/bench_data.py --synthesize 400 --output data.json
    PYTHONPATH=. python benchmarks/bench_data.py --data /path/LibriSpeech/train-clean-100 --workers 4

`--data` is one split in LibriSpeech layout (SPEAKER/CHAPTER/*.flac and *.trans.txt). Both batchings
read the same files under the same `max_tokens` / `batch_size` bounds, in the same run; the sorted one
runs first, so with a cold disk cache the naive one is favoured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import soundfile
import torch

from w2v2.data.datasets import AudioDataset, FinetuningDataset, PretrainingDataset
from w2v2.data.dictionary import dictionary_from_lines
from w2v2.data.labels import letters, transcripts
from w2v2.data.loader import build_dataloader
from w2v2.data.manifest import read_manifest, write_manifest
from w2v2.data.sampler import ItemKey

SAMPLE_RATE = 16000
WORDS = "THE OF AND TO A IN HE WAS THAT IT HIS HAD WITH AS FOR YOU BUT SHE NOT BE".split()


@dataclass
class ManifestResult:
    workers: Optional[int]
    files: int
    seconds: float
    files_per_second: float


@dataclass
class LoadingResult:
    task: str
    batching: str
    batches: int
    audio_hours: float
    padding_fraction: float
    cropped_fraction: float
    seconds: float
    audio_seconds_per_second: float


class NaiveBatchSampler:
    """Random order, filled greedily under the same bounds: batching without length grouping."""

    def __init__(self, lengths: np.ndarray, max_tokens: int, batch_size: Optional[int], seed: int) -> None:
        limit = batch_size or len(lengths)
        self.batches: List[List[int]] = [[]]
        longest = 0
        for index in np.random.default_rng(seed).permutation(len(lengths)).tolist():
            longest = max(longest, int(lengths[index])) if self.batches[-1] else int(lengths[index])
            batch = self.batches[-1]
            if batch and (len(batch) == limit or (len(batch) + 1) * longest > max_tokens):
                self.batches.append([])
                longest = int(lengths[index])
            self.batches[-1].append(index)

    def __iter__(self) -> Iterator[List[ItemKey]]:
        return iter([[ItemKey(index, 1) for index in batch] for batch in self.batches if batch])

    def __len__(self) -> int:
        return sum(1 for batch in self.batches if batch)


def synthesize(root: Path, count: int, seed: int = 0) -> None:
    """`count` FLAC utterances of 1.5-17 s (noisy tones) with transcripts, in LibriSpeech layout."""
    rng = np.random.default_rng(seed)
    by_chapter: dict = {}
    for number in range(count):
        speaker, chapter = 100 + number % 8, 10 + number % 3
        by_chapter.setdefault((speaker, chapter), []).append(number)
    for (speaker, chapter), numbers in by_chapter.items():
        folder = root / str(speaker) / str(chapter)
        folder.mkdir(parents=True)
        lines = []
        for number in numbers:
            seconds = rng.uniform(1.5, 17.0)
            t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            wave = 0.1 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.01 * rng.standard_normal(len(t))
            utterance = f"{speaker}-{chapter}-{number:04d}"
            soundfile.write(folder / f"{utterance}.flac", wave.astype(np.float32), SAMPLE_RATE)
            lines.append(f"{utterance} " + " ".join(rng.choice(WORDS, size=max(1, int(seconds * 2.5)))))
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(line + "\n" for line in lines))


def time_manifest(root: Path, dest: Path, workers: Optional[int]) -> ManifestResult:
    """Write `dest/train.tsv` for `root` and time it."""
    start = time.perf_counter()
    summary = write_manifest(root, dest, valid_percent=0.0, workers=workers)
    seconds = time.perf_counter() - start
    return ManifestResult(workers, summary.train_files, seconds, summary.train_files / seconds)


def time_loading(task: str, batching: str, dataset: AudioDataset, sampler, workers: int) -> LoadingResult:
    """One pass over `sampler`'s batches through a DataLoader, with audio and waste totals."""
    loader = build_dataloader(dataset, sampler, num_workers=workers, persistent_workers=False)
    kept = slots = loaded = 0.0
    start = time.perf_counter()
    for batch in loader:
        kept += batch["audio_seconds"] * SAMPLE_RATE
        slots += batch["net_input"]["source"].numel()
        loaded += float(dataset.sizes[batch["id"].numpy()].sum())
    seconds = time.perf_counter() - start
    return LoadingResult(
        task, batching, len(sampler), kept / SAMPLE_RATE / 3600, 1.0 - kept / slots, 1.0 - kept / loaded,
        seconds, kept / SAMPLE_RATE / seconds,
    )


def loading_results(manifest: Path, args: argparse.Namespace) -> List[LoadingResult]:
    """Sorted and naive batching, for fine-tuning (padding) and pretraining (cropping)."""
    parsed = read_manifest(manifest)
    labels = [letters(words) for words in transcripts(parsed.root, [path for path, _ in parsed.entries])]
    finetuning = FinetuningDataset(parsed.root, parsed.entries, labels, dictionary_from_lines(labels))
    pretraining = PretrainingDataset(
        parsed.root, parsed.entries, max_sample_size=args.max_sample_size, min_sample_size=args.min_sample_size
    )
    results = []
    for task, dataset, max_tokens in [
        ("fine-tuning", finetuning, args.finetune_max_tokens),
        ("pretraining", pretraining, args.pretrain_max_tokens),
    ]:
        sorted_batches = dataset.batch_sampler(max_tokens, args.batch_size, seed=args.seed)
        naive = NaiveBatchSampler(dataset.batch_lengths, max_tokens, args.batch_size, args.seed)
        for batching, sampler in [("sorted", sorted_batches), ("naive", naive)]:
            results.append(time_loading(task, batching, dataset, sampler, args.workers))
    return results


def print_tables(manifests: List[ManifestResult], loading: List[LoadingResult]) -> None:
    """Human-readable comparison tables."""
    print(f"\n{'manifest workers':>16} {'files':>7} {'seconds':>8} {'files/s':>9}")
    for m in manifests:
        print(f"{str(m.workers or 'default'):>16} {m.files:>7} {m.seconds:>8.2f} {m.files_per_second:>9.0f}")
    print(f"\n{'task':<12} {'batching':<8} {'batches':>7} {'audio h':>8} {'padding':>8} {'cropped':>8} "
          f"{'seconds':>8} {'audio-s/s':>10}")
    for r in loading:
        print(f"{r.task:<12} {r.batching:<8} {r.batches:>7} {r.audio_hours:>8.3f} {r.padding_fraction:>8.1%} "
              f"{r.cropped_fraction:>8.1%} {r.seconds:>8.2f} {r.audio_seconds_per_second:>10.0f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="one split in LibriSpeech layout")
    source.add_argument("--synthesize", type=int, default=400, help="utterances to synthesise (default 400)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--finetune-max-tokens", type=int, default=3_200_000)
    parser.add_argument("--pretrain-max-tokens", type=int, default=1_400_000)
    parser.add_argument("--max-sample-size", type=int, default=250_000)
    parser.add_argument("--min-sample-size", type=int, default=32_000)
    parser.add_argument("--batch-size", type=int, default=None, help="at most this many utterances per batch")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.data
        if root is None:
            root = Path(scratch, "synthetic")
            synthesize(root, args.synthesize)
        manifests = [time_manifest(root, Path(scratch, f"manifest{w}"), w) for w in (1, None)]
        loading = loading_results(Path(scratch, "manifestNone", "train.tsv"), args)
    print_tables(manifests, loading)
    if args.output:
        environment = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
        report = {
            "data": str(args.data) if args.data else f"synthetic ({args.synthesize} utterances)",
            "settings": {k: v for k, v in vars(args).items() if k not in ("data", "output")},
            "environment": environment,
            "manifest": [asdict(m) for m in manifests],
            "loading": [asdict(r) for r in loading],
        }
        args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
