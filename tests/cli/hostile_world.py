"""Hostile files for the input catalogue (`test_hostile_inputs.py`): broken checkpoints, audio, data folders."""

from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import soundfile
import torch

from tests.corpus import FIXTURE_CONFIGS
from w2v2.interop.safe_load import as_fairseq_dictionary, load_checkpoint_file, pickled_as_fairseq_dictionary

FAIRSEQ = Path(__file__).parents[1] / "fixtures" / "fairseq"
Edit = Union[str, bytes, Callable[[str], str]]


class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint holds."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def _save(state: dict, path: Path) -> Path:
    with pickled_as_fairseq_dictionary():
        torch.save(state, path)
    return path


def _ctc_state() -> dict:
    state = load_checkpoint_file(FAIRSEQ / "ctc_init.pt")
    state["task_state"]["target_dictionary"] = as_fairseq_dictionary(state["task_state"]["target_dictionary"])
    return state


def write_checkpoints(folder: Path) -> Dict[str, Path]:
    """One broken variant of the fairseq CTC fixture per kind of damage."""
    good = (FAIRSEQ / "ctc_init.pt").read_bytes()
    files = {"truncated": good[: len(good) // 3], "empty": b"", "text": b"hello, I am not a checkpoint\n"}
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pt"
        paths[name].write_bytes(data)
    paths["evil_zip"] = folder / "evil_zip.pt"
    torch.save({"model": RunsCode()}, paths["evil_zip"])
    paths["evil_pickle"] = folder / "evil_pickle.pt"  # a plain pickle, not torch's zip format
    paths["evil_pickle"].write_bytes(pickle.dumps({"model": RunsCode()}, protocol=4))
    variants: Dict[str, Callable[[dict], None]] = {
        "model_list": lambda s: s.update(model=[1, 2, 3]),
        "model_values": lambda s: s.update(model={"w2v_encoder.proj.weight": "not a tensor"}),
        "no_model": lambda s: s.pop("model"),
        "no_cfg": lambda s: (s.pop("cfg"), s.pop("args", None)),
        "wrong_name": lambda s: s["cfg"]["model"].update(_name="transformer"),
        "missing_key": lambda s: s["model"].pop("w2v_encoder.proj.bias"),
        "wrong_shape": lambda s: s["model"].update({"w2v_encoder.proj.bias": torch.zeros(3)}),
        "nan_weights": lambda s: s["model"]["w2v_encoder.proj.weight"].fill_(float("nan")),
        "no_dictionary": lambda s: s.update(task_state={}),
    }
    for name, damage in variants.items():
        state = _ctc_state()
        damage(state)
        paths[name] = _save(state, folder / f"{name}.pt")
    paths["folder"] = folder / "model_folder"
    paths["folder"].mkdir()
    return paths


def write_audio(folder: Path) -> Dict[str, Path]:
    """Audio files: fine, too short, NaN, 8 kHz, empty, not audio, and a folder named like audio."""
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    nan = noise.copy()
    nan[1234] = np.nan
    paths = {name: folder / f"{name}.wav" for name in ("ok", "short", "nan", "rate8k", "empty", "corrupt", "inf")}
    soundfile.write(paths["ok"], noise, 16000, subtype="FLOAT")
    soundfile.write(paths["short"], noise[:300], 16000)
    soundfile.write(paths["nan"], nan, 16000, subtype="FLOAT")
    soundfile.write(paths["inf"], np.where(np.arange(16000) == 9, np.inf, noise).astype(np.float32), 16000,
                    subtype="FLOAT")
    soundfile.write(paths["rate8k"], noise[:8000], 8000)
    soundfile.write(paths["empty"], noise[:0], 16000)
    paths["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    paths["dir"] = folder / "dir.wav"
    paths["dir"].mkdir()
    return paths


@dataclass
class World:
    """Everything the catalogue's cases point at; `tmp` is the case's own folder."""

    manifest: Path  # the tiny corpus' manifest folder (train, valid, dev_clean, dict.ltr.txt)
    checkpoints: Dict[str, Path]
    audio: Dict[str, Path]
    tmp: Path = Path()

    @property
    def ctc(self) -> str:
        return str(FAIRSEQ / "ctc_init.pt")

    @property
    def pretrained(self) -> str:
        return str(FAIRSEQ / "pretrain_init.pt")

    def transcribe(self, *extra: str, audio: Optional[List[Path]] = None, checkpoint: Optional[object] = None) -> List[str]:
        files = [str(path) for path in (audio or [self.audio["ok"]])]
        return ["transcribe", "--checkpoint", str(checkpoint or self.ctc), *files, "--device", "cpu", *extra]

    def features(self, *extra: str, audio: Optional[List[Path]] = None, checkpoint: Optional[object] = None) -> List[str]:
        files = [str(path) for path in (audio or [self.audio["ok"]])]
        return ["features", "--checkpoint", str(checkpoint or self.ctc), *files, "--output-dir", str(self.out), *extra]

    @property
    def out(self) -> Path:
        """Where a case's command would write its outputs (must stay free of them after an error)."""
        return self.tmp / "out"

    def evaluate(self, *extra: str, data: Optional[Path] = None, subset: str = "valid",
                 checkpoint: Optional[object] = None) -> List[str]:
        return ["evaluate", "--checkpoint", str(checkpoint or self.ctc), "--data", str(data or self.manifest),
                "--subset", subset, "--device", "cpu", *extra]

    def data(self, edits: Dict[str, Optional[Edit]]) -> Path:
        """A copy of the manifest folder with files replaced (text or bytes), edited (a function of the
        text) or deleted (None)."""
        folder = self.tmp / "data"
        shutil.copytree(self.manifest, folder)
        for name, edit in edits.items():
            path = folder / name
            if edit is None:
                path.unlink()
            elif isinstance(edit, bytes):
                path.write_bytes(edit)
            else:
                path.write_text(edit(path.read_text()) if callable(edit) else edit, encoding="utf-8")
        return folder

    def one_file(self, audio: Path, frames: Optional[int] = None, label: str = "O N E |", subset: str = "valid") -> Path:
        """A data folder whose `subset` lists only `audio` (with `frames`, default its real length)."""
        folder = self.tmp / "one"
        folder.mkdir()
        count = soundfile.info(str(audio)).frames if frames is None else frames
        (folder / f"{subset}.tsv").write_text(f"{audio.parent}\n{audio.name}\t{count}\n")
        (folder / f"{subset}.ltr").write_text(label + "\n")
        shutil.copy(self.manifest / "dict.ltr.txt", folder)
        return folder

    @property
    def hydra_dir(self) -> Path:
        return FIXTURE_CONFIGS

    def yaml(self, text: str) -> List[str]:
        """`fairseq-hydra-train` on a config file holding `text`."""
        (self.tmp / "bad.yaml").write_text(text)
        return ["--config-dir", str(self.tmp), "--config-name", "bad"]

    def bad_train_audio(self, copies: int = 1) -> Path:
        """A data folder whose train split holds `copies` x 4 good files and one that is not audio."""
        folder = self.tmp / "bad"
        audio = folder / "audio"
        audio.mkdir(parents=True)
        shutil.copy(self.audio["corrupt"], audio)
        names = [f"ok{index}.wav" for index in range(4 * copies)]
        for name in names:
            shutil.copy(self.audio["ok"], audio / name)
        lines = [str(audio)] + [f"{name}\t16000" for name in ["corrupt.wav"] + names]
        (folder / "train.tsv").write_text("\n".join(lines) + "\n")
        return folder

    def hydra(self, config: str, *overrides: str, data: Optional[Path] = None) -> List[str]:
        """`fairseq-hydra-train` on a tiny fixture config (tiny_ctc starts from the fairseq fixture)."""
        start = [f"model.w2v_path={self.pretrained}"] if config == "tiny_ctc" else []
        return ["--config-dir", str(FIXTURE_CONFIGS), "--config-name", config, f"task.data={data or self.manifest}",
                *start, f"hydra.run.dir={self.tmp / 'run'}", *overrides]


def first_entry(edit: Callable[[str], str]) -> Callable[[str], str]:
    """An edit of a manifest's first audio line (line 2)."""
    def apply(text: str) -> str:
        lines = text.splitlines()
        lines[1] = edit(lines[1])
        return "\n".join(lines) + "\n"
    return apply
