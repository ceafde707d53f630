"""`w2v2 transcribe`: text or JSON per file, any sample rate and channel count."""

from __future__ import annotations

import json

import numpy as np
import soundfile

from w2v2.cli.main import main


def test_transcribe_text_and_json(fairseq_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    stereo = tmp_path / "stereo44k.wav"
    soundfile.write(stereo, (0.1 * rng.standard_normal((3 * 44100, 2))).astype(np.float32), 44100)
    mono = tmp_path / "mono8k.ogg"
    soundfile.write(mono, (0.1 * rng.standard_normal(2 * 8000)).astype(np.float32), 8000)
    ckpt = str(fairseq_dir / "ctc_init.pt")
    assert main(["transcribe", "--checkpoint", ckpt, str(stereo), str(mono), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(stereo), str(mono)]
    assert "transcribed 2 files, 5.0 s of audio" in captured.err
    assert main(["transcribe", "--checkpoint", ckpt, str(stereo), str(mono), "--json"]) == 0
    transcripts = json.loads(capsys.readouterr().out)
    assert [t["duration"] for t in transcripts] == [3.0, 2.0]
    assert [t["text"] for t in transcripts] == [line.split("\t")[1] for line in lines]
    for transcript in transcripts:
        assert all(0 <= w["start"] < w["end"] <= transcript["duration"] for w in transcript["words"])


def test_transcribe_errors(fairseq_dir, tmp_path, capsys):
    ckpt = str(fairseq_dir / "ctc_init.pt")
    assert main(["transcribe", "--checkpoint", ckpt, str(tmp_path / "missing.wav")]) == 2
    assert "cannot be opened" in capsys.readouterr().err
    assert main(["transcribe", "--checkpoint", str(fairseq_dir / "pretrain_init.pt"), str(tmp_path / "a.wav")]) == 2
    assert "fine-tuned CTC model" in capsys.readouterr().err
