"""CM-ARR component contracts: exact inverses, log-determinants, closed forms, padding, leakage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cmarr.shared.train_config import TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.losses import UDCL, supcon_loss, w2_distance
from cmarr.train.model.cmarr import ModelConfig
from cmarr.train.model.flow import ModalityFlow
from cmarr.train.model.pooling import masked_adaptive_pool
from cmarr.train.systems import get_system
from cmarr.train.systems.cmarr import CMARRConfig
from scipy.linalg import sqrtm

from tests.random_modules import randomised

TINY = ModelConfig(
    width=16,
    heads=2,
    latent_dim=8,
    latent_len=6,
    flow_steps=2,
    flow_hidden=8,
    rcab_blocks=1,
    rcab_reduction=4,
    fusion_heads=2,
    proj_dim=8,
    dropout=0.0,
)
DIMS = {"text": 5, "audio": 7, "video": 3}
LABELS = torch.tensor([0, 1, 2, 3])


def build_model(system: str, dims=DIMS, classes=4, model_cfg=TINY):
    """The (first stage's) model of a CM-ARR-family system at tiny sizes."""
    cfg = TrainConfig(cm_arr=CMARRConfig(model=model_cfg))
    return get_system(system, cfg).stages[0].build(dims, classes)


def Inputs(x, mask, given, known=None):  # noqa: N802 - the batch a test builds: `known` defaults to `given`
    return Batch(x, mask, given, dict(given) if known is None else known, LABELS[: len(next(iter(given.values())))])


def training(full: Batch, given: dict) -> Batch:
    """A training batch: `given` given, every modality of `full` known (loss targets)."""
    return Inputs(full.x, full.mask, given, known=full.given)


def _randomised_flow(channels=6, steps=3, seed=0) -> ModalityFlow:
    return randomised(lambda: ModalityFlow(channels, steps, hidden=8), seed)


def test_flow_inverse_roundtrip():
    flow = _randomised_flow()
    x = torch.randn(3, 6, 9, dtype=torch.float64)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    z, _ = flow(x, mask)
    back = flow.inverse(z, mask)
    valid = mask.unsqueeze(1).expand_as(x)
    assert torch.allclose(back[valid], x[valid], atol=1e-5)
    assert (back[~valid] == 0).all()


def test_flow_logdet_equals_autograd_jacobian():
    flow = _randomised_flow(channels=4, steps=2)
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, 4, 3), mask)[0].reshape(-1), x.reshape(-1))
    _, logdet = flow(x, mask)
    assert torch.allclose(logdet[0], torch.linalg.slogdet(jac)[1], atol=1e-8)


def test_flow_ignores_padding():
    flow = _randomised_flow()
    x = torch.randn(1, 6, 5, dtype=torch.float64)
    padded = torch.cat([x, 7.0 * torch.randn(1, 6, 4, dtype=torch.float64)], -1)  # garbage in the padding
    mask = torch.tensor([[True] * 5 + [False] * 4])
    z1, ld1 = flow(x, torch.ones(1, 5, dtype=torch.bool))
    z2, ld2 = flow(padded, mask)
    assert torch.allclose(z1, z2[..., :5], atol=1e-10) and torch.allclose(ld1, ld2, atol=1e-10)


def test_w2_matches_the_general_closed_form():
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=(2, 5)), rng.normal(size=(3, 5))
    sig_a, sig_b = rng.uniform(0.2, 2, (2, 5)), rng.uniform(0.2, 2, (3, 5))
    got = w2_distance(*(torch.tensor(v) for v in (mu_a, sig_a, mu_b, sig_b))).numpy()
    for i in range(2):
        for j in range(3):
            S1, S2 = np.diag(sig_a[i] ** 2), np.diag(sig_b[j] ** 2)
            root = sqrtm(S2)
            w2 = np.sum((mu_a[i] - mu_b[j]) ** 2) + np.trace(S1 + S2 - 2 * np.real(sqrtm(root @ S1 @ root)))
            assert got[i, j] == pytest.approx(w2, rel=1e-8)


def test_supcon_matches_a_hand_computation():
    e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    t = 0.5
    s = (e @ e.T / t).numpy()
    # anchor 0: positive 1, others {1, 2, 3}; anchor 1: positive 0; anchor 2: positive 3; anchor 3: positive 2
    pairs = [(0, 1), (1, 0), (2, 3), (3, 2)]
    expected = np.mean([-(s[i, j] - np.log(sum(np.exp(s[i, k]) for k in range(4) if k != i))) for i, j in pairs])
    assert supcon_loss(e, labels, t).item() == pytest.approx(expected, rel=1e-5)


def test_udcl_prefers_aligned_pairs():
    """A batch whose modality pairs coincide scores lower than the same batch shuffled."""
    from cmarr.train.model.uncertainty import Gaussians

    torch.manual_seed(0)
    mu, sig = torch.randn(8, 4) * 5, torch.rand(8, 4) + 0.5
    g = lambda m, s: Gaussians(m[:, None], s.log()[:, None], m, s)  # noqa: E731
    present = {"a": torch.ones(8, dtype=torch.bool), "b": torch.ones(8, dtype=torch.bool)}
    align = UDCL(a_init=-0.5)
    aligned = align({"a": g(mu, sig), "b": g(mu, sig)}, present)
    perm = torch.randperm(8)
    shuffled = align({"a": g(mu, sig), "b": g(mu[perm], sig[perm])}, present)
    assert aligned < shuffled


def test_masked_adaptive_pool_is_padding_free():
    x = torch.arange(10.0).view(1, 1, 10)
    full = masked_adaptive_pool(x[..., :4], torch.ones(1, 4, dtype=torch.bool), 6)
    padded = masked_adaptive_pool(x, torch.tensor([[True] * 4 + [False] * 6]), 6)
    assert torch.equal(full, padded)
    assert torch.allclose(
        masked_adaptive_pool(x, torch.ones(1, 10, dtype=torch.bool), 5), torch.tensor([[[0.5, 2.5, 4.5, 6.5, 8.5]]])
    )


def _inputs(B=4, extra_pad=0, seed=0, given=None):
    g = torch.Generator().manual_seed(seed)
    lengths = {"text": [3, 5, 1, 4], "audio": [9, 6, 7, 2], "video": [2, 4, 3, 1]}
    x, mask = {}, {}
    for m, f in DIMS.items():
        T = max(lengths[m]) + extra_pad
        x[m] = torch.randn(B, T, f, generator=g)
        mask[m] = torch.arange(T)[None] < torch.tensor(lengths[m])[:, None]
        x[m] = x[m] * mask[m].unsqueeze(-1)
    av = given or {m: torch.ones(B, dtype=torch.bool) for m in DIMS}
    return Inputs(x, mask, av)


def _pad_with_garbage(inp: Inputs, extra: int) -> Inputs:
    x = {m: torch.cat([v, 5 * torch.randn(v.shape[0], extra, v.shape[2])], 1) for m, v in inp.x.items()}
    mask = {m: torch.cat([v, torch.zeros(v.shape[0], extra, dtype=torch.bool)], 1) for m, v in inp.mask.items()}
    return Inputs(x, mask, inp.given)


@pytest.mark.parametrize("variant", ["cm-arr", "baseline"])
def test_padding_changes_no_output_or_loss(variant):
    torch.manual_seed(0)
    model = build_model(variant, DIMS, 4, TINY).eval()
    cond = {
        "text": torch.tensor([1, 0, 1, 0], dtype=torch.bool),
        "audio": torch.tensor([0, 1, 1, 0], dtype=torch.bool),
        "video": torch.tensor([1, 1, 0, 1], dtype=torch.bool),
    }
    full = _inputs()
    padded = _pad_with_garbage(full, 5)
    with torch.no_grad():
        a, b = training(full, cond), training(padded, cond)
        out_a, out_b = model(a), model(b)
        la, lb = model.losses(a, out_a), model.losses(b, out_b)
    assert torch.allclose(out_a.logits, out_b.logits, atol=1e-5)
    for k in la:
        assert torch.allclose(la[k], lb[k], atol=1e-5), k


@pytest.mark.parametrize("variant", ["cm-arr", "baseline"])
@pytest.mark.parametrize("dropped", ["text", "audio", "video"])
def test_a_dropped_modality_is_provably_unused(variant, dropped):
    """Replacing the dropped modality's inputs by noise (even with a 'valid' mask) changes nothing."""
    torch.manual_seed(0)
    model = build_model(variant, DIMS, 4, TINY).eval()
    given = {m: torch.full((4,), m != dropped) for m in DIMS}
    clean = _inputs(given=given)
    noisy = Inputs(dict(clean.x), dict(clean.mask), given)
    noisy.x[dropped] = 100 * torch.randn_like(clean.x[dropped])
    noisy.mask[dropped] = torch.ones_like(clean.mask[dropped])
    with torch.no_grad():
        assert torch.equal(model(clean).logits, model(noisy).logits)


def test_variants_switch_the_model_however_they_are_chosen():
    assert not build_model("no-attention", DIMS, 4, TINY).umc["text"].attention
    assert build_model("cm-arr", DIMS, 4, TINY).umc["text"].attention
    assert build_model("point", DIMS, 4, TINY).cfg.alignment == "point"
    assert type(build_model("baseline", DIMS, 4, TINY)).__name__ == "Baseline"


# ---------------------------------------------------------------- mixed precision, variants, fusion


VARIANTS = ["cm-arr", "baseline", "no-udcl", "no-spcl", "no-attention", "point"]


def _partial_condition(B=4):
    return {
        "text": torch.tensor([1, 0, 1, 0], dtype=torch.bool)[:B],
        "audio": torch.tensor([0, 1, 1, 0], dtype=torch.bool)[:B],
        "video": torch.tensor([1, 1, 0, 1], dtype=torch.bool)[:B],
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_and_predicts_under_cpu_autocast(variant):
    """The default GPU path (bf16 autocast) on the CPU: forward with modalities missing, every loss,
    backward, an optimiser step and a prediction; all finite, and the losses come out in fp32."""
    torch.manual_seed(0)
    model = build_model(variant, DIMS, 4, TINY)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    full = _inputs()
    inp = Inputs(full.x, full.mask, _partial_condition())
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batch = training(full, _partial_condition())
        out = model(batch)
        terms = model.losses(batch, out)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values()), terms
    sum(terms.values()).backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        probs = model(inp).logits.float().softmax(-1)
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(-1), torch.ones(4), atol=1e-3)


def test_flow_round_trip_under_autocast_matches_fp32():
    flow = _randomised_flow(channels=8, steps=4).float()
    x = torch.randn(3, 8, 10)
    mask = torch.ones(3, 10, dtype=torch.bool)
    z32, ld32 = flow(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, ld = flow(x, mask)
        back = flow.inverse(z, mask)
    assert z.dtype == torch.float32 and ld.dtype == torch.float32
    assert torch.allclose(z, z32, atol=1e-5, rtol=1e-5) and torch.allclose(ld, ld32, atol=1e-5, rtol=1e-5)
    assert (back - x).abs().max() / x.abs().max() < 1e-5


def test_point_variant_is_deterministic_and_has_no_variance_head():
    torch.manual_seed(0)
    model = build_model("point", DIMS, 4, TINY).train()  # dropout is 0 in TINY
    assert all(umc.to_logsig is None for umc in model.umc.values())
    full = _inputs()
    batch = training(full, _partial_condition())
    a, b = model(batch), model(batch)
    assert torch.equal(a.logits, b.logits)
    assert all(g.sigma is None for g in a.gaussians.values())
    distribution = build_model("cm-arr", DIMS, 4, TINY).train()
    assert not torch.equal(distribution(batch).logits, distribution(batch).logits)  # it samples


def test_reconstruction_target_is_the_projection_of_the_mean_without_gradient():
    torch.manual_seed(0)
    model = build_model("cm-arr", DIMS, 4, TINY).train()
    full = _inputs()
    out = model(training(full, _partial_condition()))
    for m in DIMS:
        g = model.umc[m](full.x[m], full.mask[m])
        expected = model.proj[m](g.mu_seq, full.mask[m])
        assert not out.rec_target[m].requires_grad
        assert torch.allclose(out.rec_target[m], expected, atol=1e-6)
        assert not torch.allclose(out.projected[m], expected, atol=1e-3)  # the prediction path samples


@pytest.mark.parametrize("fusion, cross, selfs, queries", [("paper", 2, 1, {"text"}), ("all-queries", 6, 3, set(DIMS))])
def test_fusion_blocks_and_queries_per_option(fusion, cross, selfs, queries):
    cfg = TINY.model_copy(update={"fusion": fusion})
    for variant in ("cm-arr", "baseline"):
        f = build_model(variant, DIMS, 4, cfg).fusion
        assert len(f.cross) == cross
        assert (len(f.self_attn) if isinstance(f.self_attn, torch.nn.ModuleDict) else 1) == selfs
        used = {f.query} if hasattr(f, "query") else {k.split("_")[0] for k in f.cross}
        assert used == queries


def test_paper_fusion_reads_speech_and_video_only_as_keys():
    """With the text as the only query, the output is the text steps' pooled attention over the others."""
    from cmarr.train.model.fusion import TextQueryFusion

    torch.manual_seed(0)
    f = TextQueryFusion(8, list(DIMS), heads=2, dropout=0.0).eval()
    seqs = {m: torch.randn(2, 5, 8) for m in DIMS}
    masks = {m: torch.ones(2, 5, dtype=torch.bool) for m in DIMS}
    base = f(seqs, masks)
    assert base.shape == (2, 16)
    for m in ("audio", "video"):
        changed = dict(seqs, **{m: torch.randn(2, 5, 8)})
        assert not torch.allclose(f(changed, masks), base)


# ---------------------------------------------------------------- losses against hand computations


def test_gaussian_nll_matches_the_closed_form():
    from cmarr.train.model.flow import gaussian_nll

    rng = np.random.default_rng(0)
    z, mean, logdet = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3)), np.array([0.7, -1.2])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    got = gaussian_nll(*(torch.tensor(v) for v in (z, mean, logdet, mask))).numpy()
    for i in range(2):
        valid = z[i][:, mask[i]]  # (D, T_valid)
        n = valid.size
        sq = ((valid - mean[i][:, None]) ** 2).sum()
        expected = (0.5 * sq + 0.5 * n * np.log(2 * np.pi) - logdet[i]) / n
        assert got[i] == pytest.approx(expected, rel=1e-10)


def test_reconstruction_loss_is_the_mean_square_over_valid_steps_of_dropped_rows():
    from cmarr.train.losses import reconstruction_loss

    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(3, 2, 5)), rng.normal(size=(3, 2, 5))
    mask = np.ones((3, 5), bool)
    mask[2, 3:] = False
    rows = np.array([False, True, True])
    got = reconstruction_loss(*(torch.tensor(v) for v in (pred, target, mask, rows))).item()
    diffs = [((pred[1] - target[1]) ** 2).ravel(), ((pred[2][:, :3] - target[2][:, :3]) ** 2).ravel()]
    assert got == pytest.approx(np.concatenate(diffs).mean(), rel=1e-10)
    assert reconstruction_loss(*(torch.tensor(v) for v in (pred, target, mask, np.zeros(3, bool)))).item() == 0.0


def test_udcl_matches_a_hand_computed_symmetric_infonce():
    from cmarr.train.model.uncertainty import Gaussians

    rng = np.random.default_rng(2)
    mu = {m: rng.normal(size=(3, 4)) for m in ("a", "b")}
    sig = {m: rng.uniform(0.5, 1.5, size=(3, 4)) for m in ("a", "b")}
    g = {m: Gaussians(None, None, torch.tensor(mu[m]), torch.tensor(sig[m])) for m in mu}
    present = {m: torch.ones(3, dtype=torch.bool) for m in mu}
    a, b, tau = -0.3, 2.0, 0.5
    align = UDCL(a_init=a, b_init=b, tau_init=tau).double()
    got = align(g, present).item()
    d2w = ((mu["a"][:, None] - mu["b"][None]) ** 2).sum(-1) + ((sig["a"][:, None] - sig["b"][None]) ** 2).sum(-1)
    logits = (a * d2w + b) / tau  # (3, 3): row i = modality a of utterance i against b of every utterance

    def ce(lg):
        return np.mean([-(lg[i, i] - np.log(np.exp(lg[i]).sum())) for i in range(len(lg))])

    assert got == pytest.approx(ce(logits) + ce(logits.T), rel=1e-8)


def test_no_mask_is_exactly_an_all_valid_mask():
    """CM-ARR's pooled sequences have no padding: flows, likelihood and reconstruction skip the
    masking then, with bit-identical results."""
    from cmarr.train.model.flow import gaussian_nll
    from cmarr.train.model.reconstruction import ReconstructionModule

    flow = _randomised_flow().float()
    rec = ReconstructionModule(6, blocks=2, reduction=2)
    x, ones = torch.randn(3, 6, 7), torch.ones(3, 7, dtype=torch.bool)
    (z1, ld1), (z2, ld2) = flow(x, ones), flow(x, None)
    assert torch.equal(z1, z2) and torch.equal(ld1, ld2)
    assert torch.equal(flow.inverse(z1, ones), flow.inverse(z1, None))
    assert torch.equal(rec(x, ones), rec(x, None))
    mean = torch.randn(3, 6)
    assert torch.equal(gaussian_nll(z1, mean, ld1, ones), gaussian_nll(z1, mean, ld1, None))
