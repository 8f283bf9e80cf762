"""LNLN (train/model/lnln.py): parity with Haoyu-ha/LNLN under its training noise (the record of
bench/parity/record_lnln.py; the six-condition record is tests/test_parity.py's), its parameter
count, its noise recipe, fixed-length inputs, a finite bf16 step, and one tiny training run
through cmarr-train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cmarr.shared.train_config import TrainConfig
from cmarr.train.model import lnln_parts
from cmarr.train.model.lnln import Noise, fixed_length
from cmarr.train.systems import count_parameters, get_system

from tests import parity_cases as case

NOISE_RECORD = Path(__file__).parent / "data" / "lnln-noise.npz"
TOL = 1e-5


def _noise_record():
    with np.load(NOISE_RECORD) as f:
        record = {k: f[k] for k in f.files}
    return json.loads(str(record.pop("meta"))), record


def _step(meta, record, noise: bool = True):
    stage, model = case.build("lnln")
    case.fill_weights(model, meta["seed"])
    model.eval()  # no dropout anywhere; the noise is the recorded one, not drawn
    batch = case.batch(meta["seed"] + 1, meta["conditions"])
    given = None
    if noise:
        rate = {m: torch.tensor(v, dtype=torch.float32) for m, v in meta["noise"].items()}
        given = Noise(rate, {m: torch.from_numpy(record[f"keep.{m}"]) for m in rate})
    out = model(batch, given)
    terms = model.losses(batch, out)
    sum(stage.weights[k] * v for k, v in terms.items()).backward()
    return stage, model, out, terms


def _worst_grad(model, record) -> float:
    return max(np.abs(case.digest(p.grad) - record[f"grad.{n}"]).max() for n, p in model.named_parameters())


def test_outputs_losses_and_gradients_under_the_training_noise_equal_the_peers():
    meta, record = _noise_record()
    stage, model, out, terms = _step(meta, record)
    for key in [k for k in record if k.startswith("out.")]:
        assert np.abs(getattr(out, key[4:]).detach().double().numpy() - record[key]).max() < TOL, key
    for key in [k for k in record if k.startswith("loss.")]:
        assert meta["loss_weights"][key[5:]] == stage.weights[key[5:]]
        assert abs(stage.weights[key[5:]] * terms[key[5:]].item() - float(record[key])) < TOL, key
    assert {k[5:] for k in record if k.startswith("grad.")} == {n for n, _ in model.named_parameters()}
    assert _worst_grad(model, record) < TOL


def test_the_noise_record_tells_the_noise_and_the_gradient_reversal_apart(monkeypatch):
    """Both assertions can fail: without the recorded noise the outputs differ, and without the
    proxy's gradient reversal the gradients do."""
    meta, record = _noise_record()
    _, _, out, _ = _step(meta, record, noise=False)
    assert np.abs(out.logits.detach().double().numpy() - record["out.logits"]).max() > 100 * TOL
    monkeypatch.setattr(lnln_parts.GradientReversal, "apply", staticmethod(lambda x, alpha: x))
    _, model, _, _ = _step(meta, record)
    assert _worst_grad(model, record) > 100 * TOL


def test_parameters_equal_the_peers_own_code():
    """6,638,279 at 768/768/342, K = 4, as the record counted them on the peer's LNLN (its BERT an
    identity, so not counted), every one trained."""
    meta, _ = _noise_record()
    peer = meta["parameters"]
    assert peer["peer"] == peer["peer_trainable"] == 6_638_279
    _, model = case.build("lnln")
    assert count_parameters(model) == {"trainable": peer["peer"], "frozen": 0, "total": peer["peer"]}


def test_a_bf16_autocast_training_step_is_finite():
    """Forward (noise drawn, the clean branch on), losses and backward under CPU bf16 autocast, as
    cmarr's trainer runs it (`train.amp = "bf16"`): every term and every gradient finite."""
    torch.manual_seed(0)
    short = {"text_length": 12, "audio_length": 16, "video_length": 16}  # the case's rows fit; a quick step
    stage, model = case.build("lnln", switches={"lnln": {"model": short}})
    model.train()
    batch = case.batch(3, "full")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        terms = model.losses(batch, out)
    assert out.logits.dtype == torch.bfloat16 and out.rec is not None  # autocast was on; every term computed
    sum(stage.weights[k] * v for k, v in terms.items()).backward()
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in terms.values()), terms
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_training_draws_the_published_noise():
    """Per modality: half the rows at rate 0 (every valid step kept), the others drop about their
    rate's share of the valid steps, never a padded step; at evaluation nothing is drawn."""
    torch.manual_seed(0)
    _, model = case.build("lnln")
    B, L = 400, 200
    valid = {m: torch.arange(L)[None] < torch.randint(50, L, (B, 1)) for m in model.modalities}
    noise = model.draw_noise(valid)
    for m in model.modalities:
        rate, keep = noise.rate[m], noise.keep[m]
        assert int((rate == 0).sum()) == B // 2
        assert not (keep & ~valid[m]).any() and torch.equal(keep[rate == 0], valid[m][rate == 0])
        dropped = 1 - keep.sum(1) / valid[m].sum(1)
        assert (dropped[rate > 0] - rate[rate > 0]).abs().mean() < 0.05


def test_a_long_recording_is_averaged_down_and_a_short_one_padded():
    x = torch.arange(12.0).view(1, 12, 1).repeat(2, 1, 1)
    mask = torch.arange(12)[None] < torch.tensor([[12], [3]])
    out, valid = fixed_length(x, mask, 4)
    assert out[0, :, 0].tolist() == [1.0, 4.0, 7.0, 10.0] and valid[0].all()
    assert out[1, :, 0].tolist() == [0.0, 1.0, 2.0, 0.0] and valid[1].tolist() == [True, True, True, False]


def test_a_missing_modality_is_never_read_at_evaluation():
    _, model = case.build("lnln")
    model.eval()
    batch = case.batch(5, "given:audio,video")
    batch.known = dict(batch.given)
    with torch.no_grad():
        before = model(batch).logits
        batch.x["text"] = 50 * torch.randn_like(batch.x["text"])
        assert torch.equal(before, model(batch).logits)


def test_the_learning_rate_follows_the_peers_schedule():
    """The stage's factor in each of the published 200 epochs is get_scheduler's (its linear warm-up
    over 20 epochs, the first at rate 0, then the cosine), recorded from the peer's classes by
    bench/parity/record_lnln.py."""
    with np.load(Path(__file__).parent / "data" / "parity" / "lnln.npz") as f:
        recorded = json.loads(str(f["meta"]))["lr_factors"]
    stage = get_system("lnln", TrainConfig()).stages[0]
    assert len(recorded) == stage.optim.epochs == 200
    assert np.abs(np.array([stage.lr_schedule(e) for e in range(1, 201)]) - recorded).max() < 1e-9


@pytest.mark.slow
def test_the_fast_preset_trains_lnln_end_to_end(tmp_path, monkeypatch, cpu_bf16):
    from cmarr.shared.store import FeatureStore  # noqa: F401
    from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
    from cmarr.train.cli import train_app
    from typer.testing import CliRunner

    mods = {"text": SyntheticModality(4, 3), "audio": SyntheticModality(6, 4), "video": SyntheticModality(3, 2)}
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, 60, mods, dtype="float32", seed=7, class_signal=0.8)
    args = ["--store", str(store), "--folds", "5", "--only-folds", "1", "--out", str(tmp_path / "out"),
            "--system", "lnln", "--preset", "fast", "--set", "train.device=cpu", "--set", "train.amp=bf16",
            "--set", "train.lnln.optim.epochs=1"]  # fmt: skip
    from cmarr.train.systems import lnln as lnln_system

    epochs, schedule = [], lnln_system.warmup_cosine  # the epochs whose learning rate came from LNLN's schedule

    def spied(warmup, total):
        factor = schedule(warmup, total)
        return lambda epoch: epochs.append(epoch) or factor(epoch)

    monkeypatch.setattr(lnln_system, "warmup_cosine", spied)
    r = CliRunner().invoke(train_app, args)
    assert r.exit_code == 0, r.output
    assert cpu_bf16 and 1 in epochs  # under CPU bf16 autocast, on the stage's own schedule
    [run] = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    table = json.loads((run / "results.json").read_text())["table"]
    assert table and (run / "seed0/fold1/split0/lnln/checkpoint.pt").is_file()


def test_the_system_reads_its_section():
    system = get_system("lnln", TrainConfig())
    assert [s.name for s in system.stages] == ["lnln"] and system.config.keys() == {"lnln"}
    assert system.stages[0].sampler == "none" and system.stages[0].optim.optimizer == "adamw"


if __name__ == "__main__":
    pytest.main([__file__])
