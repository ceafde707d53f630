"""`w2v2 features` writes one (T, C) array per file, from the last or a chosen layer."""

from __future__ import annotations

import numpy as np
import soundfile
import torch

import w2v2
from w2v2.cli.main import main


def test_features_command(fairseq_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    paths = []
    for name, seconds in (("a", 1.0), ("b", 0.5)):
        path = tmp_path / f"{name}.wav"
        soundfile.write(path, rng.standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1, 16000)
        paths.append(str(path))
    ckpt = str(fairseq_dir / "pretrain_init.pt")
    assert main(["features", "--checkpoint", ckpt, *paths, "--output-dir", str(tmp_path / "out")]) == 0
    a = np.load(tmp_path / "out" / "a.npy")
    assert a.shape == (49, 64) and np.load(tmp_path / "out" / "b.npy").shape == (24, 64)
    model = w2v2.load_model(ckpt)
    waveform, _ = soundfile.read(paths[0], dtype="float32")
    with torch.no_grad():
        expected = model(torch.from_numpy(waveform)[None], mask=False, features_only=True)["x"][0].numpy()
    np.testing.assert_allclose(a, expected, atol=1e-6)
    assert main(["features", "--checkpoint", ckpt, paths[0], "--output-dir", str(tmp_path / "l0"), "--layer", "0"]) == 0
    assert np.load(tmp_path / "l0" / "a.npy").shape == (49, 64)
    assert "wrote 1 feature files" in capsys.readouterr().out


def test_features_errors(fairseq_dir, tmp_path, capsys):
    path = tmp_path / "a.wav"
    soundfile.write(path, np.zeros(8000, np.float32), 8000)
    ckpt = str(fairseq_dir / "pretrain_init.pt")
    assert main(["features", "--checkpoint", ckpt, str(path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "must be 16000 Hz" in capsys.readouterr().err
    soundfile.write(path, np.zeros(8000, np.float32), 16000)
    assert main(["features", "--checkpoint", ckpt, str(path), "--output-dir", str(tmp_path / "o"), "--layer", "7"]) == 2
    assert "`--layer` must be between 0 and 1" in capsys.readouterr().err
