"""`w2v2 demo`: pretrain a small wav2vec 2.0 on the bundled corpus, fine-tune it with CTC, report WER.

Every stage is the public command a user would run (`w2v2 prepare librispeech`, `fairseq-hydra-train`
with the `demo_pretrain` and `demo_ctc` recipes, `w2v2 evaluate`, `w2v2 plot`), so the demo doubles as
an end-to-end check of the toolkit.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from w2v2.errors import W2v2Error
from w2v2.fileio import write_text_atomically
from w2v2.train.progress import read_run_log

REPO_CORPUS = Path(__file__).resolve().parents[2] / "examples" / "demo_corpus"
REPO_LM = Path(__file__).resolve().parents[2] / "examples" / "lm"


@dataclass
class DemoSummary:
    """What the demo measured; written to WORKDIR/demo_summary.json."""

    seconds: Dict[str, float] = field(default_factory=dict)  # per stage
    untrained_wer: float = float("nan")
    greedy_wer: float = float("nan")
    greedy_uer: float = float("nan")
    lm_wer: Optional[float] = None
    max_train_wps: float = 0.0  # letters per second, fairseq's train_wps
    max_train_audio_s_per_s: float = 0.0
    plot: Optional[str] = None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="pretrain + fine-tune a small model on the bundled corpus, report WER")
    parser.add_argument("--corpus", type=Path, default=REPO_CORPUS, help="LibriSpeech-layout corpus (default: bundled)")
    parser.add_argument("--workdir", type=Path, default=Path("demo_run"), help="where runs and results go")
    parser.add_argument("--pretrain-updates", type=int, default=None, help="default: the demo_pretrain recipe's")
    parser.add_argument("--finetune-updates", type=int, default=None, help="default: the demo_ctc recipe's")
    parser.add_argument("--quick", action="store_true", help="a few updates of each stage (a smoke test)")
    parser.set_defaults(func=run)


def _train(recipe: str, overrides: List[str]) -> None:
    from w2v2.cli.hydra_train import main as hydra_train

    if hydra_train(["--config-name", recipe, *overrides]) != 0:
        raise W2v2Error(f"the {recipe} stage of the demo failed; its error is printed above.")


def _stage(summary: DemoSummary, name: str, start: float) -> None:
    summary.seconds[name] = round(time.time() - start, 1)
    print(f"[demo] {name} done in {summary.seconds[name]:.0f} s", flush=True)


def _max_train(run_dir: Path, key: str) -> float:
    """The largest value of `key` in the run's log records (0 when none holds it)."""
    return max((values.get(key, 0.0) for _, values in read_run_log(run_dir)), default=0.0)


def run(args: argparse.Namespace) -> int:
    from w2v2.data.librispeech import decoded_copy, prepare_librispeech
    from w2v2.inference.decoding import LmOptions
    from w2v2.inference.evaluate import evaluate

    if not args.corpus.is_dir():
        raise W2v2Error(f"`--corpus` {args.corpus} is not a folder with train-clean-100/ and dev-clean/.")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    summary, begin = DemoSummary(), time.time()
    pre_updates = 4 if args.quick else args.pretrain_updates
    ft_updates = 6 if args.quick else args.finetune_updates

    start = time.time()
    manifest = work / "manifest"
    prepare_librispeech(decoded_copy(args.corpus, work / "corpus"), dest=manifest)
    _stage(summary, "prepare", start)

    start = time.time()
    pretrain = work / "pretrain"
    _train("demo_pretrain", [f"task.data={manifest}", f"hydra.run.dir={pretrain}"]
           + ([f"optimization.max_update={pre_updates}"] if pre_updates else []))
    _stage(summary, "pretrain", start)

    start = time.time()
    finetune = work / "finetune"
    overrides = [f"task.data={manifest}", f"model.w2v_path={pretrain / 'checkpoints' / 'checkpoint_last.pt'}",
                 f"hydra.run.dir={finetune}"]
    if ft_updates:
        overrides += [f"optimization.max_update={ft_updates}", f"dataset.validate_interval_updates={ft_updates}"]
    _train("demo_ctc", overrides)
    _stage(summary, "finetune", start)

    start = time.time()
    untrained = _untrained_checkpoint(finetune, work / "untrained.pt")
    summary.untrained_wer = evaluate(untrained, manifest, "dev_clean", progress=False).wer
    best = finetune / "checkpoints" / "checkpoint_best.pt"
    greedy = evaluate(best, manifest, "dev_clean", progress=False)
    summary.greedy_wer, summary.greedy_uer = greedy.wer, greedy.uer
    lm_path, lexicon = REPO_LM / "demo_3gram.arpa", REPO_LM / "demo_lexicon.txt"
    if lm_path.is_file() and lexicon.is_file():
        try:
            summary.lm_wer = evaluate(best, manifest, "dev_clean", LmOptions(str(lm_path), str(lexicon)),
                                      progress=False).wer
        except W2v2Error as error:  # flashlight-text is an optional extra
            print(f"[demo] skipping LM decoding: {error}")
    _stage(summary, "evaluate", start)

    summary.max_train_wps = _max_train(finetune, "train_wps")
    summary.max_train_audio_s_per_s = _max_train(finetune, "train_audio_s_per_s")
    summary.plot = _plot(finetune)
    summary.seconds["total"] = round(time.time() - begin, 1)
    _report(summary, work)
    return 0


def _untrained_checkpoint(finetune: Path, target: Path) -> Path:
    """The fine-tuning start (pretrained encoder, the run's random letter projection), for the baseline WER."""
    from w2v2.interop.checkpoints import load_model, save_checkpoint
    from w2v2.models.ctc import Wav2Vec2Ctc
    from w2v2.train.config import FinetuningConfig
    from w2v2.train.config_loading import validate_train_config
    from w2v2.train.setup import seed_everything
    from w2v2.train.task import build_ctc_model

    trained = load_model(finetune / "checkpoints" / "checkpoint_best.pt")
    cfg = validate_train_config(trained.fairseq_cfg, strict=False, source="the fine-tuned checkpoint")
    if not isinstance(cfg, FinetuningConfig) or not isinstance(trained, Wav2Vec2Ctc) or trained.dictionary is None:
        raise W2v2Error(f"{finetune} does not hold a fine-tuned CTC checkpoint with its letter dictionary.")
    cfg.model.w2v_args = None  # rebuild from model.w2v_path: the pretrained weights
    seed_everything(cfg.common.seed)  # as the trainer does before building: the same letter projection
    model = build_ctc_model(cfg, trained.dictionary)
    save_checkpoint(target, model, dictionary=trained.dictionary)
    return target


def _plot(run_dir: Path) -> Optional[str]:
    from w2v2.cli.plot import plot_run

    try:
        return str(plot_run(run_dir))
    except W2v2Error as error:  # matplotlib is an optional extra
        print(f"[demo] no plot: {error}")
        return None


def _report(summary: DemoSummary, work: Path) -> None:
    target = work / "demo_summary.json"
    write_text_atomically(target, json.dumps(asdict(summary), indent=2) + "\n")
    lm = f", with the 3-gram LM {summary.lm_wer:.1f} %" if summary.lm_wer is not None else ""
    print(f"[demo] dev WER (unseen voices): untrained {summary.untrained_wer:.1f} % -> fine-tuned greedy "
          f"{summary.greedy_wer:.1f} % (letters {summary.greedy_uer:.1f} %){lm}")
    print(f"[demo] throughput: {summary.max_train_wps:.0f} letters/s, {summary.max_train_audio_s_per_s:.1f} audio-s/s "
          f"(fine-tuning); time: {summary.seconds['total']:.0f} s in all "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in summary.seconds.items() if k != 'total')})")
    if summary.plot:
        print(f"[demo] training curves: {summary.plot}")
    print(f"[demo] summary: {target}")
