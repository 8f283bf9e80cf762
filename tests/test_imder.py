"""IMDer on the system interface: the authors' parameter counts per stage, the second stage's frozen
projections, diffusion recovery only where a modality is missing (whose features are then never
read for the prediction), repeatable evaluation sampling, a finite bf16 step, and both stages
trained end to end (parity with mdswyz/IMDer itself: tests/test_parity.py's imder records)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cmarr.shared.config import load_config
from cmarr.shared.errors import ConfigError
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.shared.train_config import TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.checkpoint import load_checkpoint
from cmarr.train.cli import train_app
from cmarr.train.model.imder import IMDer, IMDerModel
from cmarr.train.stage import _clip, make_optimizer
from cmarr.train.systems import get_system
from typer.testing import CliRunner

RECORD = Path(__file__).parent / "data" / "parity" / "imder.npz"
CMARR_DIMS = {"text": 768, "audio": 768, "video": 342}
# mdswyz/IMDer's IMDER(args) at 768/768/342, K = 4, d = 32, counted by
#   python3 bench/parity/record_imder.py <checkout of mdswyz/IMDer> 1901a92f0c91017ef9ac0dc2f2ca0b101a4dec9c
# (printed, and kept in the records' meta `parameters`): all of it; what has requires_grad (all but
# the score nets' fixed Fourier W, 3 x 128); what its missing stage trains (less proj_l/a/v, 180,288:
# IMDER.forward computes them under no_grad)
AUTHORS = {"total": 13_106_548, "requires_grad": 13_106_164, "trained_missing": 12_925_876}
DIMS = {"text": 6, "audio": 8, "video": 5}
# near the smallest the score U-Net allows: every level a multiple of 32 (GroupNorm(32) on the way
# up), seq_len - kernel_size + 1 = 16 steps (a multiple of 8: three stride-2 levels; at 8 the last
# level's one step leaves GroupNorm(32, 32) one value per group, which it refuses for a single row)
TINY = {"width": 32, "heads": 2, "layers": 1, "seq_len": 18, "score_channels": (32, 32, 32, 32), "score_embed": 8,
        "sampling_steps": 3, "rcab_blocks": 2, "rcab_reduction": 4}  # fmt: skip
# one row per condition: {t}, {s}, {v}, {v,t}, {s,v}, {s,t}, full
MIXED = {"text": [1, 0, 0, 1, 0, 1, 1], "audio": [0, 1, 0, 0, 1, 1, 1], "video": [0, 0, 1, 1, 1, 0, 1]}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared CPU: a second intra-op thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(frozen: bool = True) -> IMDer:
    torch.manual_seed(0)
    model = IMDer(DIMS, 4, IMDerModel(**TINY), freeze_projections=frozen)
    model.freeze()
    return model


def _batch(given: dict[str, list[int]], known: dict[str, list[int]] | None = None, seed: int = 0) -> Batch:
    """Random features with ragged lengths; `known` (the true features held) defaults to every row."""
    gen = torch.Generator().manual_seed(seed)
    B = len(given["text"])
    x = {m: torch.randn(B, 12, d, generator=gen) for m, d in DIMS.items()}
    lengths = torch.randint(1, 13, (B,), generator=gen)
    mask = {m: torch.arange(12)[None] < lengths[:, None] for m in DIMS}
    known = known or {m: [1] * B for m in DIMS}
    as_bool = lambda d: {m: torch.tensor(v, dtype=torch.bool) for m, v in d.items()}  # noqa: E731
    return Batch(x, mask, as_bool(given), as_bool(known), torch.randint(0, 4, (B,), generator=gen))


def _counts(model) -> dict[str, int]:
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trained": sum(p.numel() for p in model.trainable_parameters() if p.requires_grad),
    }


def test_parameter_counts_per_stage_equal_the_authors_code():
    stages = get_system("imder", TrainConfig()).stages
    assert [s.name for s in stages] == ["imder-full", "imder"]
    full, missing = (s.build(CMARR_DIMS, 4) for s in stages)
    missing.freeze()
    assert _counts(full) == {"total": AUTHORS["total"], "trained": AUTHORS["requires_grad"]}
    assert _counts(missing) == {"total": AUTHORS["total"], "trained": AUTHORS["trained_missing"]}
    with np.load(RECORD) as f:
        recorded = json.loads(str(f["meta"]))["parameters"]
    assert [recorded[k] for k in ("peer", "peer_requires_grad", "peer_trained_missing")] == list(AUTHORS.values())


@pytest.mark.parametrize(
    "key, value, message",
    [("width", 64, "score_channels: .*every level is a multiple of 32"),  # the first level is not the width
     ("score_channels", [32, 64, 128, 250], "score_channels: .*every level is a multiple of 32"),
     ("seq_len", 12, "kernel_size: .*multiple of 8"), ("width", 36, "heads: .*must divide width 36")],
)  # fmt: skip
def test_shapes_the_score_unet_cannot_take_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=rf"train\.imder\.model\.{message}"):
        load_config(None, {f"train.imder.model.{key}": value})


def test_the_second_stage_takes_the_projections_frozen_and_the_first_trains_them():
    full, missing = get_system("imder", TrainConfig()).stages
    assert [(link.stage, link.kind) for link in missing.links] == [("imder-full", "frozen"), ("imder-full", "init")]
    assert missing.links[0].modules == {"proj": "proj"} and "proj" not in missing.links[1].modules
    assert full.sampler == "none" and not full.links

    first = _model(frozen=False).train()
    batch = _batch({m: [1] * 4 for m in DIMS})
    first.losses(batch, first(batch))["task"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in first.proj.parameters())


def test_frozen_projections_get_no_gradient_and_never_change():
    model = _model().train()
    assert not model.proj.training and not any(p.requires_grad for p in model.proj.parameters())
    stage = get_system("imder", TrainConfig()).stages[-1]
    opt = make_optimizer(stage.optim, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for seed in range(2):
        batch = _batch(MIXED, seed=seed)
        terms = model.losses(batch, model(batch))
        opt.zero_grad(set_to_none=True)
        sum(stage.weights[k] * v for k, v in terms.items()).backward()
        assert all(p.grad is None for p in model.proj.parameters())
        _clip(stage.optim, model, model.trainable_parameters())
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("proj."))
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(("score.", "rec.", "head.")))


def test_only_a_missing_modality_is_recovered():
    """Rows that drop m and give another modality recover m (and score-match it, holding its truth);
    a given modality is its projection: other score and reconstruction nets leave the full row alone."""
    model = _model().eval()
    batch = _batch(MIXED)
    with torch.no_grad():
        out = model(batch)
        for m in DIMS:
            assert torch.equal(out.recovered_rows[m], ~batch.given[m]) and torch.equal(out.scored[m], ~batch.given[m])
            assert out.recovered[m][batch.given[m]].abs().sum() == 0
        for p in [*model.score.parameters(), *model.rec.parameters(), *model.cat.parameters()]:
            p.add_(torch.randn_like(p))
        changed = model(batch).logits
    assert torch.equal(changed[-1], out.logits[-1])  # the full row: nothing recovered
    assert not torch.isclose(changed[:-1], out.logits[:-1]).all(-1).any()  # each row missing a modality


@pytest.mark.parametrize("dropped", [("text",), ("audio",), ("video",), ("audio", "video"), ("text", "video")])
def test_a_missing_modality_is_never_read_for_the_prediction(dropped):
    """Noise in a dropped modality's features and padding changes no logit, whether the batch hides it
    (evaluation: `known` False) or holds its truth for the score-matching and reconstruction losses."""
    model = _model().eval()
    given = {m: [int(m not in dropped)] * 3 for m in DIMS}
    for known in (given, {m: [1] * 3 for m in DIMS}):
        clean = _batch(given, known)
        noisy = Batch(dict(clean.x), dict(clean.mask), clean.given, clean.known, clean.labels)
        for m in dropped:
            noisy.x[m] = 50 * torch.randn_like(clean.x[m])
            noisy.mask[m] = torch.ones_like(clean.mask[m])
        with torch.no_grad():
            a, b = model(clean), model(noisy)
        assert torch.equal(a.logits, b.logits)
    with torch.no_grad():  # ...while the truth does reach the training losses
        terms_a, terms_b = model.losses(clean, a), model.losses(noisy, b)
    assert terms_a["rec"] != terms_b["rec"]


def test_evaluation_sampling_repeats_and_training_sampling_draws_anew():
    model = _model()
    batch = _batch(MIXED)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(batch).logits, model(batch).logits)  # a generator of sample_seed each forward
        model.train()
        assert not torch.equal(model(batch).recovered["text"], model(batch).recovered["text"])


def test_bf16_autocast_forward_losses_and_backward_on_cpu():
    model = _model().train()
    batch = _batch(MIXED)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        terms = model.losses(batch, out)
    assert out.logits.dtype == torch.bfloat16  # autocast did run
    assert set(terms) == {"task", "score_t", "score_s", "score_v", "rec"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values()), terms
    sum(terms.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_a_row_giving_nothing_is_not_recovered_and_does_not_fail():
    model = _model().eval()
    batch = _batch({"text": [0, 1], "audio": [0, 0], "video": [0, 0]})
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out.logits).all() and not any(out.recovered_rows[m][0] for m in DIMS)


@pytest.mark.slow
def test_both_stages_train_and_write_the_table(tmp_path, cpu_bf16):
    """Both stages (the second on the batch schedule), selection and test predictions on a tiny store
    (one fold: every forward samples each missing modality), under CPU bf16 autocast; the
    projections pass from stage 1 to stage 2 unchanged."""
    mods = {"text": SyntheticModality(4, 3), "audio": SyntheticModality(6, 4),
            "video": SyntheticModality(3, 2, missing_rate=0.1)}  # fmt: skip
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, 60, mods, dtype="float32", seed=7, class_signal=0.8)
    args = ["--store", str(store), "--folds", "5", "--only-folds", "1", "--out", str(tmp_path / "runs"),
            "--system", "imder", "--set", "train.device=cpu", "--set", "train.amp=bf16"]  # fmt: skip
    model = {**TINY, "sampling_steps": 2}
    args += [a for k, v in model.items() for a in ("--set", f"train.imder.model.{k}={json.dumps(v)}")]
    for part in ("pretrain", "optim"):
        args += ["--set", f"train.imder.{part}.epochs=1", "--set", f"train.imder.{part}.batch_size=16"]
    r = CliRunner().invoke(train_app, args)
    assert r.exit_code == 0, r.output
    assert cpu_bf16  # the loops ran under autocast
    [run] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    md = (run / "results.md").read_text().split("\n## ")[0]  # Table 2, not the breakdowns
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith(("| {", "| Avg"))]
    assert rows == ["{t}", "{s}", "{v}", "{v,t}", "{s,v}", "{s,t}", "Avg.", "{s,v,t}"]
    assert json.loads((run / "system.json").read_text())["options"]["missingness"] == "batch-schedule"
    split = run / "seed0/fold1/split0"
    first = load_checkpoint(split / "imder-full/checkpoint.pt")[0]
    second = load_checkpoint(split / "imder/checkpoint.pt")[0]
    projections = [k for k in first if k.startswith("proj.")]
    assert projections and all(torch.equal(first[k], second[k]) for k in projections)  # frozen in stage 2
    assert any(not torch.equal(first[k], second[k]) for k in second if k.startswith("score."))  # trained on
