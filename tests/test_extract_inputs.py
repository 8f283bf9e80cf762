"""Inputs from the field: non-finite samples, rotated phone video, spans outside their media, inputs
shorter than an encoder's receptive field. Each becomes an item status with a reason naming the
file, never an encoder traceback and never NaN features stored as ok."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from cmarr.extract.batch_loop import _encode_safely, encode_batches
from cmarr.extract.corpora.demo import _face_image
from cmarr.extract.corpora.record import MediaSpan, UtteranceRecord
from cmarr.extract.encoders.base import EncodeResult
from cmarr.extract.encoders.demo_models import tiny_wav2vec2
from cmarr.extract.encoders.denseface_checkpoint import save_denseface
from cmarr.extract.encoders.densenet import DenseNetArch, DenseNetBC
from cmarr.extract.encoders.speech import SpeechEncoder, receptive_field
from cmarr.extract.encoders.video import VideoEncoder
from cmarr.extract.media.audio import load_audio
from cmarr.extract.media.span import MediaError, span_problems
from cmarr.extract.media.video import read_frames
from cmarr.shared.config import AudioEncoderConfig, VideoEncoderConfig
from cmarr.shared.store.schema import Status

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def wav2vec2(tmp_path_factory):
    return tiny_wav2vec2(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def video_encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "d.pt"
    save_denseface(DenseNetBC(DenseNetArch(depth=16)), path, classes=list("abcdefgh"))
    return VideoEncoder(VideoEncoderConfig(checkpoint=str(path), depth=16, min_face_size=40), CPU, "none")


def write_video(path: Path, picture: np.ndarray, seconds: float = 2.0, fps: int = 10, rotation=None) -> Path:
    """A clip of `picture` (H, W, 3) stored as is, with a display matrix when `rotation` is
    (degrees counter-clockwise, hflip) as phones write it."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = picture.shape[1], picture.shape[0], "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1])
        for _ in range(int(seconds * fps)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ----------------------------------------------------------------------------- non-finite samples


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2)])
def test_non_finite_samples_fail_the_item_naming_file_and_count(tmp_path, rate, channels):
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (rate, channels)).astype(np.float32)
    audio[100:107, 0] = np.nan
    audio[5000, -1] = np.inf  # a frame with inf in one channel counts once
    audio[9000:9003, :] = -np.inf
    sf.write(tmp_path / "nan.wav", audio, rate, subtype="FLOAT")
    with pytest.raises(MediaError, match=rf"nan\.wav: 11 of {rate} samples are not finite"):
        load_audio(MediaSpan(tmp_path / "nan.wav"), 16000)  # counted before resampling could spread them
    sf.write(tmp_path / "clean.wav", np.nan_to_num(audio, posinf=0, neginf=0), rate, subtype="FLOAT")
    assert np.isfinite(load_audio(MediaSpan(tmp_path / "clean.wav"), 16000).value).all()


class _Fake:
    """An encoder whose output for the input 'nan' holds NaN, and which raises on 'boom'."""

    modality, budget, reads_files, forward_seconds = "text", 100, False, 0.0

    def loader(self):
        return lambda record: record.text

    def encode(self, inputs):
        if "boom" in inputs:
            raise ValueError("kernel size can't be greater than actual input size")
        return [EncodeResult(np.full((2, 4), np.nan if x == "nan" else 1.0, np.float32), Status.OK) for x in inputs]


def test_a_failing_item_keeps_the_exception_text_even_alone():
    alone = _encode_safely(_Fake(), ["boom"], {})
    assert alone[0].status == Status.FAILED
    assert alone[0].reason == "encoder error: kernel size can't be greater than actual input size"
    batch = _encode_safely(_Fake(), ["ok", "boom", None], {2: "missing input file: x.wav"})
    assert [r.status for r in batch] == [Status.OK, Status.FAILED, Status.FAILED]
    assert "kernel size" in batch[1].reason and batch[2].reason == "missing input file: x.wav"


class _Sink:
    """A ModalityWriter stand-in recording what would be staged."""

    def __init__(self, fail_with: OSError | None = None):
        self.parts, self.fail_with = [], fail_with

    def write_part(self, items, features, status, reasons, writer_id=""):
        if self.fail_with:
            raise self.fail_with
        self.parts.append((list(items), list(status), dict(reasons)))


def _records(*texts):
    return [UtteranceRecord(id=f"u{k}", label="calm", session="A", speaker="p", text=t) for k, t in enumerate(texts)]


def test_non_finite_encoder_output_is_never_stored_as_ok(tmp_path):
    from cmarr.shared.labels import FOUR_CLASS
    from cmarr.shared.store import FeatureStore, ModalitySpec, StoreWriter
    from cmarr.shared.store.synthetic import synthetic_table

    mw = StoreWriter.create(tmp_path / "s.zarr", synthetic_table(2), "t", FOUR_CLASS).modality(
        "text", ModalitySpec("fake", 4, dtype="float32")
    )
    records = _records("fine", "nan")
    encode_batches(_Fake(), records, [(0, np.array([0])), (1, np.array([1]))], np.ones(2, bool), mw, _stream)
    mw.finalize()
    reader = FeatureStore.open(tmp_path / "s.zarr", allow_incomplete=True).modality("text")
    assert reader.status.tolist() == [Status.OK, Status.FAILED]
    assert list(reader.group.attrs["failures"].values()) == ["8 of 8 encoder output values are not finite (NaN/inf)"]


def _stream(dataset):
    return (dataset[j] for j in range(len(dataset)))


def test_a_full_disk_stops_the_run_instead_of_failing_items():
    full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space left"):
        encode_batches(_Fake(), _records("a"), [(0, np.array([0]))], np.ones(1, bool), _Sink(full), _stream)

    class FullDiskLoader(_Fake):
        def loader(self):
            def load(record):
                raise OSError(errno.ENOSPC, "No space left on device")

            return load

    sink = _Sink()
    with pytest.raises(OSError, match="No space left"):
        encode_batches(FullDiskLoader(), _records("a"), [(0, np.array([0]))], np.ones(1, bool), sink, _stream)
    assert sink.parts == []  # nothing marked failed


# ----------------------------------------------------------------------------- rotation metadata


def _picture(h=96, w=128) -> np.ndarray:
    """An asymmetric picture: a gradient, a bright block top-left, a red half on the left."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), np.full_like(x, 60)], -1).astype(np.uint8)
    img[8:30, 8:40] = 255
    img[:, : w // 2, 0] = 230
    return img


@pytest.mark.parametrize("degrees", [0, 90, -90, 180])
@pytest.mark.parametrize("hflip", [False, True])
def test_frames_are_turned_upright_by_the_display_matrix(tmp_path, degrees, hflip):
    upright = _picture()  # PyAV: displayed = hflip(rotate_ccw(stored, degrees)); store the inverse of that
    stored = np.rot90(upright[:, ::-1] if hflip else upright, k=-degrees // 90)
    path = write_video(tmp_path / "phone.mp4", stored, rotation=(degrees, hflip))
    with av.open(str(path)) as c:  # `rotation` alone cannot tell a mirror (hflip at 0 reads as -180)
        assert hflip or next(c.decode(video=0)).rotation % 360 == degrees % 360
    for half in (None, "left"):
        frames = read_frames(MediaSpan(path, 0.0, 1.0, half), fps=4).value
        want = upright if half is None else upright[:, : upright.shape[1] // 2]
        assert frames.shape[1:] == want.shape
        assert np.abs(frames[0].astype(float) - want).mean() < 8  # codec noise only


def test_handbook_phone_clip_gives_the_faces_of_the_upright_one(video_encoder):
    folder = handbook_case("video-rotated")
    phone, upright = (read_frames(MediaSpan(folder / f), 4).value for f in ("phone.mp4", "upright.mp4"))
    assert phone.shape == upright.shape and np.abs(phone.astype(float) - upright).mean() < 3
    a, b = video_encoder.encode([phone, upright])
    assert a.status == b.status == Status.OK and a.features.shape == b.features.shape
    np.testing.assert_allclose(a.features, b.features, atol=0.05)


def handbook_case(name: str) -> Path:
    root = os.environ.get("CMARR_HANDBOOK_DIR")
    if not root:
        pytest.skip("CMARR_HANDBOOK_DIR is not set (.ci/run sets it to ../shared)")
    path = Path(root) / "field-cases" / name
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


# ----------------------------------------------------------------------------- spans outside the media


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """rec.wav and rec.mp4, both 4 s."""
    folder = tmp_path_factory.mktemp("rec")
    sf.write(folder / "rec.wav", np.random.default_rng(0).uniform(-0.3, 0.3, 64000).astype(np.float32), 16000)
    write_video(folder / "rec.mp4", _picture(), seconds=4.0)
    return folder


SPANS = {"inside": (1.0, 2.5), "overlaps_end": (3.0, 7.0), "after_end": (5.0, 6.5), "minutes_typo": (62.0, 65.5)}


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_spans_against_the_length_of_their_file(recording, kind):
    path = recording / ("rec.wav" if kind == "audio" else "rec.mp4")

    def load(start, end):
        span = MediaSpan(path, start, end)
        return load_audio(span, 16000) if kind == "audio" else read_frames(span, 10)

    inside, overlap = load(*SPANS["inside"]), load(*SPANS["overlaps_end"])
    assert inside.note == "" and len(inside.value) == (24000 if kind == "audio" else 16)  # frames at 1.0..2.5
    assert overlap.note == f"{path} is 4.0 s, span 3.0-7.0 s runs 3.0 s past its end (features cover 3.0-4.0 s)"
    assert len(overlap.value) == (16000 if kind == "audio" else 10)  # as far as the file goes
    with pytest.raises(MediaError, match=rf"{path.name} is 4.0 s, span 5.0-6.5 s is outside it"):
        load(*SPANS["after_end"])
    with pytest.raises(MediaError, match=r"span 62.0-65.5 s is outside it"):
        load(*SPANS["minutes_typo"])


def test_dry_run_finds_spans_outside_their_media_from_headers(recording):
    records = [
        UtteranceRecord(
            id=u,
            label="calm",
            session="A",
            speaker="p",
            audio=MediaSpan(recording / "rec.wav", *span),
            video=MediaSpan(recording / "rec.mp4", *span),
        )
        for u, span in SPANS.items()
    ] + [UtteranceRecord(id="gone", label="calm", session="A", speaker="p", audio=MediaSpan(recording / "no.wav"))]
    problems = span_problems(records, ["audio", "video"])
    assert [p.split(":")[0] for p in problems] == ["overlaps_end"] * 2 + ["after_end"] * 2 + ["minutes_typo"] * 2 + [
        "gone"
    ]
    assert "rec.mp4 is 4.0 s, span 5.0-6.5 s is outside it" in problems[3] and "not found" in problems[-1]
    assert span_problems(records, ["text"]) == []


def test_a_span_shorter_than_a_frame_interval_gets_the_frame_shown_at_its_start(recording):
    frames = read_frames(MediaSpan(recording / "rec.mp4", 1.01, 1.05), fps=10).value  # frames at 1.0 and 1.1
    assert len(frames) == 1


# ----------------------------------------------------------------------------- receptive fields


def test_receptive_field_is_computed_from_the_conv_stack(wav2vec2):
    enc = SpeechEncoder(AudioEncoderConfig(model=str(wav2vec2)), CPU, "none")
    assert enc.field == receptive_field(enc.model.config.conv_kernel, enc.model.config.conv_stride)
    conv = enc.model.feature_extractor
    with torch.inference_mode():
        assert conv(torch.zeros(1, enc.field)).shape[-1] == 1  # one frame, exactly
        with pytest.raises(RuntimeError):
            conv(torch.zeros(1, enc.field - 1))


@pytest.mark.parametrize("n", [0, 1, 320, 350, 399])
def test_audio_shorter_than_one_frame_is_missing_input(wav2vec2, n):
    enc = SpeechEncoder(AudioEncoderConfig(model=str(wav2vec2)), CPU, "none")
    wav = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    [short, fine] = enc.encode([wav, np.random.default_rng(1).standard_normal(800).astype(np.float32)])
    assert short.status == Status.MISSING_INPUT and short.reason == "audio shorter than one frame (25.0 ms)"
    assert fine.status == Status.OK


@pytest.mark.parametrize("tail", [1, 320, 350, 399, 400])
def test_a_last_window_shorter_than_one_frame_is_dropped(wav2vec2, tail):
    enc = SpeechEncoder(AudioEncoderConfig(model=str(wav2vec2), max_window_seconds=1.0), CPU, "none")
    wav = np.random.default_rng(0).standard_normal(16000 + tail).astype(np.float32)
    [result] = enc.encode([wav])
    assert result.status == Status.OK and len(result.features) == 49 + (tail >= 400)


def test_frames_smaller_than_the_smallest_face_have_no_face(video_encoder):
    tiny = np.full((3, 36, 48, 3), 128, np.uint8)
    sliver = np.zeros((3, 100, 0, 3), np.uint8)  # the half of a 1-pixel-wide video
    face = np.zeros((2, 240, 260, 3), np.uint8)
    face[:, 10:230, 20:240] = _face_image()
    results = video_encoder.encode([tiny, sliver, face])
    assert [r.status for r in results] == [Status.NO_FACE, Status.NO_FACE, Status.OK]
    assert "frames of 48x36 px are smaller than the smallest face searched for" in results[0].reason
    assert "extract.video.min_face_size = 40" in results[0].reason


def test_handbook_tiny_clip_has_no_face(video_encoder):
    folder = handbook_case("mtcnn-tiny-frames")
    [result] = video_encoder.encode([read_frames(MediaSpan(folder / "tiny48x36.mp4"), 4).value])
    assert result.status == Status.NO_FACE
