"""Predictor.predict's arguments as other libraries hand them (field case predict-api-arrays): every
layout and type of waveform becomes the samples soundfile would read from the same file, and every
mistaken argument is a ConfigError naming what was given and the fix, never a library's exception."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from cmarr.predict.inputs import check_prediction, checked_sample_rate, waveform_samples
from cmarr.predict.predictor import check_arguments
from cmarr.shared.errors import ConfigError

RATE = 16000
MONO = np.sin(np.linspace(0, 300, 2400)).astype(np.float32) * 0.5  # (N,)
STEREO = np.stack([MONO, -MONO], axis=1)  # (N, 2): soundfile's layout


@pytest.mark.parametrize(
    "given, expected",
    [
        (MONO, MONO[:, None]),
        (MONO[:, None], MONO[:, None]),  # (N, 1)
        (MONO[None], MONO[:, None]),  # (1, N): a mono torchaudio waveform
        (STEREO, STEREO),
        (STEREO.T.copy(), STEREO),  # (2, N): torchaudio / torchcodec
        (torch.from_numpy(STEREO.T.copy()), STEREO),
        (torch.from_numpy(MONO[None]), MONO[:, None]),
        (torch.from_numpy(STEREO.T.astype(np.float64)).requires_grad_(), STEREO),  # float64, needing grad
        (STEREO.astype(np.float64), STEREO),
        (MONO.tolist(), MONO[:, None]),
        (STEREO.T.tolist(), STEREO),
    ],
    ids=["N", "N,1", "1,N", "N,2", "2,N", "tensor 2,N", "tensor 1,N", "tensor float64", "float64", "list", "list 2,N"],
)
def test_every_layout_gives_the_samples_first_waveform(given, expected):
    samples, rate = waveform_samples(given, RATE)
    assert rate == RATE and samples.dtype == np.float32 and samples.flags.c_contiguous
    np.testing.assert_array_equal(samples, expected)


@pytest.mark.parametrize("subtype, dtype", [("PCM_16", np.int16), ("PCM_32", np.int32), ("PCM_U8", np.uint8)])
def test_integer_samples_read_as_the_pcm_file_holding_them(tmp_path, subtype, dtype):
    """int16 / int32 / uint8 samples are the file's: scaled as soundfile reads that file (full scale 1)."""
    path = tmp_path / "a.wav"
    sf.write(path, STEREO, RATE, subtype=subtype)
    from_file, _ = sf.read(path, dtype="float32", always_2d=True)
    raw, _ = sf.read(path, dtype=np.dtype(dtype).name if dtype != np.uint8 else "int16", always_2d=True)
    if dtype == np.uint8:  # soundfile reads no uint8: the file's bytes are the samples
        raw = (raw.astype(np.int32) // 256 + 128).astype(np.uint8)
    samples, _ = waveform_samples(raw.T.copy(), RATE)  # channels first, to take both paths at once
    np.testing.assert_allclose(samples, from_file, atol=1e-7)


@pytest.mark.parametrize(
    "given, words",
    [
        (np.zeros((3, 5), np.float32), "float32 waveform (3, 5) is too short to tell samples from channels"),
        (np.zeros((16, 24000), np.float32), "(16, 24000) has no dimension of 8 channels or fewer (a batch"),
        (np.zeros((1, 2, 24000), np.float32), "(1, 2, 24000) has 3 dimensions (a batch?)"),
        (np.zeros(()), "has 0 dimensions"),
        (np.zeros(100, np.int64), "the full scale of int64 samples is unknown"),
        (np.zeros(100, bool), "an array of bool holds no samples"),
        (np.array(["a", "b"]), "an array of <U1 holds no samples"),
        (np.zeros(100, np.complex64), "an array of complex64 holds no samples"),
        ([[0.1, 0.2], [0.3]], "a list of rows of unequal length is no waveform"),
        (torch.zeros(2, 3, 4000), "(2, 3, 4000) has 3 dimensions"),
    ],
    ids=["both-small", "batch", "3-d", "scalar", "int64", "bool", "strings", "complex", "ragged", "tensor-3d"],
)
def test_waveforms_that_can_only_be_mistakes_are_refused_with_the_layouts(given, words):
    with pytest.raises(ConfigError) as err:
        waveform_samples(given, RATE)
    message = str(err.value)
    assert message.startswith("audio: ") and words in message, message
    if "dimension" in words or "too short" in words:
        assert "(N, C) samples first" in message and "(C, N) channels first" in message


@pytest.mark.parametrize("rate", [16000, np.int64(16000), np.int32(8000), 44100.0, np.float64(22050)])
def test_whole_sample_rates_are_taken(rate):
    assert checked_sample_rate(rate) == int(rate) and type(checked_sample_rate(rate)) is int


@pytest.mark.parametrize(
    "rate, words",
    [
        (None, "needs its sample_rate"),
        (16000.5, "a whole number of Hz"),
        (-16000, "expected a positive rate"),
        (0, "expected a positive rate"),
        (10**9, "expected a positive rate"),
        (float("nan"), "a whole number of Hz"),
        ("16000", "expected a whole number of Hz"),
        (True, "expected a whole number of Hz"),
    ],
)
def test_sample_rates_that_are_no_positive_whole_number_are_refused(rate, words):
    with pytest.raises(ConfigError, match=words) as err:
        waveform_samples(MONO, rate)
    assert "sample_rate" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"text": b"hello"}, "text: bytes given: decode them to a str first"),
        ({"text": 123}, "text: expected the transcript as a str, got int 123"),
        ({"text": ["a", "b"]}, "got list"),
        ({"audio": b"RIFF...."}, "audio: bytes given: pass the file's path, or decode it first"),
        ({"audio": {"array": MONO}}, "audio: expected a file path or a waveform array"),
        ({"audio": 5}, "got int"),
        ({"video": np.zeros((2, 8, 8, 3))}, "video: expected a file path, got ndarray"),
        ({"audio": "x.wav", "sample_rate": 16000}, "a file records its own rate (leave sample_rate out)"),
        ({"text": "hi", "sample_rate": 16000}, "sample_rate is for a waveform array: no audio given"),
        ({"text": "hi", "uid": 5}, "id 5: expected a non-empty str"),
        ({"text": "hi", "uid": ""}, "id '': expected a non-empty str"),
        ({}, "give at least one of audio, video, text"),
    ],
)
def test_mistaken_arguments_are_refused_before_any_work(kwargs, words):
    args = {"audio": None, "video": None, "text": None, "sample_rate": None, "uid": "input", **kwargs}
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_prediction(**args)


@pytest.mark.parametrize("start, end", [("0", "1"), (0, float("inf")), (True, 2), (np.nan, 1.0)])
def test_a_span_of_no_numbers_is_refused(start, end):
    with pytest.raises(ConfigError, match="expected a finite number of seconds"):
        check_arguments(None, None, start, end, None)


def test_numpy_seconds_and_paths_are_taken(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    check_arguments(tmp_path / "a.wav", None, np.float32(0.5), np.float64(1.0), None)
    check_prediction(tmp_path / "a.wav", None, "hi", None, "input")
