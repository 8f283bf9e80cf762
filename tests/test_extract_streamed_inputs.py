"""Inputs written as streams: WAVs whose writer never went back to fill in the header's sizes (a
pipe, a streaming writer). Each is read as far as it goes, by what the file holds, with a note
where a size had to be assumed; a WAV that really is cut short is still an error."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cmarr.extract.corpora.record import MediaSpan
from cmarr.extract.media.audio import audio_seconds, load_audio
from cmarr.extract.media.span import MediaError, media_length
from cmarr.shared.store import FeatureStore, Status

from tests.test_extract_cli import extract
from tests.test_extract_inputs import handbook_case

# ----------------------------------------------------------------------------- WAV header sizes


def with_sizes(path: Path, riff: int, data: int) -> Path:
    """`path` rewritten with its RIFF and data chunk size fields set to `riff` and `data`."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data", 12) + 4  # the header comes before any sample
    raw[4:8], raw[at : at + 4] = struct.pack("<I", riff), struct.pack("<I", data)
    path.write_bytes(bytes(raw))
    return path


FORMATS = [(16000, 1, "PCM_16"), (44100, 2, "FLOAT"), (8000, 1, "PCM_24"), (22050, 2, "PCM_U8")]


@pytest.mark.parametrize("size", [0xFFFFFFFF, 0], ids=["ffffffff", "zero"])
@pytest.mark.parametrize("rate, channels, subtype", FORMATS)
def test_a_wav_of_unknown_size_is_read_to_the_end_of_the_file(tmp_path, size, rate, channels, subtype):
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (rate * 3 // 2, channels)).astype(np.float32)
    sf.write(tmp_path / "ref.wav", audio, rate, subtype=subtype)
    (tmp_path / "pipe.wav").write_bytes((tmp_path / "ref.wav").read_bytes())
    pipe = with_sizes(tmp_path / "pipe.wav", size, size)
    ref, got = load_audio(MediaSpan(tmp_path / "ref.wav"), 16000), load_audio(MediaSpan(pipe), 16000)
    np.testing.assert_array_equal(got.value, ref.value)
    assert len(got.value) == 24000 and ref.note == ""
    held = (tmp_path / "ref.wav").stat().st_size - (pipe.read_bytes().index(b"data", 12) + 8)
    shown = "0xFFFFFFFF" if size else "0"
    assert got.note == (
        f"{pipe}: the WAV header's data size is {shown} (unknown: written to a pipe or by a streaming "
        f"writer); read the {held} bytes to the end of the file"
    )
    assert media_length(pipe, "audio") == audio_seconds(MediaSpan(pipe)) == 1.5  # --dry-run and batching
    span, ref_span = (load_audio(MediaSpan(f, 0.5, 2.0), 16000) for f in (pipe, tmp_path / "ref.wav"))
    np.testing.assert_array_equal(span.value, ref_span.value)
    assert span.note.startswith(got.note + "; ") and "runs 0.5 s past its end" in span.note


def test_a_wav_shorter_than_its_header_says_is_still_truncated(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes((tmp_path / "a.wav").read_bytes()[:-1000])  # 32000 bytes declared, 31000 left
    with pytest.raises(
        MediaError, match=r"cut\.wav: truncated WAV \(header declares 32000 bytes of audio, file holds 31000\)"
    ):
        load_audio(MediaSpan(cut), 16000)
    almost = with_sizes(tmp_path / "a.wav", 0xFFFFFFFE, 0xFFFFFFFE)  # a size, not the pipe's sentinel
    with pytest.raises(MediaError, match=r"header declares 4294967294 bytes of audio, file holds 32000"):
        load_audio(MediaSpan(almost), 16000)


def test_a_wav_of_size_zero_with_nothing_after_it_is_empty_without_a_note(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    empty = load_audio(MediaSpan(tmp_path / "a.wav"), 16000)
    assert len(empty.value) == 0 and empty.note == ""


def test_handbook_pipe_wavs_are_extracted_like_the_reference(tmp_path):
    """Field case wav-pipe-header: both pipe WAVs are ok with ref.wav's 74 frames, each with its note."""
    folder = handbook_case("wav-pipe-header")
    result = extract(folder / "m.csv", tmp_path / "out", "--modalities", "audio")
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "out" / "c.zarr")
    audio = store.modality("audio")
    ids = list(store.utterances["id"])
    assert dict(zip(ids, audio.status.tolist())) == dict.fromkeys(ids, Status.OK)
    assert dict(zip(ids, audio.lengths.tolist())) == dict.fromkeys(ids, 74)
    np.testing.assert_array_equal(audio.get(ids.index("pipe_zero")), audio.get(ids.index("ref")))
    notes = store.root["audio"].attrs["notes"]
    assert sorted(notes) == ["pipe_ffff", "pipe_zero"]
    assert "data size is 0xFFFFFFFF" in notes["pipe_ffff"] and "read the 48000 bytes" in notes["pipe_zero"]
    assert "note audio pipe_zero: " in result.output
