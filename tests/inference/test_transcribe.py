"""Transcription: resampling, windows stitched on the frame grid, word timings from the alignment."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch

import w2v2
from w2v2.errors import W2v2Error
from w2v2.inference.features import encoder_of, extract_features
from w2v2.inference.transcribe import frame_log_probs, load_audio, transcribe, window_starts, word_timings
from w2v2.train.losses import greedy_decode, letters_to_words


class LocalModel(torch.nn.Module):
    """A CTC-shaped model whose frame t sees only samples [320 t, 320 t + 400): windows change nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_extractor = SimpleNamespace(conv_spec=[(8, 400, 320)])
        self.proj = torch.nn.Conv1d(1, 8, 400, stride=320)
        self.fairseq_cfg = {}  # as loaded models carry: no task config

    def forward(self, source):
        return {"encoder_out": self.proj(source[:, None]).permute(2, 0, 1)}  # (B, V, T) -> (T, B, V)

    def get_normalized_probs(self, net_output, log_probs=True):
        return net_output["encoder_out"].log_softmax(-1)


class EdgeDistanceModel(LocalModel):
    """Says, for every frame, how many frames lie between it and the nearer edge of its window."""

    def forward(self, source):
        frames = super().forward(source)["encoder_out"].size(0)
        distance = torch.minimum(torch.arange(frames), torch.arange(frames).flip(0)).float()
        return {"encoder_out": distance[:, None, None]}  # (T, B, 1)

    def get_normalized_probs(self, net_output, log_probs=True):
        return net_output["encoder_out"]


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """A 60-second 16 kHz wav of modulated noise."""
    rng = np.random.default_rng(0)
    t = np.arange(60 * 16000) / 16000
    path = tmp_path_factory.mktemp("audio") / "long.wav"
    soundfile.write(path, (0.1 * rng.standard_normal(len(t)) * (1 + np.sin(2 * np.pi * 0.7 * t))).astype(np.float32),
                    16000)
    return path


def test_stereo_44k_is_averaged_and_resampled(tmp_path):
    t = np.arange(2 * 44100) / 44100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), 44100)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and len(audio) == 32000
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16000 / len(audio) == pytest.approx(440, abs=1)
    assert np.abs(audio[1000:-1000]).max() == pytest.approx(0.25, abs=0.01)  # mean of the two channels


@pytest.mark.parametrize("num_samples", [400, 15999, 16000, 16001, 28800, 28801, 50000, 80123])
def test_windows_are_stitched_without_lost_or_doubled_frames(num_samples):
    torch.manual_seed(0)
    model = LocalModel()
    waveform = np.random.default_rng(num_samples).standard_normal(num_samples).astype(np.float32)
    with torch.no_grad():
        whole = model.get_normalized_probs(model(torch.from_numpy(waveform)[None]))[:, 0]
    windowed = frame_log_probs(model, waveform, window_seconds=1.0, overlap_seconds=0.2)
    assert windowed.shape == whole.shape
    torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=1e-5)


def test_each_window_gives_up_half_the_overlap_at_its_edges():
    overlap_frames = 10
    waveform = np.zeros(5 * 16000, np.float32)
    distance = frame_log_probs(EdgeDistanceModel(), waveform, window_seconds=1.0, overlap_seconds=0.2)[:, 0]
    inner = distance[overlap_frames : -overlap_frames]  # away from the file's own start and end
    assert inner.min() == overlap_frames // 2 - 1
    assert distance.max() > overlap_frames  # several windows were joined


def test_window_starts_cover_the_file():
    for num_samples in (1, 16000, 16001, 100000):
        starts = window_starts(num_samples, 16000, 3200)
        assert starts[-1] + 16000 >= num_samples and (len(starts) == 1 or starts[-2] + 16000 < num_samples)
        assert all(b - a == 12800 for a, b in zip(starts, starts[1:]))


def test_window_and_overlap_are_checked(ctc_model):
    with pytest.raises(W2v2Error, match="must exceed `--overlap-seconds`"):
        frame_log_probs(ctc_model, np.zeros(16000, np.float32), window_seconds=2.0, overlap_seconds=2.0)
    with pytest.raises(W2v2Error, match="at least 0.04 s"):
        frame_log_probs(ctc_model, np.zeros(16000, np.float32), window_seconds=2.0, overlap_seconds=0.0)


def test_word_timings_follow_the_alignment(ctc_model):
    dictionary = ctc_model.dictionary
    # `<pad>` and `<unk>` are not text: like the blank they separate repeats (T <pad> T is two Ts).
    frames = ["<s>", "G", "G", "<s>", "O", "|", "|", "<s>", "L", "E", "<s>", "E", "</s>", "F", "T", "<pad>", "T",
              "<unk>", "|", "<s>", "N", "O"]
    alignment = torch.tensor([dictionary.index(symbol) for symbol in frames])
    words = word_timings(alignment, dictionary, 0.02)
    assert [w.word for w in words] == ["GO", "LEEFTT", "NO"]
    assert [(round(w.start, 2), round(w.end, 2)) for w in words] == [(0.02, 0.10), (0.16, 0.34), (0.40, 0.44)]
    tokens = greedy_decode(torch.nn.functional.one_hot(alignment, len(dictionary)).float()[:, None],
                           torch.tensor([len(alignment)]))[0]
    assert "<pad>" in dictionary.string(tokens)  # what fairseq's validation counts
    assert " ".join(w.word for w in words) == letters_to_words(dictionary.text(tokens))


def test_sixty_seconds_in_windows(ctc_model, long_file):
    result = transcribe(ctc_model, long_file, window_seconds=20.0, overlap_seconds=2.0)
    waveform = load_audio(long_file)
    whole = frame_log_probs(ctc_model, waveform, window_seconds=100.0)
    windowed = frame_log_probs(ctc_model, waveform, window_seconds=20.0, overlap_seconds=2.0)
    assert whole.shape == windowed.shape == (2999, 32)
    # The Transformer sees the whole window, so outputs move a little; the best symbols barely do.
    assert (whole.argmax(-1) == windowed.argmax(-1)).float().mean() > 0.9
    expected = greedy_decode(windowed[:, None], torch.tensor([len(windowed)]))[0]
    assert result.text == letters_to_words(ctc_model.dictionary.text(expected)) != ""
    assert result.duration == 60.0 and result.text == " ".join(w.word for w in result.words)
    times = [t for w in result.words for t in (w.start, w.end)]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= 60.0
    assert all(w.end > w.start for w in result.words)
    json_words = result.to_json()["words"]
    assert len(json_words) == len(result.words) and set(json_words[0]) == {"word", "start", "end"}


def test_too_short_or_unreadable_audio_is_refused(ctc_model, tmp_path):
    path = tmp_path / "short.wav"
    soundfile.write(path, np.zeros(300, np.float32), 16000)
    with pytest.raises(W2v2Error, match="too short"):
        transcribe(ctc_model, path)
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(W2v2Error, match="cannot be opened"):
        transcribe(ctc_model, tmp_path / "bad.wav")
    with pytest.raises(W2v2Error, match="cannot be opened"):
        transcribe(ctc_model, tmp_path / "missing.wav")



def test_transcripts_hold_no_special_symbols(special_checkpoint, tiny_manifest):
    model = w2v2.load_model(special_checkpoint)
    lines = (tiny_manifest / "dev_clean.tsv").read_text().splitlines()
    for entry in lines[1:]:
        path = f"{lines[0]}/{entry.split()[0]}"
        best = frame_log_probs(model, load_audio(path)).argmax(-1)
        specials = {model.dictionary.pad(), model.dictionary.unk()} & set(best.tolist())
        result = transcribe(model, path)
        assert specials and result.text and not re.search("[<>]", json.dumps(result.to_json()))


def test_a_nan_output_is_an_error_not_empty_text(ctc_checkpoint, tmp_path):
    # Weights that turn NaN after loading (the loader refuses NaN in a file), as an fp16 overflow would.
    model = w2v2.load_model(ctc_checkpoint)
    audio = tmp_path / "fine.wav"
    soundfile.write(audio, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    assert transcribe(model, audio).duration == 1.0
    with torch.no_grad():
        model.w2v_encoder.proj.bias.fill_(float("nan"))
    with pytest.raises(W2v2Error, match=r"output for audio file .*fine.wav is NaN although the input is finite"):
        transcribe(model, audio)
    with torch.no_grad():
        next(encoder_of(model).encoder.parameters()).fill_(float("nan"))
    with pytest.raises(W2v2Error, match=r"output for audio file .*fine.wav is NaN"):
        extract_features(model, load_audio(audio), name=audio)
