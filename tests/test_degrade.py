"""Degraded extraction's spec and degraders (extract/degrade/): refusals naming the key, the SNR's
closed form, the reverberation's decay, the video and text kinds' properties, and seeds that depend
on the utterance alone."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cmarr.extract.corpora.record import MediaSpan, UtteranceRecord
from cmarr.extract.degrade import (
    DegradedLoader,
    check_degradation,
    degradation_key,
    degrade_records,
    media_degrader,
    parse_degradation,
    recorded_degradation,
)
from cmarr.extract.degrade.audio import reverb_impulse_response, reverberate
from cmarr.extract.degrade.text import degrade_text, vocabulary
from cmarr.extract.degrade.video import blur, darken, occlude
from cmarr.extract.media.span import Decoded
from cmarr.shared.config import DegradeConfig, ExtractConfig, load_config
from cmarr.shared.errors import ConfigError
from cmarr.shared.store.schema import ModalitySpec

RATE = 16000


def _extract_cfg(spec: str, seed: int = 0) -> ExtractConfig:
    return ExtractConfig(degrade=DegradeConfig(spec=spec, seed=seed))


def _speech(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: harmonics under a syllable-rate envelope, plus a little noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.1 * voiced + 0.001 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def _snr_db(clean: np.ndarray, degraded: np.ndarray) -> float:
    noise = degraded.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("spec", "named", "why"),
    [
        ("audio:snrr=3", "audio:snrr", "unknown kind"),
        ("speech:snr=0", "speech:snr", "unknown modality"),
        ("audio:snr=100", "audio:snr=100", "out of range"),
        ("audio:snr=nan", "audio:snr=nan", "out of range"),
        ("audio:reverb=20", "audio:reverb=20", "out of range"),
        ("video:blur=-1", "video:blur=-1", "out of range"),
        ("video:occlude=1.5", "video:occlude=1.5", "out of range"),
        ("video:dark=2", "video:dark=2", "out of range"),
        ("text:word-drop=1.2", "text:word-drop=1.2", "out of range"),
        ("text:word-swap=-0.1", "text:word-swap=-0.1", "out of range"),
        ("video:blur=wide", "video:blur=wide", "not a number"),
        ("audio:snr", "audio:snr", "not modality:kind=value"),
        ("audio:snr=1,video:blur=2,audio:snr=2", "audio:snr", "given twice"),
        ("audio:noise-dir=.", "audio:noise-dir", "needs audio:snr"),
    ],
)
def test_a_bad_item_is_refused_naming_its_key(spec, named, why):
    with pytest.raises(ConfigError) as err:
        parse_degradation(DegradeConfig(spec=spec))
    message = str(err.value)
    assert "extract.degrade.spec" in message and named in message and why in message


def test_an_empty_or_missing_noise_folder_is_refused_naming_the_key(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no recordings here")
    for folder, why in ((tmp_path / "empty", "holds no .wav or .flac"), (tmp_path / "gone", "not a folder")):
        with pytest.raises(ConfigError, match=why) as err:
            parse_degradation(DegradeConfig(spec=f"audio:snr=5,audio:noise-dir={folder}"))
        assert "audio:noise-dir" in str(err.value)


def test_an_unreadable_noise_recording_is_refused_before_any_item(tmp_path):
    sf.write(tmp_path / "a.wav", np.ones(800, np.float32) * 0.1, 8000)
    (tmp_path / "b.flac").write_bytes(b"not audio at all")
    cfg = DegradeConfig(spec=f"audio:snr=5,audio:noise-dir={tmp_path}")
    assert parse_degradation(cfg).audio.noise_files == (tmp_path / "a.wav", tmp_path / "b.flac")
    with pytest.raises(ConfigError, match="b.flac"):
        check_degradation(cfg)


def test_the_spec_reads_in_one_order_and_comes_from_the_config():
    spec = parse_degradation(DegradeConfig(spec=" video:blur=4 , text:word-drop=0.30,audio:snr=0,", seed=3))
    assert spec.canonical() == "audio:snr=0,video:blur=4,text:word-drop=0.3"
    assert spec.canonical("video") == "video:blur=4" and spec.seed == 3 and not spec.clean
    assert parse_degradation(DegradeConfig()).clean and degradation_key(DegradeConfig(seed=5)) == ""
    assert degradation_key(DegradeConfig(spec="video:blur=4,audio:snr=0")) == "audio:snr=0,video:blur=4 (seed 0)"
    cfg = load_config(None, {"extract.degrade.spec": "audio:reverb=0.5", "extract.degrade.seed": 2})
    assert recorded_degradation("audio", cfg.extract.degrade) == {"spec": "audio:reverb=0.5", "seed": 2}
    assert recorded_degradation("video", cfg.extract.degrade) == {}
    with pytest.raises(ConfigError, match="extract.degrade.seed"):
        load_config(None, {"extract.degrade.seed": -1})


def test_a_degraded_spec_is_another_encoder_and_a_clean_one_reads_as_before():
    clean = ModalitySpec("m", 4)
    assert "degradation" not in clean.to_attrs()
    degraded = ModalitySpec("m", 4, degradation={"spec": "audio:snr=0", "seed": 0})
    assert not degraded.same_encoder(clean)
    assert ModalitySpec.from_attrs(degraded.to_attrs()) == degraded


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize("snr", [-10.0, 0.0, 7.5, 30.0])
def test_white_noise_is_mixed_at_the_requested_snr(snr):
    clean = _speech()
    degrade = media_degrader("audio", _extract_cfg(f"audio:snr={snr}"))
    assert abs(_snr_db(clean, degrade(clean, "utt1")) - snr) < 0.1


def test_noise_recordings_are_resampled_and_mixed_at_the_requested_snr(tmp_path):
    """Noise recorded at 8 kHz holds nothing above 4 kHz: after resampling to 16 kHz the added noise
    has (almost) no energy there, which white noise would have half of."""
    rng = np.random.default_rng(1)
    for k, seconds in enumerate((0.5, 3.0)):  # one shorter than the utterance: it is repeated
        sf.write(tmp_path / f"n{k}.wav", rng.standard_normal(int(seconds * 8000)).astype(np.float32) * 0.2, 8000)
    clean = _speech()
    degrade = media_degrader("audio", _extract_cfg(f"audio:snr=5,audio:noise-dir={tmp_path}"))
    for utt in ("a", "b", "c", "d"):
        degraded = degrade(clean, utt)
        assert abs(_snr_db(clean, degraded) - 5) < 0.1
        spectrum = np.abs(np.fft.rfft(degraded.astype(np.float64) - clean)) ** 2
        assert spectrum[len(spectrum) // 2 + 200 :].sum() < 0.01 * spectrum.sum()


def _t30(response: np.ndarray) -> float:
    """RT60 from Schroeder's backward-integrated energy decay, fitted between -5 and -35 dB (T30)."""
    edc = np.cumsum(response[::-1] ** 2)[::-1]
    db = 10 * np.log10(edc / edc[0])
    fit = (db <= -5) & (db >= -35)
    slope = np.polyfit(np.flatnonzero(fit) / RATE, db[fit], 1)[0]
    return -60 / slope


@pytest.mark.parametrize("rt60", [0.3, 0.8, 1.5])
def test_the_reverberation_decays_by_60_db_in_rt60(rt60):
    response = reverb_impulse_response(rt60, RATE, np.random.default_rng(0))
    assert abs(_t30(response) - rt60) < 0.05 * rt60
    assert np.isclose(np.sum(response**2), 1.0)


def test_reverberation_convolves_with_the_response_and_keeps_the_level():
    degrade = media_degrader("audio", _extract_cfg("audio:reverb=0.4"))
    impulse = np.zeros(RATE, np.float32)
    impulse[0] = 1.0
    wet = degrade(impulse, "utt1")
    from cmarr.extract.degrade.spec import utterance_rng

    response = reverb_impulse_response(0.4, RATE, utterance_rng(0, "utt1", "audio", "reverb"))
    assert np.allclose(wet[: len(response)] / wet[0], response / response[0], atol=1e-4)
    speech = _speech()
    assert np.isclose(np.sqrt(np.mean(reverberate(speech, response) ** 2)), np.sqrt(np.mean(speech**2)), rtol=1e-4)


def test_silence_and_empty_audio_pass_unchanged():
    degrade = media_degrader("audio", _extract_cfg("audio:reverb=0.5,audio:snr=0"))
    assert not degrade(np.zeros(400, np.float32), "u").any()
    assert len(degrade(np.zeros(0, np.float32), "u")) == 0


# --------------------------------------------------------------------------- video


def _edge_frames() -> np.ndarray:
    frames = np.zeros((2, 63, 255, 3), np.uint8)  # odd sizes: the reduced frame scales back to the same size
    frames[:, :, 128:] = 255
    return frames


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0, 8.0, 16.0])
def test_blur_spreads_an_edge_by_sigma(sigma):
    """A step edge blurred by a Gaussian is its CDF: the profile's derivative has standard deviation sigma
    (and its mean stays on the edge), across and along the rows, at full size and through the reduced
    frames of sigma 4 and up."""
    for frames, profile in (
        (_edge_frames(), lambda out: out[0, 32, :, 0]),
        (np.ascontiguousarray(_edge_frames().transpose(0, 2, 1, 3)), lambda out: out[1, :, 32, 2]),
    ):
        out = blur(frames, sigma)
        assert out.shape == frames.shape and out.dtype == np.uint8
        values = profile(out).astype(np.float64)
        density = np.diff(values) / (values[-1] - values[0])
        x = np.arange(len(density))
        mean = (density * x).sum()
        assert abs(np.sqrt((density * (x - mean) ** 2).sum()) - sigma) < 0.03 * sigma and abs(mean - 127) < 0.1


def test_occlusion_blacks_out_the_fraction_at_one_place_per_utterance():
    frames = np.random.default_rng(0).integers(1, 256, (5, 48, 64, 3), dtype=np.uint8)
    degrade = media_degrader("video", _extract_cfg("video:occlude=0.25"))
    masks = []
    for utt in ("a", "b", "c", "d"):
        black = (degrade(frames, utt) == 0).all(axis=-1)  # (N, H, W)
        assert (black == black[0]).all() and black[0].sum() == 0.25 * 48 * 64
        masks.append(black[0])
    assert any((m != masks[0]).any() for m in masks[1:])  # the position is drawn per utterance
    assert not occlude(frames, 1.0, np.random.default_rng(0)).any()


def test_darkening_scales_the_pixel_values():
    frames = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    for factor in (0.0, 0.3, 1.0):
        out = darken(frames, factor)
        assert out.dtype == np.uint8 and np.abs(out - frames * factor).max() <= 0.5
    degrade = media_degrader("video", _extract_cfg("video:dark=0.5,video:blur=1,video:occlude=0.1"))
    assert degrade(frames, "u").mean() < 0.55 * frames.mean()


# --------------------------------------------------------------------------- text


def _long_text(n: int = 20000) -> str:
    words = ["the", "cat", "sat", "on", "a", "warm", "mat", "and", "purred", "softly", "today"]
    return " ".join(np.random.default_rng(0).choice(words, n))


def _within(rate: float, p: float, n: int) -> bool:
    return abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_word_drop_drops_the_asked_share_of_words():
    text = _long_text()
    spec = parse_degradation(DegradeConfig(spec="text:word-drop=0.3")).text
    kept = degrade_text(text, spec, 0, "u", vocabulary([text])).split()
    assert _within(1 - len(kept) / 20000, 0.3, 20000)
    assert degrade_text("gone", parse_degradation(DegradeConfig(spec="text:word-drop=1")).text, 0, "u", {}) == ""


def test_word_swap_substitutes_corpus_words_or_one_letter_edits():
    text = _long_text()
    vocab = vocabulary([text, "a bat sit in the hat"])
    spec = parse_degradation(DegradeConfig(spec="text:word-swap=0.2")).text
    before, after = text.split(), degrade_text(text, spec, 0, "u", vocab).split()
    assert len(after) == len(before)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert _within(len(changed) / len(before), 0.2, len(before))
    known = {w for words in vocab.values() for w in words}
    from_vocab = [b for a, b in changed if b in known and abs(len(a) - len(b)) <= 1]
    edits = [(a, b) for a, b in changed if b not in known]
    assert len(from_vocab) + len(edits) == len(changed) and len(from_vocab) > 0.4 * len(changed)
    assert all(_one_edit(a, b) for a, b in edits) and edits


def _one_edit(a: str, b: str) -> bool:
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long = sorted((a, b), key=len)
    return len(long) == len(short) + 1 and any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def test_records_keep_their_punctuation_and_failed_transcripts():
    records = [
        UtteranceRecord("u1", "ang", "s1", "sp", text="Well, I told you so!"),
        UtteranceRecord("u2", "ang", "s1", "sp", text=None),
        UtteranceRecord("u3", "ang", "s1", "sp", text="x", text_error="bad.txt: not UTF-8"),
    ]
    out = degrade_records(records, DegradeConfig(spec="text:word-swap=1", seed=1))
    assert out[1:] == records[1:] and out[0].text != records[0].text
    assert out[0].text.split()[0].endswith(",") and out[0].text.endswith("!")
    assert degrade_records(records, DegradeConfig(spec="audio:snr=0")) is records


# --------------------------------------------------------------------------- seeds


def _audio_records(n: int) -> list[UtteranceRecord]:
    return [UtteranceRecord(f"utt{k}", "ang", "s1", "sp", audio=MediaSpan(Path(f"{k}.wav"))) for k in range(n)]


def test_seeds_depend_on_the_utterance_alone():
    """The same utterance gets the same degradation in any decoding order, in another process
    (the loader is pickled to decoding workers), and another seed or utterance gets another."""
    waves = {f"utt{k}": _speech(1.0, seed=k) for k in range(4)}

    def load(record):
        return Decoded(waves[record.id], "a note")

    degrade = media_degrader("audio", _extract_cfg("audio:reverb=0.3,audio:snr=5", seed=7))
    loader = DegradedLoader(load, degrade)
    records = _audio_records(4)
    forward = {r.id: loader(r) for r in records}
    shipped = DegradedLoader(load, pickle.loads(pickle.dumps(degrade)))
    backward = {r.id: shipped(r) for r in reversed(records)}
    assert all(np.array_equal(forward[u].value, backward[u].value) and forward[u].note == "a note" for u in forward)
    other_seed = DegradedLoader(load, media_degrader("audio", _extract_cfg("audio:reverb=0.3,audio:snr=5", seed=8)))
    assert not np.array_equal(other_seed(records[0]).value, forward["utt0"].value)
    white, clean = media_degrader("audio", _extract_cfg("audio:snr=0")), _speech()
    noise = [white(clean, u) - clean for u in ("utt0", "utt1")]
    assert abs(np.corrcoef(noise[0], noise[1])[0, 1]) < 0.1  # another utterance, other noise


def test_another_level_of_one_kind_draws_the_same_noise():
    clean = _speech()
    noise = [media_degrader("audio", _extract_cfg(f"audio:snr={snr}"))(clean, "u") - clean for snr in (0, 20)]
    assert np.allclose(noise[0] / 10, noise[1], atol=1e-5)  # 20 dB apart: a tenth of the amplitude


def test_clean_modalities_get_no_degrader():
    cfg = _extract_cfg("text:word-drop=0.5")
    assert media_degrader("audio", cfg) is None and media_degrader("video", cfg) is None
    assert media_degrader("text", _extract_cfg("text:word-drop=0.5,audio:snr=0")) is None  # text: in the records
