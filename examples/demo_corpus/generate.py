"""Generate the demo corpus: synthetic English speech from espeak-ng voices in LibriSpeech layout.

    apt-get install espeak-ng
    python examples/demo_corpus/generate.py --out examples/demo_corpus
    python examples/demo_corpus/generate.py --out examples/demo_corpus --check   # verify only
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from oggpack import compact_ogg_opus
from texts import BOOK, TextSource, book_sentences

SAMPLE_RATE = 16000
EXT = "ogg"
OPUS_LEVEL = 0.96  # libsndfile's Opus compression level: ~16 kbit/s, clear wideband speech, fits ≤ 15 MB
CHAPTER_SIZE = 75  # utterances per chapter; a speaker's utterances fill consecutive chapters


@dataclass(frozen=True)
class Voice:
    """One speaker: an espeak-ng accent and variant at a base pitch (0–99) and speed (words/min)."""

    speaker: int
    accent: str
    variant: str
    pitch: int
    speed: int


# Dev variants never occur in train, and two dev accents (New York, West Midlands) are also unseen.
TRAIN_VOICES = [
    Voice(1001, "en-us", "m1", 45, 165), Voice(1002, "en-gb", "f1", 55, 150),
    Voice(1003, "en-gb-x-rp", "m2", 40, 175), Voice(1004, "en-gb-scotland", "f2", 60, 160),
    Voice(1005, "en-029", "m3", 50, 145), Voice(1006, "en-gb-x-gbclan", "f3", 65, 170),
    Voice(1007, "en-us", "m4", 35, 155), Voice(1008, "en-gb", "f4", 50, 180),
    Voice(1009, "en-gb-x-rp", "m5", 55, 150), Voice(1010, "en-gb-scotland", "m6", 45, 165),
    Voice(1011, "en-029", "klatt", 40, 160), Voice(1012, "en-gb-x-gbclan", "klatt2", 60, 150),
    Voice(1013, "en-us", "klatt4", 50, 175), Voice(1014, "en-gb", "adam", 40, 160),
    Voice(1015, "en-gb-x-rp", "Andy", 50, 145), Voice(1016, "en-gb-scotland", "Annie", 65, 155),
    Voice(1017, "en-029", "aunty", 55, 170), Voice(1018, "en-gb-x-gbclan", "john", 35, 150),
    Voice(1019, "en-us", "linda", 60, 165), Voice(1020, "en-gb", "steph", 55, 155),
]
DEV_VOICES = [
    Voice(2001, "en-us", "m7", 45, 160), Voice(2002, "en-us-nyc", "f5", 60, 155),
    Voice(2003, "en-gb-x-gbcwmd", "klatt3", 50, 165), Voice(2004, "en-gb", "belinda", 55, 150),
    Voice(2005, "en-gb-x-rp", "max", 40, 170),
]
SPLITS = {"train-clean-100": (TRAIN_VOICES, 150), "dev-clean": (DEV_VOICES, 60)}


@dataclass(frozen=True)
class Utterance:
    """Everything needed to render one file; rendering is a pure function of these fields."""

    utt_id: str
    path: str  # relative to the corpus root
    kind: str
    text: str
    voice: Voice
    pitch: int
    speed: int
    peak: float
    snr_db: float
    lead_s: float
    tail_s: float
    noise_seed: int


def plan_split(split: str, rng: np.random.Generator, texts: TextSource) -> list[Utterance]:
    """Return the utterances of one split, each with its transcript and randomised delivery."""
    voices, per_voice = SPLITS[split]
    utts = []
    for voice in voices:
        for i in range(per_voice):
            chapter = voice.speaker * 10 + i // CHAPTER_SIZE
            utt_id = f"{voice.speaker}-{chapter}-{i % CHAPTER_SIZE:04d}"
            kind, text = texts.draw()
            utts.append(Utterance(
                utt_id=utt_id, path=f"{split}/{voice.speaker}/{chapter}/{utt_id}.{EXT}", kind=kind, text=text,
                voice=voice, pitch=int(np.clip(voice.pitch + rng.integers(-8, 9), 0, 99)),
                speed=int(voice.speed * rng.uniform(0.88, 1.12)), peak=float(rng.uniform(0.3, 0.9)),
                snr_db=float(rng.uniform(25.0, 35.0)), lead_s=float(rng.uniform(0.05, 0.25)),
                tail_s=float(rng.uniform(0.05, 0.25)), noise_seed=int(rng.integers(2**32)),
            ))
    return utts


def plan_corpus(seed: int, book: Path) -> list[Utterance]:
    """Return every utterance of the corpus; dev and train draw book sentences from disjoint pools."""
    rng = np.random.default_rng(seed)
    pool = book_sentences(book)
    rng.shuffle(pool)
    n_dev = len(pool) // 10
    pools = {"dev-clean": pool[:n_dev], "train-clean-100": pool[n_dev:]}
    return [u for split in SPLITS for u in plan_split(split, rng, TextSource(rng, pools[split]))]


def synthesize(utt: Utterance) -> np.ndarray:
    """Return espeak-ng's rendering of the transcript, resampled to 16 kHz, silence trimmed."""
    voice = f"{utt.voice.accent}+{utt.voice.variant}"
    cmd = ["espeak-ng", "-v", voice, "-p", str(utt.pitch), "-s", str(utt.speed), "--stdout", utt.text.lower()]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float64")
    # Band-limited resampling by cutting the spectrum: exact, and needs no extra dependency.
    n_out = round(len(audio) * SAMPLE_RATE / rate)
    audio = np.fft.irfft(np.fft.rfft(audio)[: n_out // 2 + 1], n_out) * n_out / len(audio)
    # espeak-ng pads with digital silence; -60 dB keeps weak onsets such as the /f/ of FIVE.
    loud = np.flatnonzero(np.abs(audio) > 1e-3 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1]


def render(utt: Utterance, root: Path) -> None:
    """Synthesise, pad, scale and add white noise to one utterance; write it under `root`."""
    speech = synthesize(utt)
    speech = np.concatenate([np.zeros(int(utt.lead_s * SAMPLE_RATE)), speech, np.zeros(int(utt.tail_s * SAMPLE_RATE))])
    speech *= utt.peak / np.abs(speech).max()
    active = speech[np.abs(speech) > 0.05 * utt.peak]
    noise_rms = np.sqrt(np.mean(active**2)) * 10 ** (-utt.snr_db / 20)
    audio = speech + np.random.default_rng(utt.noise_seed).normal(0.0, noise_rms, len(speech))
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0).astype(np.float32), SAMPLE_RATE,
             format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    path = root / utt.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compact_ogg_opus(buffer.getvalue(), serial=zlib.crc32(utt.utt_id.encode())))


def write_transcripts(utts: list[Utterance], root: Path) -> None:
    """Write one `SPEAKER-CHAPTER.trans.txt` per chapter, lines sorted by utterance id."""
    chapters: dict[Path, list[str]] = {}
    for utt in utts:
        speaker, chapter, _ = utt.utt_id.split("-")
        trans = root / Path(utt.path).parent / f"{speaker}-{chapter}.trans.txt"
        chapters.setdefault(trans, []).append(f"{utt.utt_id} {utt.text}\n")
    for trans, lines in chapters.items():
        trans.write_text("".join(sorted(lines)), encoding="ascii")


def check_espeak(voices: list[Voice]) -> None:
    """Exit with a clear message unless espeak-ng is installed and knows every accent and variant."""
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is needed to generate the corpus, but is not installed: apt-get install espeak-ng")

    def listing(kind: str) -> str:
        return subprocess.run(["espeak-ng", f"--voices={kind}"], capture_output=True, text=True, check=True).stdout

    # espeak-ng silently ignores an unknown variant, so a typo would merge two speakers into one voice.
    accents = {line.split()[1] for line in listing("en").splitlines()[1:]}
    variants = set(re.findall(r"!v/(\S+)", listing("variant")))
    for voice in voices:
        if voice.accent not in accents or voice.variant not in variants:
            sys.exit(f"speaker {voice.speaker}: espeak-ng has no voice `{voice.accent}+{voice.variant}`.")


def measure(root: Path, split: str) -> dict:
    """Read every file of a split back and return its statistics; exit if anything is inconsistent."""
    texts = {}
    for trans in sorted((root / split).glob("*/*/*.trans.txt")):
        for number, line in enumerate(trans.read_text(encoding="ascii").splitlines(), 1):
            utt_id, _, text = line.partition(" ")
            if not re.fullmatch(r"[A-Z']+( [A-Z']+)*", text):
                sys.exit(f"{trans}:{number}: transcript must be upper-case words A–Z and ', but is {line!r}.")
            texts[utt_id] = text
    audio = {p.name.split(".")[0]: p for p in (root / split).glob(f"*/*/*.{EXT}")}
    if set(texts) != set(audio):
        missing, orphan = sorted(set(texts) - set(audio)), sorted(set(audio) - set(texts))
        sys.exit(f"{root / split}: transcripts without audio {missing[:5]}, audio without transcript {orphan[:5]}.")
    frames = 0
    for utt_id, path in tqdm(sorted(audio.items()), desc=f"check {split}", unit="file"):
        info = sf.info(path)
        data, rate = sf.read(path, dtype="float32")
        if rate != SAMPLE_RATE or info.samplerate != SAMPLE_RATE or info.channels != 1 or data.ndim != 1:
            sys.exit(f"{path}: must be 16000 Hz mono, but is {info.samplerate} Hz with {info.channels} channels.")
        if len(data) != info.frames:
            sys.exit(f"{path}: read {len(data)} samples, but the header says {info.frames}.")
        if len(data) == 0 or not np.isfinite(data).all():
            sys.exit(f"{path}: audio must be non-empty and finite, but is not.")
        frames += len(data)
    words = [w for text in texts.values() for w in text.split()]
    return {
        "utterances": len(audio),
        "speakers": len({utt_id.split("-")[0] for utt_id in audio}),
        "hours": round(frames / SAMPLE_RATE / 3600, 4),
        "mean_seconds": round(frames / SAMPLE_RATE / len(audio), 3),
        "size_bytes": sum(p.stat().st_size for p in (root / split).rglob("*") if p.is_file()),
        "words": len(words),
        "vocabulary": len(set(words)),
    }


def describe(utts: list[Utterance], root: Path, seed: int) -> dict:
    """Return the contents of CORPUS.json: format, voices, transcript kinds and measured statistics."""
    splits = {}
    for split in SPLITS:
        mine = [u for u in utts if u.path.startswith(split + "/")]
        kinds = {kind: sum(u.kind == kind for u in mine) for kind in sorted({u.kind for u in mine})}
        voices = [asdict(v) for v in SPLITS[split][0]]
        splits[split] = {**measure(root, split), "kinds": kinds, "voices": voices}
    vocabulary = {w for u in utts for w in u.text.split()}
    return {
        "seed": seed,
        "format": {"container": "ogg", "codec": "opus", "extension": EXT, "sample_rate": SAMPLE_RATE,
                   "channels": 1, "opus_compression_level": OPUS_LEVEL},
        "vocabulary": len(vocabulary),
        "splits": splits,
    }


def install(tmp: Path, out: Path) -> None:
    """Move the finished splits and CORPUS.json from `tmp` into `out`, replacing any old ones."""
    old = tmp / "old"
    old.mkdir()
    for name in [*SPLITS, "CORPUS.json"]:
        if (out / name).exists():
            (out / name).rename(old / name)
        (tmp / name).rename(out / name)


def generate(out: Path, seed: int, jobs: int, book: Path) -> dict:
    """Render the whole corpus in a temporary folder, verify it, then move it into `out`."""
    check_espeak([v for voices, _ in SPLITS.values() for v in voices])
    if not book.is_file():
        sys.exit(f"{book}: Pride and Prejudice (Project Gutenberg #1342, plain text) not found; pass --book.")
    utts = plan_corpus(seed, book)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".generate-", dir=out))
    try:
        with multiprocessing.Pool(jobs) as pool:
            work = pool.imap_unordered(partial(render, root=tmp), utts, chunksize=8)
            for _ in tqdm(work, total=len(utts), desc="synthesise", unit="utt"):
                pass
        write_transcripts(utts, tmp)
        corpus = describe(utts, tmp, seed)
        (tmp / "CORPUS.json").write_text(json.dumps(corpus, indent=2) + "\n", encoding="utf-8")
        install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return corpus


def check(out: Path) -> dict:
    """Verify a generated corpus against its CORPUS.json without espeak-ng; return the statistics."""
    if not (out / "CORPUS.json").is_file():
        sys.exit(f"{out}: no CORPUS.json here; generate the corpus first.")
    corpus = json.loads((out / "CORPUS.json").read_text(encoding="utf-8"))
    for split, recorded in corpus["splits"].items():
        measured = measure(out, split)
        differ = {k: (recorded[k], v) for k, v in measured.items() if recorded[k] != v}
        if differ:
            sys.exit(f"{out / split}: CORPUS.json disagrees with the files (recorded, measured): {differ}")
    return corpus


def main() -> None:
    """Parse the command line, then generate or check the corpus and print a one-line summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="corpus root")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument("--jobs", type=int, default=min(2, multiprocessing.cpu_count()), help="worker processes")
    parser.add_argument("--book", type=Path, default=BOOK, help="Project Gutenberg #1342 plain text")
    parser.add_argument("--check", action="store_true", help="only verify an existing corpus")
    args = parser.parse_args()
    start = time.perf_counter()
    corpus = check(args.out) if args.check else generate(args.out, args.seed, args.jobs, args.book)
    summary = ", ".join(
        f"{split}: {s['utterances']} utts, {s['speakers']} voices, {s['hours']:.2f} h, {s['size_bytes'] / 1e6:.1f} MB"
        for split, s in corpus["splits"].items()
    )
    elapsed = time.perf_counter() - start
    print(f"demo corpus in {args.out}: {summary}, vocabulary {corpus['vocabulary']} words ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
