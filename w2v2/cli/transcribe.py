"""`w2v2 transcribe`: the text of audio files (any sample rate, any length), optionally with word times."""

from __future__ import annotations

import argparse
import json
import sys
import time

from tqdm import tqdm

from w2v2.devices import pick_device
from w2v2.inference.evaluate import load_ctc_model
from w2v2.inference.transcribe import transcribe


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("transcribe", help="greedy transcripts of audio files with a CTC checkpoint")
    parser.add_argument("--checkpoint", required=True, help="fine-tuned (wav2vec_ctc) checkpoint")
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg; any sample rate and channels)")
    parser.add_argument("--json", action="store_true", help="print JSON with word start/end times")
    parser.add_argument("--window-seconds", type=float, default=30.0, help="longest piece the model sees at once")
    parser.add_argument("--overlap-seconds", type=float, default=4.0, help="overlap of neighbouring windows")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or npu")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow a checkpoint with arbitrary pickles")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load_ctc_model(args.checkpoint, args.trust_checkpoint, letters=True).to(pick_device(args.device))
    started = time.perf_counter()
    transcripts = []
    for path in tqdm(args.audio, desc="transcribe", unit="file"):
        transcripts.append(transcribe(model, path, args.window_seconds, args.overlap_seconds))
        if not args.json:
            print(f"{path}\t{transcripts[-1].text}", flush=True)
    if args.json:
        print(json.dumps([t.to_json() for t in transcripts], indent=2))
    seconds = time.perf_counter() - started
    audio = sum(t.duration for t in transcripts)
    print(f"transcribed {len(transcripts)} files, {audio:.1f} s of audio in {seconds:.1f} s "
          f"({audio / max(seconds, 1e-9):.1f}x real time)", file=sys.stderr)
    return 0
