import numpy as np
import pytest
import soundfile

from w2v2.data.audio import read_audio
from w2v2.errors import W2v2Error


def _samples(frames, channels=1, seed=0):
    """16-bit-exact random samples, so a FLAC round trip gives them back unchanged."""
    values = np.random.default_rng(seed).integers(-20000, 20000, size=(frames, channels))
    return (values / 32768).astype(np.float32)


def test_mono_flac_round_trips_exactly(tmp_path):
    samples = _samples(1234)
    soundfile.write(tmp_path / "a.flac", samples, 16000)
    audio = read_audio(tmp_path / "a.flac")
    assert audio.dtype == np.float32 and audio.shape == (1234,)
    np.testing.assert_array_equal(audio, samples[:, 0])


def test_stereo_is_averaged_to_mono(tmp_path):
    samples = _samples(500, channels=2)
    soundfile.write(tmp_path / "s.flac", samples, 16000)
    audio = read_audio(tmp_path / "s.flac")
    assert audio.shape == (500,)
    np.testing.assert_allclose(audio, samples.mean(axis=1), atol=1e-7)


def test_other_sample_rate_is_an_error_naming_file_and_rates(tmp_path):
    soundfile.write(tmp_path / "r.flac", _samples(800), 8000)
    with pytest.raises(W2v2Error, match=r"r\.flac must be 16000 Hz, but is 8000 Hz"):
        read_audio(tmp_path / "r.flac")
    assert read_audio(tmp_path / "r.flac", expected_rate=8000).shape == (800,)


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(W2v2Error, match=r"nothere\.flac does not exist"):
        read_audio(tmp_path / "nothere.flac")


def test_corrupt_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "bad.flac").write_bytes(b"this is not audio" * 20)
    with pytest.raises(W2v2Error, match=r"bad\.flac cannot be decoded"):
        read_audio(tmp_path / "bad.flac")


def test_empty_file_is_an_error_naming_it(tmp_path):
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(W2v2Error, match=r"empty\.wav is empty"):
        read_audio(tmp_path / "empty.wav")
