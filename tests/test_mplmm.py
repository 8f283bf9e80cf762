"""MPLMM on the system interface: the pre-training backbone equal to the authors' MULTModel (the
prompt stage is compared by tests/test_parity.py), the published parameter counts, fixed lengths,
a missing modality never read, the frozen backbone, the published zero start of the missing-type
prompts, MPLMM's drop-rate sampler, and both stages trained end to end under bf16 autocast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.train.batch import Batch
from cmarr.train.checkpoint import load_checkpoint
from cmarr.train.cli import train_app
from cmarr.train.missing import MISSING, build_sampler
from cmarr.train.model.mplmm import MPLMM, MPLMMModel, fit_length
from cmarr.train.stage import _clip
from typer.testing import CliRunner

from tests import parity_cases as case

STAGE_RECORD = Path(__file__).parent / "data" / "parity" / "stages" / "mplmm-full.npz"
DIMS = {"text": 6, "audio": 8, "video": 5}
TINY = {"width": 4, "heads": 2, "layers": 1, "prompt_length": 2, "text_len": 4, "audio_len": 6, "video_len": 3}
# one row per condition: {t}, {s}, {v}, {v,t}, {s,v}, {s,t}, full
MIXED = {"text": [1, 0, 0, 1, 0, 1, 1], "audio": [0, 1, 0, 0, 1, 1, 1], "video": [0, 0, 1, 1, 1, 0, 1]}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(given: dict[str, list[int]], seed: int = 0, steps: int = 9) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    B = len(given["text"])
    x = {m: torch.randn(B, steps, d, generator=gen) for m, d in DIMS.items()}
    lengths = torch.randint(1, steps + 1, (B,), generator=gen)
    mask = {m: torch.arange(steps)[None] < lengths[:, None] for m in DIMS}
    rows = {m: torch.tensor(v, dtype=torch.bool) for m, v in given.items()}
    return Batch(x, mask, rows, {m: torch.ones(B, dtype=torch.bool) for m in DIMS}, torch.randint(0, 4, (B,)))


def test_the_pretraining_backbone_equals_the_authors_multmodel():
    """Stage 1 on the case's complete batch: logits, CE and norm-clipped gradients of the record from
    zrguo/MPLMM's MULTModel (bench/parity/record_mplmm.py), to 1e-5."""
    with np.load(STAGE_RECORD) as f:
        record = {k: f[k] for k in f.files}
    meta = json.loads(str(record.pop("meta")))
    stage, model = case.build("mplmm", 0, modalities=meta["modalities"])
    assert stage.name == meta["stage"] == "mplmm-full" and stage.optim.clip == meta["clip"]
    case.fill_weights(model, meta["seed"])
    model.eval()
    batch = case.batch(meta["seed"] + 1, meta["conditions"])
    out = model(batch)
    loss = model.losses(batch, out)["task"]
    loss.backward()
    _clip(stage.optim, model, model.trainable_parameters())
    assert np.abs(out.logits.detach().double().numpy() - record["out.logits"]).max() < 1e-5
    assert abs(loss.item() - float(record["loss.task"])) < 1e-5
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == {k[5:] for k in record if k.startswith("grad.")}
    for n, g in grads.items():
        assert np.abs(case.digest(g) - record[f"grad.{n}"]).max() < 1e-5, n


@pytest.mark.parametrize("record", ["stages/mplmm-full", "mplmm"])
def test_parameter_counts_equal_the_authors_code(record):
    """At cmarr's sizes (768/768/342, K = 4): the backbone 1,118,344 (all trained); the prompt model
    1,411,446, of which 350,166 train (prompts, projections, output layer), as the peer's classes count."""
    with np.load(case_path(record)) as f:
        counts = json.loads(str(f["meta"]))["parameters"]
    stage_index = 0 if record.startswith("stages/") else -1
    _, model = case.build("mplmm", stage_index)
    model.freeze()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    assert (total, trainable) == (counts["peer"], counts["peer_trainable"])
    assert (total, trainable) == ((1_118_344,) * 2 if stage_index == 0 else (1_411_446, 350_166))


def case_path(record: str) -> Path:
    return Path(__file__).parent / "data" / "parity" / f"{record}.npz"


def test_fit_length_pads_short_rows_and_pools_long_ones():
    x = torch.arange(1, 9, dtype=torch.float32).reshape(1, 8, 1).repeat(2, 1, 1)  # steps 1..8
    mask = torch.tensor([[True] * 3 + [False] * 5, [True] * 8])
    out = fit_length(x, mask, 4)  # (2, 1, 4)
    assert out[0, 0].tolist() == [1, 2, 3, 0]  # zero-padded, its padding zeroed
    assert out[1, 0].tolist() == [1.5, 3.5, 5.5, 7.5]  # 8 steps averaged into 4


@pytest.mark.parametrize("dropped", ["text", "audio", "video"])
def test_a_missing_modality_is_never_read(dropped):
    torch.manual_seed(0)
    model = MPLMM(DIMS, 4, MPLMMModel(**TINY), prompts=True).eval()
    given = {m: [int(m != dropped)] * 3 for m in DIMS}
    clean = _batch(given)
    noisy = Batch(dict(clean.x), dict(clean.mask), clean.given, clean.known, clean.labels)
    noisy.x[dropped] = 50 * torch.randn_like(clean.x[dropped])
    noisy.mask[dropped] = torch.ones_like(clean.mask[dropped])
    with torch.no_grad():
        assert torch.equal(model(clean).logits, model(noisy).logits)


def test_rows_are_completed_by_pattern_as_one_at_a_time():
    """The batch's rows grouped by missing pattern give each row what it gives alone."""
    torch.manual_seed(0)
    model = MPLMM(DIMS, 4, MPLMMModel(**TINY), prompts=True).eval()
    for p in model.prompts.parameters():
        torch.nn.init.normal_(p)
    batch = _batch(MIXED)
    with torch.no_grad():
        together = model(batch).logits
        for r in range(7):
            one = Batch(*({m: v[r : r + 1] for m, v in d.items()} for d in (batch.x, batch.mask, batch.given,
                        batch.known)), batch.labels[r : r + 1])  # fmt: skip
            assert torch.allclose(model(one).logits[0], together[r], atol=1e-6)


def test_the_backbone_stays_frozen_but_keeps_its_dropout():
    model = MPLMM(DIMS, 4, MPLMMModel(**TINY), prompts=True)
    model.freeze()
    model.train()
    frozen = [*model.fusion.parameters(), *model.head.proj1.parameters(), *model.head.proj2.parameters()]
    assert not any(p.requires_grad for p in frozen)
    assert {id(p) for p in model.trainable_parameters()}.isdisjoint({id(p) for p in frozen})
    assert model.fusion.training  # as the peer: requires_grad False, still in train mode
    trained = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"proj", "head", "prompts"} and model.head.out.weight.requires_grad


def test_zero_initialised_missing_type_prompts_take_no_gradient():
    """Published: E and W_m start at zero, so E @ (S W) has zero gradient in both (a saddle); the
    missing-signal prompts S do learn, through the projections they are added to."""
    torch.manual_seed(0)
    model = MPLMM(DIMS, 4, MPLMMModel(**TINY), prompts=True)
    model.freeze()
    batch = _batch(MIXED)
    model.losses(batch, model(batch))["task"].backward()
    p = model.prompts
    assert p.type_prompt.grad.abs().max() == 0 and all(w.grad.abs().max() == 0 for w in p.type_map.values())
    assert p.signal_present["text"].grad.abs().max() > 0 and p.generative.grad.abs().max() > 0


def test_the_drop_rate_sampler_draws_mplmm_missing_codes():
    present = {m: np.ones(7000, bool) for m in DIMS}
    [drawn] = build_sampler("drop-rate", rate=0.7).draw(present, [np.arange(7000)], np.random.default_rng(0))
    given = np.stack([drawn[m] for m in ("text", "audio", "video")], 1)
    full = given.all(1).mean()
    assert abs(full - 0.3) < 0.02
    for c in MISSING:
        share = (given == [m in c.given for m in ("text", "audio", "video")]).all(1).mean()
        assert abs(share - 0.7 / 6) < 0.015, c.name
    lacking = {**present, "video": np.zeros(7000, bool)}
    [drawn] = build_sampler("drop-rate", rate=0.7).draw(lacking, [np.arange(50)], np.random.default_rng(0))
    assert not drawn["video"].any()


@pytest.mark.slow
def test_both_stages_train_and_write_the_table(tmp_path, cpu_bf16):
    """The whole run (two stages, selection, test predictions) on a tiny store, under CPU bf16 autocast."""
    mods = {"text": SyntheticModality(4, 3), "audio": SyntheticModality(6, 4),
            "video": SyntheticModality(3, 2, missing_rate=0.1)}  # fmt: skip
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, 60, mods, dtype="float32", seed=7, class_signal=0.8)
    args = ["--store", str(store), "--folds", "5", "--out", str(tmp_path / "runs"), "--system", "mplmm",
            "--set", "train.device=cpu", "--set", "train.amp=bf16"]  # fmt: skip
    args += [a for k, v in TINY.items() for a in ("--set", f"train.mplmm.model.{k}={v}")]
    for part in ("pretrain", "optim"):
        args += ["--set", f"train.mplmm.{part}.epochs=1", "--set", f"train.mplmm.{part}.batch_size=8"]
    r = CliRunner().invoke(train_app, args)
    assert r.exit_code == 0, r.output
    assert cpu_bf16  # the loops ran under autocast
    [run] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    md = (run / "results.md").read_text().split("\n## ")[0]
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith(("| {", "| Avg"))]
    assert rows == ["{t}", "{s}", "{v}", "{v,t}", "{s,v}", "{s,t}", "Avg.", "{s,v,t}"]
    split = run / "seed0/fold1/split0"
    first = load_checkpoint(split / "mplmm-full/checkpoint.pt")[0]
    second = load_checkpoint(split / "mplmm/checkpoint.pt")[0]
    backbone = [k for k in first if k.startswith(("fusion.", "head.proj1.", "head.proj2."))]
    assert backbone and all(torch.equal(first[k], second[k]) for k in backbone)  # taken, then frozen
    assert any(not torch.equal(first[k], second[k]) for k in second if k.startswith("proj."))  # afresh, trained
