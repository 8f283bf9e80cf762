"""Encoder contracts on offline models: padding invariance, layer choice, windows, checkpoints."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from cmarr.extract.batching import padding_fraction, plan_batches
from cmarr.extract.encoders.demo_models import minilm_path, tiny_wav2vec2
from cmarr.extract.encoders.denseface_checkpoint import load_denseface, save_denseface
from cmarr.extract.encoders.densenet import DenseNetArch, DenseNetBC
from cmarr.extract.encoders.speech import SpeechEncoder
from cmarr.extract.encoders.text import TextEncoder
from cmarr.shared.config import AudioEncoderConfig, TextEncoderConfig, VideoEncoderConfig
from cmarr.shared.errors import ConfigError, InputDataError
from cmarr.shared.store.schema import Status

CPU = torch.device("cpu")


@pytest.mark.parametrize("budget", [1, 50, 400])
def test_batches_respect_the_budget_and_cover_every_item(budget):
    rng = np.random.default_rng(0)
    costs = rng.integers(0, 120, 300)
    batches = plan_batches(costs, budget)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(300))
    for b in batches:
        assert len(b) == 1 or max(costs[b].max(), 1) * len(b) <= budget
    assert padding_fraction(costs, batches) < 0.35 or budget < 120


def test_text_features_do_not_depend_on_batch_padding():
    enc = TextEncoder(TextEncoderConfig(model=str(minilm_path())), CPU, "none")
    short = "I am so happy for you."
    alone = enc.encode([short])[0]
    batched = enc.encode(
        ["This is a much longer sentence that forces a lot of padding onto the short one.", short, None]
    )
    assert alone.status == Status.OK and alone.features.shape == (7, 384)  # 7 word pieces, no [CLS]/[SEP]
    np.testing.assert_allclose(batched[1].features, alone.features, atol=1e-5)
    assert batched[2].status == Status.MISSING_INPUT


def test_batched_token_counts_equal_one_at_a_time_counts():
    """The plan (and so resume) depends on the costs: the one-call path must give the same ones."""
    from cmarr.extract.corpora.record import UtteranceRecord

    enc = TextEncoder(TextEncoderConfig(model=str(minilm_path()), max_length=12), CPU, "none")
    texts = ["I am so happy for you.", "", "   ", None, "word " * 40, "Why? Why would you do that, Brian?"]
    records = [
        UtteranceRecord(id=f"u{k}", label="neu", session="Ses01", speaker="Ses01F", text=t) for k, t in enumerate(texts)
    ]
    assert enc.costs(records).tolist() == [enc.cost(r) for r in records]
    assert enc.costs(records).tolist()[1:5] == [0, 0, 0, 12]


def test_a_cut_transcript_is_noted_on_its_item():
    """Truncation to max_length is kept as a note with the item (field case text-maxlen): 40 word
    pieces, max_length 12 -> the first 10 (12 less [CLS] and [SEP])."""
    enc = TextEncoder(TextEncoderConfig(model=str(minilm_path()), max_length=12), CPU, "none")
    long, short = enc.encode(["word " * 40, "I am so happy for you."])
    assert long.status == Status.OK and long.features.shape[0] == 10
    assert long.reason == "transcript cut to its first 10 of 40 word pieces (extract.text.max_length = 12)"
    assert short.status == Status.OK and short.reason == ""


def test_tiny_random_bert_from_a_local_directory_and_layer_choice(tmp_path):
    from transformers import BertConfig, BertModel

    src = minilm_path()
    torch.manual_seed(0)
    BertModel(
        BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(tmp_path / "bert")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "bert" / name).write_bytes((src / name).read_bytes())
    last = TextEncoder(TextEncoderConfig(model=str(tmp_path / "bert")), CPU, "none")
    first = TextEncoder(TextEncoderConfig(model=str(tmp_path / "bert"), layer=1), CPU, "none")
    a, b = last.encode(["hello there"])[0].features, first.encode(["hello there"])[0].features
    assert a.shape == b.shape == (2, 32) and not np.allclose(a, b)
    assert last.spec().dim == 32 and last.spec().layer == -1


def test_long_speech_is_encoded_in_windows(tmp_path):
    path = tiny_wav2vec2(tmp_path)
    enc = SpeechEncoder(AudioEncoderConfig(model=str(path), max_window_seconds=1.0), CPU, "none")
    wav = np.random.default_rng(0).standard_normal(16000 * 3 + 8000).astype(np.float32)
    out = enc.encode([wav, wav[:100]])
    assert out[0].features.shape == (3 * 49 + 24, 64)  # three 1 s windows (49 frames) + a 0.5 s tail
    assert out[1].status == Status.MISSING_INPUT  # shorter than one frame


def test_denseface_is_342_dimensional():
    net = DenseNetBC().eval()
    with torch.inference_mode():
        assert net.features(torch.zeros(2, 1, 64, 64)).shape == (2, 342)


def test_checkpoint_with_other_architecture_or_normalisation_is_refused(tmp_path):
    small = DenseNetBC(DenseNetArch(depth=16))
    save_denseface(small, tmp_path / "small.pt", classes=list("abcdefgh"))
    with pytest.raises(ConfigError, match="depth 16 .* expects depth 100"):
        load_denseface(tmp_path / "small.pt", VideoEncoderConfig())
    with pytest.raises(ConfigError, match="normalises faces"):
        load_denseface(tmp_path / "small.pt", VideoEncoderConfig(depth=16, mean=100.0))
    assert load_denseface(tmp_path / "small.pt", VideoEncoderConfig(depth=16)).net.feature_dim == small.feature_dim


def test_speech_features_do_not_depend_on_batch_padding(tmp_path):
    enc = SpeechEncoder(AudioEncoderConfig(model=str(tiny_wav2vec2(tmp_path))), CPU, "none")
    rng = np.random.default_rng(1)
    short, long = (rng.standard_normal(n).astype(np.float32) for n in (8000, 40000))
    alone = enc.encode([short])[0].features
    batched = enc.encode([long, short])[1].features
    assert alone.shape == batched.shape == (24, 64)
    np.testing.assert_allclose(batched, alone, atol=1e-4)


def test_letterbox_bars_are_trimmed():
    from cmarr.extract.media.video import trim_letterbox

    frames = np.zeros((3, 480, 360, 3), np.uint8)
    frames[:, 112:368, 40:300] = 90
    frames[1, 200, 10] = 255
    assert trim_letterbox(frames).shape == (3, 256, 360, 3)
    assert trim_letterbox(np.zeros((2, 10, 10, 3), np.uint8)).shape == (2, 10, 10, 3)


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_speech_layers_match_the_reference_forward(tmp_path, layer):
    """The padding-safe path reproduces transformers' own forward on a lone utterance."""
    path = tiny_wav2vec2(tmp_path)
    enc = SpeechEncoder(AudioEncoderConfig(model=str(path), layer=layer), CPU, "none")
    wav = np.random.default_rng(2).standard_normal(12000).astype(np.float32)
    x = enc.extractor(wav, sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.inference_mode():
        reference = enc.model(x, output_hidden_states=True).hidden_states[layer][0].numpy()
    np.testing.assert_allclose(enc.encode([wav])[0].features, reference, atol=1e-5)


def test_cpu_sized_video_passes_give_the_features_of_gpu_sized_ones(tmp_path):
    """Slices and channels-last memory are for speed only: 40 frames through the CPU sizes
    (detection 32 frames per call, 32 candidates and 8 faces per pass) give the features and
    statuses of one pass per stage, as a GPU runs them."""
    from cmarr.extract.corpora.demo import _face_image
    from cmarr.extract.encoders.video import VideoEncoder

    save_denseface(DenseNetBC(DenseNetArch(depth=16)), tmp_path / "d.pt", classes=list("abcdefgh"))
    cfg = VideoEncoderConfig(checkpoint=str(tmp_path / "d.pt"), depth=16, min_face_size=40)
    rng = np.random.default_rng(0)
    canvas = np.zeros((40, 240, 260, 3), np.uint8)
    for k in range(40):  # the demo face, moving, with noise; every fifth frame empty
        if k % 5:
            y, x = rng.integers(0, 20, size=2)
            canvas[k, y : y + 220, x : x + 220] = _face_image()
    frames = np.clip(canvas + rng.normal(0, 3, canvas.shape), 0, 255).astype(np.uint8)
    inputs = [frames[:25], None, frames[25:]]
    cpu = VideoEncoder(cfg, CPU, "none")
    assert (cpu.frame_slice, cpu.face_slice, cpu.mtcnn.onet.size) == (32, 8, 32)
    whole = VideoEncoder(cfg, CPU, "none")
    whole.frame_slice = whole.face_slice = cfg.frames_per_batch
    whole.mtcnn.rnet.size = whole.mtcnn.onet.size = None
    got, want = cpu.encode(inputs), whole.encode(inputs)
    assert [r.status for r in got] == [r.status for r in want] == [Status.OK, Status.MISSING_INPUT, Status.OK]
    assert got[0].features.shape == (20, cpu.net.feature_dim)  # 5 of the 25 frames hold no face
    for a, b in zip(got, want):
        if a.features is not None:
            np.testing.assert_allclose(a.features, b.features, atol=1e-4)


def test_sliced_forward_returns_what_one_pass_returns():
    from cmarr.extract.encoders.sizing import SlicedForward
    from facenet_pytorch.models.mtcnn import RNet

    torch.manual_seed(0)
    net = RNet(pretrained=False).eval()
    x = torch.randn(70, 3, 24, 24)
    with torch.inference_mode():
        want = net(x)
        got = SlicedForward(net, 32)(x)  # 32 + 32 + 6, channels-last
    assert isinstance(got, tuple) and len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


class _Decoded(torch.utils.data.Dataset):
    """Batches shaped like `_BatchDecoder`'s: (batch, items, inputs, errors, notes), with arrays of
    several dtypes and shapes, a missing input and a non-array input; items name the process."""

    def __len__(self):
        return 5

    def __getitem__(self, j):
        rng = np.random.default_rng(j)
        inputs = [
            rng.standard_normal(100 + j).astype(np.float32),
            None,
            rng.integers(0, 255, (2, 3, 5, 3), dtype=np.uint8),
            "text",
            np.zeros((0, 4), np.float16),
        ]
        return j, [os.getpid()], inputs, {1: "missing"}, {0: f"note {j}"}


def test_decoded_batches_arrive_in_order_and_unchanged_the_first_decoded_here():
    from cmarr.extract.batch_loop import loader_stream

    out = list(loader_stream(_Decoded(), 2))
    assert [b for b, *_ in out] == list(range(5))  # in plan order
    assert out[0][1] == [os.getpid()]  # while the workers start
    assert all(items != [os.getpid()] for _, items, _, _, _ in out[1:])
    for b, _, inputs, errors, notes in out:
        want = _Decoded()[b][2]
        assert errors == {1: "missing"} and notes == {0: f"note {b}"} and inputs[1] is None and inputs[3] == "text"
        for k in (0, 2, 4):
            assert inputs[k].dtype == want[k].dtype and inputs[k].shape == want[k].shape
            assert inputs[k].tobytes() == want[k].tobytes()


# ----------------------------------------------------------------------------- settings beyond the model


def _tiny_text_model(folder, cls, **config):
    """A random BERT-family model with MiniLM's tokenizer files, saved in `folder`."""
    torch.manual_seed(0)
    kind = {"bert": "BertConfig", "roberta": "RobertaConfig"}[cls]
    import transformers

    model_cls = getattr(transformers, kind.replace("Config", "Model"))
    conf = getattr(transformers, kind)(
        vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, **config
    )
    model_cls(conf).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((minilm_path() / name).read_bytes())
    return folder


def test_text_max_length_beyond_the_models_positions_is_refused_at_load():
    cfg = TextEncoderConfig(model=str(minilm_path()), max_length=1024)
    message = r"extract\.text\.max_length = 1024: .* has positions for 512 tokens; set it to 512 or less"
    with pytest.raises(ConfigError, match=message):
        TextEncoder.check_settings(cfg)  # from the model's config alone
    with pytest.raises(ConfigError, match=message):
        TextEncoder(cfg, CPU, "none")


def test_roberta_positions_leave_out_the_padding_offset(tmp_path):
    path = _tiny_text_model(tmp_path / "roberta", "roberta", max_position_embeddings=66, pad_token_id=1)
    with pytest.raises(ConfigError, match="positions for 64 tokens"):
        TextEncoder(TextEncoderConfig(model=str(path), max_length=65), CPU, "none")
    enc = TextEncoder(TextEncoderConfig(model=str(path), max_length=64), CPU, "none")
    [result] = enc.encode(["word " * 200])  # cut to 64 positions, which the model has
    assert result.status == Status.OK and result.features.shape == (62, 16)


@pytest.mark.parametrize("layer, ok", [(2, True), (-3, True), (3, False), (-4, False)])
def test_layers_the_model_lacks_are_refused(tmp_path, layer, ok):
    path = _tiny_text_model(tmp_path / "bert", "bert")  # 2 layers: hidden states 0..2
    if ok:
        TextEncoder.check_settings(TextEncoderConfig(model=str(path), layer=layer))
    else:
        with pytest.raises(ConfigError, match=rf"extract\.text\.layer = {layer}: .* hidden states 0\.\.2"):
            TextEncoder.check_settings(TextEncoderConfig(model=str(path), layer=layer))
    wav2vec2 = tiny_wav2vec2(tmp_path)  # 2 layers as well
    if ok:
        SpeechEncoder.check_settings(AudioEncoderConfig(model=str(wav2vec2), layer=layer))
    else:
        with pytest.raises(ConfigError, match=rf"extract\.audio\.layer = {layer}: .* hidden states 0\.\.2"):
            SpeechEncoder(AudioEncoderConfig(model=str(wav2vec2), layer=layer), CPU, "none")


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"max_window_seconds": 0.02}, r"max_window_seconds = 0\.02: shorter than one frame .*25\.0 ms"),
        ({"sample_rate": 8000}, r"extract\.audio\.sample_rate = 8000: .* takes 16000 Hz input"),
    ],
)
def test_audio_settings_the_model_cannot_honour_are_refused(tmp_path, setting, message):
    cfg = AudioEncoderConfig(model=str(tiny_wav2vec2(tmp_path)), **setting)
    with pytest.raises(ConfigError, match=message):
        SpeechEncoder.check_settings(cfg)
    with pytest.raises(ConfigError, match=message):
        SpeechEncoder(cfg, CPU, "none")


def test_a_bad_setting_stops_the_run_before_any_item(tmp_path):
    """`--modalities audio,text` with a text setting beyond the model: nothing is extracted, no store."""
    from cmarr.extract.corpora.record import UtteranceRecord
    from cmarr.extract.encoders.demo_models import apply_profile
    from cmarr.extract.pipeline import extract_corpus
    from cmarr.shared.config import load_config
    from cmarr.shared.labels import get_label_set

    cfg = apply_profile(load_config(None, {"extract.profile": "demo", "extract.text.max_length": 600}), {"x"})
    records = [UtteranceRecord(id="u", label="calm", session="A", speaker="p", text="hello")]
    with pytest.raises(ConfigError, match="max_length = 600"):
        extract_corpus(records, tmp_path / "s.zarr", "c", get_label_set("calm,tense"), cfg, ["audio", "text"])
    assert not (tmp_path / "s.zarr").exists()


def test_denseface_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = DenseNetBC(DenseNetArch(depth=16)).eval()
    save_denseface(net, tmp_path / "d.pt", classes=list("abcdefgh"), extra={"note": "x"}, mean=100.0, std=50.0)
    loaded = load_denseface(tmp_path / "d.pt")
    assert loaded.classes == list("abcdefgh") and loaded.extra == {"note": "x"}
    assert loaded.normalization == {"mean": 100.0, "std": 50.0, "size": 64}
    x = torch.randn(3, 1, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded.net.features(x), net.features(x))
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"]  # no partial file left


def _garbage_checkpoints(folder):
    """Files that are not Denseface checkpoints, each with the words its error must carry."""
    good = folder / "good.pt"
    save_denseface(DenseNetBC(DenseNetArch(depth=16)), good, classes=list("abcdefgh"))
    data = good.read_bytes()
    other = DenseNetBC(DenseNetArch(depth=16, growth=8)).state_dict()
    cases = {
        "empty.pt": (b"", "empty file"),
        "truncated.pt": (data[: len(data) // 2], "truncated"),
        "garbage.pt": (random.Random(0).randbytes(4096), "truncated"),  # seeded: the same bytes every run
        "text.pt": (b"not a checkpoint at all\n" * 10, "truncated"),
    }
    for name, (content, _) in cases.items():
        (folder / name).write_bytes(content)
    torch.save({"state_dict": {}}, folder / "keys.pt")
    torch.save([1, 2, 3], folder / "list.pt")
    rest = {"normalization": {}, "classes": []}
    torch.save({"arch": {"depth": 16}, "state_dict": other, **rest}, folder / "shape.pt")
    torch.save({"arch": {"depth": 16, "wings": 2}, "state_dict": {}, **rest}, folder / "arch.pt")

    class Sneaky:  # a pickle that would run code: weights_only refuses it
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"arch": Sneaky()}, folder / "pickle.pt")
    more = {
        "keys.pt": "no arch, normalization, classes",
        "list.pt": "a list",
        "shape.pt": "do not fit its arch",
        "arch.pt": "its arch is",
        "pickle.pt": "not from cmarr-fer",
    }
    return {name: words for name, (_, words) in cases.items()} | more


def test_damaged_or_foreign_checkpoints_are_one_line_errors_naming_the_file(tmp_path):
    for name, words in _garbage_checkpoints(tmp_path).items():
        with pytest.raises(InputDataError) as caught:  # an input file that is no checkpoint: exit 1
            load_denseface(tmp_path / name)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name}: ") and words in message, (name, message)
        assert "\n" not in message, (name, message)
