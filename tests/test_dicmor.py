"""DiCMoR+ on the system interface: the published parameter count, invertible flows, the exact
variant's inert parts, recovery as DiCMoR does it, a missing modality never read for the
prediction, bf16 autocast, and both stages trained end to end."""

from __future__ import annotations

import json

import pytest
import torch
from cmarr.shared.config import load_config
from cmarr.shared.errors import ConfigError
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.shared.train_config import TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.checkpoint import load_checkpoint
from cmarr.train.cli import train_app
from cmarr.train.model.dicmor import DiCMoR, DiCMoRModel
from cmarr.train.model.dicmor_flow import DiCMoRFlow
from cmarr.train.run import describe_system
from cmarr.train.systems import get_system
from typer.testing import CliRunner

CMARR_DIMS = {"text": 768, "audio": 768, "video": 342}
DIMS = {"text": 6, "audio": 8, "video": 5}
VARIANTS = ("glow", "dicmor-exact")
TINY = {"width": 8, "heads": 2, "layers": 2, "seq_len": 10, "flow_steps": 3, "flow_hidden": 8, "rcab_blocks": 2,
        "rcab_reduction": 4}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: on a busy shared CPU, a second intra-op thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(**changes) -> DiCMoRModel:
    return DiCMoRModel(**{**TINY, **changes})


def _batch(given: dict[str, list[int]], seed: int = 0, known: dict[str, list[int]] | None = None) -> Batch:
    """Random features of len(given[m]) rows with ragged lengths; `known` defaults to every row."""
    gen = torch.Generator().manual_seed(seed)
    B = len(next(iter(given.values())))
    x = {m: torch.randn(B, 7, d, generator=gen) for m, d in DIMS.items()}
    lengths = torch.randint(1, 8, (B,), generator=gen)
    mask = {m: torch.arange(7)[None] < lengths[:, None] for m in DIMS}
    rows = {m: torch.tensor(given[m], dtype=torch.bool) for m in DIMS}
    known = known or {m: [1] * B for m in DIMS}
    knows = {m: torch.tensor(known[m], dtype=torch.bool) for m in DIMS}
    return Batch(x, mask, rows, knows, torch.randint(0, 4, (B,), generator=gen))


# one row per condition: {t}, {s}, {v}, {v,t}, {s,v}, {s,t}, full
MIXED = {"text": [1, 0, 0, 1, 0, 1, 1], "audio": [0, 1, 0, 0, 1, 1, 1], "video": [0, 0, 1, 1, 1, 0, 1]}


# ---------------------------------------------------------------- size


def test_parameter_count_is_the_published_models_at_cmarrs_dims():
    """DiCMoR's own classes at 768/768/342, d = 32, 4 priors hold 3,692,468 parameters, 300,480 of them
    the projections (the team's SYSTEMS.md section 7.8): the exact variant holds the same, the
    projections frozen in stage 2 only; the glow variant lacks just the never-called parts."""
    cfg = TrainConfig().model_copy(update={"dicmor": TrainConfig().dicmor.model_copy(
        update={"model": DiCMoRModel(flow="dicmor-exact")})})  # fmt: skip
    full, missing = describe_system(get_system("dicmor", cfg), CMARR_DIMS, 4)["stages"]
    assert full["parameters"] == {"trainable": 3_692_468, "frozen": 0, "total": 3_692_468}
    assert missing["parameters"] == {"trainable": 3_692_468 - 300_480, "frozen": 300_480, "total": 3_692_468}
    d = 32
    block_priors, weight_linears = 3 * (d * 2 * d + 2 * d + 2 * d), 3 * (2 * d * 2 * d + 2 * d)
    glow = describe_system(get_system("dicmor", TrainConfig()), CMARR_DIMS, 4)["stages"][1]["parameters"]
    assert glow["total"] == 3_692_468 - block_priors - weight_linears and glow["frozen"] == 300_480


@pytest.mark.parametrize(
    "key, value, message",
    [("width", 7, "width: .*must be even"), ("width", 30, "heads: .*must divide width 30"),
     ("kernel_size", 60, "kernel_size: .*must not exceed seq_len 50")],
)  # fmt: skip
def test_shapes_that_cannot_be_built_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=rf"train\.dicmor\.model\.{message}"):
        load_config(None, {f"train.dicmor.model.{key}": value})


# ---------------------------------------------------------------- flows


def _perturbed_flow(variant: str, channels: int = 4, steps: int = 3) -> DiCMoRFlow:
    """A flow whose zero-initialised convolutions are not zero (else every coupling is the identity)."""
    torch.manual_seed(1)
    flow = DiCMoRFlow(channels, steps, hidden=8, variant=variant).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_flow_inverts_and_its_logdet_is_the_jacobians(variant):
    flow = _perturbed_flow(variant)
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    z, logdet = flow(x)
    assert torch.allclose(flow.inverse(z), x, atol=1e-10)
    for b in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0].reshape(-1), x[b])
        assert torch.allclose(torch.linalg.slogdet(jac.reshape(12, 12))[1], logdet[b], atol=1e-8)


def test_the_exact_flow_passes_half_the_channels_unchanged_and_the_glow_flow_does_not():
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    assert torch.equal(_perturbed_flow("dicmor-exact")(x)[0][:, :2], x[:, :2])
    assert not torch.allclose(_perturbed_flow("glow")(x)[0][:, :2], x[:, :2])


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_the_exact_variants_inert_parts_get_no_gradient(variant):
    """dicmor-exact: ActNorm, the 1x1 convolutions, the Glow block priors and `weight_*` never get a
    gradient; glow: ActNorm and the 1x1 convolutions do. The couplings learn in both."""
    torch.manual_seed(0)
    model = DiCMoR(DIMS, 4, _cfg(flow=variant)).train()
    batch = _batch(MIXED)
    sum(model.losses(batch, model(batch)).values()).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    inert = [n for n in grads if ".actnorm." in n or ".invconv." in n or "block_prior" in n or n.startswith("unused")]
    coupling = [n for n in grads if ".coupling." in n]
    assert inert and coupling
    if variant == "dicmor-exact":
        assert any(n.startswith("unused") for n in inert) and any("block_prior" in n for n in inert)
        assert all(grads[n] is None for n in inert)
    else:
        assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in inert)
    assert all(grads[n] is not None for n in coupling) and any(grads[n].abs().sum() > 0 for n in coupling)


# ---------------------------------------------------------------- recovery and missing modalities


@torch.no_grad()
def test_recovery_is_dicmors_one_flow_reverse_or_the_cat_of_two():
    """Per row: one modality given -> rec_m(F_m^-1(z_n)); two -> rec_m(cat_m([F_m^-1(z_n1), F_m^-1(z_n2)]))."""
    torch.manual_seed(0)
    model = DiCMoR(DIMS, 4, _cfg(flow="dicmor-exact")).eval()
    batch = _batch(MIXED)
    out = model(batch)
    for m in MODALITIES:
        sources = [n for n in MODALITIES if n != m]
        for r in range(batch.size):
            given = [n for n in sources if batch.given[n][r]]
            if batch.given[m][r]:
                assert not out.recovered_rows[m][r]
                continue
            back = [model.flow[m].inverse(out.z[n][r : r + 1]) for n in given]
            x_tilde = back[0] if len(back) == 1 else model.cat[m](torch.cat(back, 1))
            assert torch.allclose(out.recovered[m][r : r + 1], model.rec[m](x_tilde), atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("attention", ["causal-last", "full-mean"])
def test_a_missing_modality_is_never_read_for_the_prediction(variant, attention):
    """Noise in place of a dropped modality changes no logit, whether the batch hides it (evaluation:
    `known` is False) or holds its true features for the training losses (`known` True)."""
    torch.manual_seed(0)
    model = DiCMoR(DIMS, 4, _cfg(flow=variant, attention=attention)).eval()
    for dropped in [("text",), ("audio",), ("video",), ("audio", "video"), ("text", "video")]:
        given = {m: [int(m not in dropped)] * 3 for m in DIMS}
        for known in (given, {m: [1] * 3 for m in DIMS}):
            clean = _batch(given, known=known)
            noisy = Batch(dict(clean.x), dict(clean.mask), clean.given, clean.known, clean.labels)
            for m in dropped:
                noisy.x[m] = 50 * torch.randn_like(clean.x[m])
                noisy.mask[m] = torch.ones_like(clean.mask[m])
            with torch.no_grad():
                a, b = model(clean), model(noisy)
            assert torch.equal(a.logits, b.logits), dropped
        with torch.no_grad():  # ...while the true features do reach the reconstruction loss
            assert model.losses(clean, a)["rec"] != model.losses(noisy, b)["rec"]


def test_reconstruct_gives_the_true_projection_and_the_recovery_from_the_other_two():
    """Fig. 5's sets: `true` follows the dropped modality's features, the recovery never reads them."""
    torch.manual_seed(0)
    model = DiCMoR(DIMS, 4, _cfg()).eval()
    for m in MODALITIES:
        given = {n: [int(n != m)] * 4 for n in DIMS}
        batch = _batch(given)  # every modality's features known, m not given
        true, recovered = model.reconstruct(batch, m)
        assert true.shape == recovered.shape == (4, TINY["width"])
        with torch.no_grad():
            out = model(batch)
        assert torch.equal(recovered, out.recovered[m].mean(-1)) and recovered.abs().sum() > 0
        assert torch.equal(true, out.projected[m].mean(-1))
        noisy = Batch({**batch.x, m: 50 * torch.randn_like(batch.x[m])}, batch.mask, batch.given, batch.known,
                      batch.labels)  # fmt: skip
        true_noisy, recovered_noisy = model.reconstruct(noisy, m)
        assert torch.equal(recovered_noisy, recovered) and not torch.allclose(true_noisy, true)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_forward_losses_and_backward_on_cpu(variant):
    torch.manual_seed(0)
    model = DiCMoR(DIMS, 4, _cfg(flow=variant)).train()
    batch = _batch(MIXED)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        terms = model.losses(batch, out)
    assert out.logits.dtype == torch.bfloat16  # autocast did run
    assert all(z.dtype == torch.float32 for z in out.z.values())  # the flows did not
    assert set(terms) == {"task", "nll_t", "nll_s", "nll_v", "rec"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_a_row_giving_nothing_is_not_recovered_and_does_not_fail():
    torch.manual_seed(0)
    model = DiCMoR(DIMS, 4, _cfg()).eval()
    batch = _batch({"text": [0, 1], "audio": [0, 0], "video": [0, 0]})
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out.logits).all() and not any(out.recovered_rows[m][0] for m in MODALITIES)


# ---------------------------------------------------------------- both stages end to end


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_both_stages_train_and_write_the_table(tmp_path, variant, cpu_bf16):
    """Both stages, selection and test predictions on a tiny store, under CPU bf16 autocast."""
    mods = {"text": SyntheticModality(4, 3), "audio": SyntheticModality(6, 4),
            "video": SyntheticModality(3, 2, missing_rate=0.1)}  # fmt: skip
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, 60, mods, dtype="float32", seed=7, class_signal=0.8)
    args = [
        "--store",
        str(store),
        "--folds",
        "5",
        "--out",
        str(tmp_path / "runs"),
        "--system",
        "dicmor",
        "--set",
        "train.device=cpu",
        "--set",
        "train.amp=bf16",
        "--set",
        f"train.dicmor.model.flow={variant}",
    ]
    args += [a for k, v in TINY.items() for a in ("--set", f"train.dicmor.model.{k}={v}")]
    for part in ("pretrain", "optim"):
        args += ["--set", f"train.dicmor.{part}.epochs=1", "--set", f"train.dicmor.{part}.batch_size=8"]
    r = CliRunner().invoke(train_app, args)
    assert r.exit_code == 0, r.output
    assert cpu_bf16  # the loops ran under autocast
    [run] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    md = (run / "results.md").read_text().split("\n## ")[0]  # Table 2, not the breakdowns
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith(("| {", "| Avg"))]
    assert rows == ["{t}", "{s}", "{v}", "{v,t}", "{s,v}", "{s,t}", "Avg.", "{s,v,t}"]
    assert json.loads((run / "system.json").read_text())["options"]["flow"] == variant
    split = run / "seed0/fold1/split0"
    first = load_checkpoint(split / "dicmor-full/checkpoint.pt")[0]
    second = load_checkpoint(split / "dicmor/checkpoint.pt")[0]
    projections = [k for k in first if k.startswith("proj.")]
    assert projections and all(torch.equal(first[k], second[k]) for k in projections)  # frozen in stage 2
    assert any(not torch.equal(first[k], second[k]) for k in second if k.startswith("head."))  # the rest trained on
