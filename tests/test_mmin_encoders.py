"""The MMIN family's sequence encoders (train/model/mmin_parts.py): the masked LSTM's dense path
(CPU) equals its packed path (CUDA) and each utterance alone, gradients too; masked encoders and a
system built on them ignore padding; the published (unmasked) path is the peers' padded computation."""

from __future__ import annotations

import pytest
import torch
from cmarr.shared.config import PipelineConfig
from cmarr.train.batch import Batch
from cmarr.train.model.mmin_parts import LSTMEncoder, TextCNN
from cmarr.train.systems import get_system

LENGTHS = [7, 1, 12, 0, 3]  # 0: a modality the row does not give (one zero step when masked)


def _padded(lengths, dim=5, extra=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(max(lengths), 1) + extra
    x = torch.randn(len(lengths), T, dim, generator=g, dtype=torch.float64)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    return x * mask[..., None], mask


@pytest.mark.parametrize("pooling", ["maxpool", "last"])
def test_the_dense_masked_lstm_equals_the_packed_one_values_and_gradients(pooling):
    torch.manual_seed(0)
    enc = LSTMEncoder(5, 8, pooling).double()
    x, mask = _padded(LENGTHS, extra=4)
    lengths = mask.sum(1).clamp(min=1)
    results = {}
    for path in ("_dense", "_packed"):
        enc.zero_grad()
        xi = x.clone().requires_grad_()
        out = getattr(enc, path)(xi, lengths)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results[path] = (out, xi.grad, [p.grad.clone() for p in enc.parameters()])
    (a, ga, pa), (b, gb, pb) = results["_dense"], results["_packed"]
    assert torch.allclose(a, b, atol=1e-12) and torch.allclose(ga, gb, atol=1e-12)
    assert all(torch.allclose(u, v, atol=1e-12) for u, v in zip(pa, pb))


@pytest.mark.parametrize("pooling", ["maxpool", "last"])
def test_the_masked_lstm_is_each_utterance_alone(pooling):
    """Closed form of 'skips padding': every row's vector is the LSTM over its own steps only."""
    torch.manual_seed(1)
    enc = LSTMEncoder(5, 8, pooling).eval()  # forward runs in float32
    x, mask = _padded(LENGTHS, extra=3)
    x = x.float()
    batch = enc(x, mask)
    for k, n in enumerate(LENGTHS):
        out, (h, _) = enc.rnn(x[k : k + 1, : max(n, 1)])
        alone = out.max(1).values if pooling == "maxpool" else h[0]
        assert torch.allclose(batch[k], alone[0], atol=1e-6), k


@pytest.mark.parametrize("make", [lambda **kw: LSTMEncoder(5, 8, "last", **kw), lambda **kw: TextCNN(5, 8, **kw)])
def test_masked_encoders_ignore_padding_and_the_published_ones_read_it(make):
    """(The published LSTM's max over steps can miss the padding's outputs; its last state cannot.)"""
    torch.manual_seed(2)
    masked, published = make().eval(), make(masked=False).eval()
    published.load_state_dict(masked.state_dict())
    x, mask = _padded([6, 9, 4])
    x2, mask2 = _padded([6, 9, 4], extra=7)
    x2[:, : x.shape[1]] = x  # the same utterances, padded further (with zeros, as collate pads)
    x, x2 = x.float(), x2.float()
    assert torch.allclose(masked(x, mask), masked(x2, mask2), atol=1e-6)
    assert not torch.allclose(published(x, mask), published(x2, mask2), atol=1e-6)


def test_the_published_lstm_is_the_peers_padded_computation():
    """MMIN's LSTMEncoder (maxpool / last over every step of the padded batch), written out."""
    torch.manual_seed(3)
    for pooling in ("maxpool", "last"):
        enc = LSTMEncoder(5, 8, pooling, masked=False).eval()
        x, mask = _padded(LENGTHS, extra=2)
        x = x.float()
        out, (h, _) = enc.rnn(x)
        peer = out.max(1).values if pooling == "maxpool" else h[0]
        assert torch.equal(enc(x, mask), peer)


def _batch(lengths: dict[str, list[int]], extra: int, seed: int = 0) -> Batch:
    dims = {"text": 6, "audio": 5, "video": 4}
    x, mask = {}, {}
    for m, d in dims.items():
        x[m], mask[m] = _padded(lengths[m], d, extra, seed)
        x[m] = x[m].float()
    n = len(lengths["text"])
    given = {m: torch.tensor([v > 0 for v in lengths[m]]) for m in dims}
    return Batch(x, mask, given, {m: g.clone() for m, g in given.items()}, torch.arange(n) % 4)


@pytest.mark.parametrize("system", ["utt-fusion", "cif-mmin"])
def test_a_masked_mmin_family_system_is_padding_invariant(system):
    """utt-fusion (LSTM, TextCNN) and CIF-MMIN's consistent LSTMs (text pooled by its last state)
    give the same outputs however far the batch is padded."""
    torch.manual_seed(4)
    stage = get_system(system, PipelineConfig().train).stages[-1]
    model = stage.build({"text": 6, "audio": 5, "video": 4}, 4).eval()
    lengths = {"text": [3, 8, 5, 0], "audio": [9, 2, 14, 6], "video": [4, 0, 7, 2]}
    a, b = _batch(lengths, 0), _batch(lengths, 6)
    for m in a.x:
        b.x[m][:, : a.x[m].shape[1]] = a.x[m]
    with torch.no_grad():
        out_a, out_b = model(a), model(b)
    assert torch.allclose(out_a.logits, out_b.logits, atol=1e-5)
