"""Inputs written as streams: WAVs whose writer never went back to fill in the header's sizes (a
pipe, a streaming writer), video without timestamps (a camera's raw .h264) or with irregular ones
(a variable frame rate). Each is read as far as it goes, by what the file holds, with a note where
a size or a rate had to be assumed; a WAV that really is cut short is still an error."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import soundfile as sf
from cmarr.extract.corpora.record import MediaSpan
from cmarr.extract.media.audio import audio_seconds, load_audio
from cmarr.extract.media.span import MediaError, media_length
from cmarr.extract.media.video import FrameClock, read_frames
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


# ----------------------------------------------------------------------------- video timestamps


def shade(k: int) -> int:
    return 16 + 11 * k  # frame k's grey level (k < 20): the frame read back says which one it was


def encode_frames(path: Path, codec: str, n: int, fps: int = 10, times: list[float] | None = None, **fmt) -> Path:
    """`n` flat grey 64x48 frames (frame k at shade(k)); with `times`, each frame's pts in ms (VFR)."""
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV has no {codec} encoder here")
    with av.open(str(path), "w", **fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if times is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), shade(k), np.uint8), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[k] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def which(frames: np.ndarray) -> list[int]:
    """The index of each frame read back, from its grey level."""
    return [round((float(f.mean()) - 16) / 11) for f in frames]


@pytest.mark.parametrize("codec, fmt", [("libx264", "h264"), ("mpeg4", "m4v")])
def test_a_raw_stream_is_sampled_by_frame_index_and_its_rate(tmp_path, codec, fmt):
    """20 frames at 10 fps with no timestamps (a camera's elementary stream), read at 5 fps."""
    raw = encode_frames(tmp_path / f"cam.{fmt}", codec, 20, format=fmt)
    with av.open(str(raw)) as c:
        assert c.duration is None and (codec != "libx264" or next(c.decode(video=0)).pts is None)
    whole = read_frames(MediaSpan(raw), fps=5)
    assert which(whole.value) == list(range(0, 20, 2)) and whole.note == ""
    assert which(read_frames(MediaSpan(raw, 1.0, 1.5), fps=5).value) == [10, 12, 14]  # decoded from the start
    past = read_frames(MediaSpan(raw, 1.5, 3.0), fps=5)  # the length is known once the stream has ended
    assert which(past.value) == [15, 17, 19]
    assert past.note == f"{raw} is 2.0 s, span 1.5-3.0 s runs 1.0 s past its end (features cover 1.5-2.0 s)"
    with pytest.raises(MediaError, match=r"is 2.0 s, span 2.5-3.0 s is outside it"):
        read_frames(MediaSpan(raw, 2.5, 3.0), fps=5)


def test_a_raw_stream_without_a_rate_is_timed_at_ffmpegs_default_with_a_note(tmp_path):
    raw = encode_frames(tmp_path / "cam.mjpeg", "mjpeg", 10, format="mjpeg")  # MJPEG holds no timing
    got = read_frames(MediaSpan(raw), fps=5)
    assert which(got.value) == [0, 5]  # at 25 fps: frames at 0.0 and 0.2 s
    assert got.note == f"{raw}: the stream does not give its frame rate; frames without timestamps timed at 25 fps"


VFR = [0.00, 0.04, 0.08, 0.50, 0.90, 0.95, 1.00, 1.60, 1.65, 1.70, 1.75, 1.80]


def test_a_variable_frame_rate_is_sampled_by_the_frames_timestamps(tmp_path):
    """The first frame at or after each 0.1 s instant, each at most once: a count-based sampler
    (12 frames over 1.84 s) would pick others."""
    clip = encode_frames(tmp_path / "vfr.mp4", "mpeg4", len(VFR), fps=25, times=VFR)
    whole = read_frames(MediaSpan(clip), fps=10)
    assert which(whole.value) == [0, 3, 4, 6, 7, 9, 11] and whole.note == ""
    assert which(read_frames(MediaSpan(clip, 1.0, 1.7), fps=10).value) == [6, 7, 9]  # after a seek


def _frame(pts=None, dts=None):
    return SimpleNamespace(pts=pts, dts=dts, time_base=Fraction(1, 1000))


def test_frames_without_a_timestamp_follow_the_previous_one_at_the_streams_rate():
    frames = [_frame(0), _frame(None, 40), _frame(), _frame(), _frame(500), _frame()]
    clock = FrameClock(rate=10.0)
    assert [round(t, 6) for t, _ in clock.times(frames)] == [0.0, 0.04, 0.14, 0.24, 0.5, 0.6]
    assert clock.untimed == 3 and clock.note == ""  # the stream's own rate: nothing to say
    first_untimed = FrameClock(rate=25.0, guess="25 fps assumed")
    assert [t for t, _ in first_untimed.times([_frame(), _frame(), _frame(1000)])] == [0.0, 0.04, 1.0]
    assert first_untimed.note == "25 fps assumed"
    after_seek = FrameClock(rate=10.0).times([_frame(), _frame(2000), _frame()], sought=True)
    assert [round(t, 6) for t, _ in after_seek] == [2.0, 2.1]  # before the first timestamp: no place known
    raw = FrameClock(rate=10.0, raw=True).times([_frame(0), _frame(999), _frame(5)])
    assert [round(t, 6) for t, _ in raw] == [0.0, 0.1, 0.2]  # a raw demuxer's made-up pts are not used
