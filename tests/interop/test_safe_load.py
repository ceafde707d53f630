"""Every refusal path of the checkpoint loader, including a file crafted to run code."""

from __future__ import annotations

import fractions
import os

import pytest
import torch

import w2v2
from w2v2.errors import W2v2Error
from w2v2.interop.safe_load import load_checkpoint_file


class RunsCode:
    """Unpickling this calls os.system, as a hostile checkpoint would."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "payload": RunsCode(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(W2v2Error, match="refused.*trusted=True"):
        w2v2.load_model(tmp_path / "evil.pt")
    assert not marker.exists()


def test_unknown_global_loads_only_when_trusted(tmp_path):
    torch.save({"model": {}, "extra": fractions.Fraction(1, 3)}, tmp_path / "odd.pt")
    with pytest.raises(W2v2Error, match="Fraction"):
        load_checkpoint_file(tmp_path / "odd.pt")
    assert load_checkpoint_file(tmp_path / "odd.pt", trusted=True)["extra"] == fractions.Fraction(1, 3)


def test_trusted_fairseq_file_maps_dictionary_without_fairseq(fairseq_dir):
    state = load_checkpoint_file(fairseq_dir / "ctc_init.pt", trusted=True)
    assert state["task_state"]["target_dictionary"].symbols[4] == "|"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"not a checkpoint at all", "not a readable PyTorch checkpoint"),
        ({"weights": {}}, "must be a dict with a 'model'"),
    ],
)
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(W2v2Error, match=message):
        load_checkpoint_file(path)


def edited(fairseq_dir, tmp_path, edit) -> str:
    state = load_checkpoint_file(fairseq_dir / "pretrain_init.pt")
    edit(state)
    torch.save(state, tmp_path / "edited.pt")
    return str(tmp_path / "edited.pt")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["model"].pop("mask_emb"), "missing keys: mask_emb"),
        (lambda s: s["model"].update(extra=torch.zeros(1)), "unexpected keys: extra"),
        (lambda s: s["model"].update(mask_emb=torch.zeros(3)), r"shape mismatches.*mask_emb \(3,\) vs \(64,\)"),
        (lambda s: s["cfg"]["model"].update(_name="hubert"), "`model._name` must be"),
        (lambda s: s["cfg"]["model"].update(encoder_layerz=2), "`model.encoder_layerz`.*Did you mean `model.encoder_layers`"),
        (lambda s: s["cfg"]["model"].update(extractor_mode="batch_norm"), "extractor_mode"),
        (lambda s: s["cfg"]["model"].update(conv_feature_layers="__import__('os')"), "conv_feature_layers"),
        (lambda s: s.update(cfg=None), "neither a `cfg` nor an `args`"),
    ],
)
def test_inconsistent_checkpoints_name_the_fault(fairseq_dir, tmp_path, edit, message):
    with pytest.raises(W2v2Error, match=message):
        w2v2.load_model(edited(fairseq_dir, tmp_path, edit))


def test_ctc_without_pretraining_config_or_path(fairseq_dir, tmp_path):
    state = load_checkpoint_file(fairseq_dir / "ctc_init.pt")
    state["cfg"]["model"].update(w2v_args=None, w2v_path=None)
    state["task_state"] = {}
    torch.save(state, tmp_path / "orphan.pt")
    with pytest.raises(W2v2Error, match="w2v_args` and `model.w2v_path` are both empty"):
        w2v2.load_model(tmp_path / "orphan.pt")
