"""The stacked (all modalities at once) flows and reconstruction modules against each modality's own
module: the same values, log-determinants and gradients, on each modality's own rows."""

from __future__ import annotations

import pytest
import torch
from cmarr.train.model.flow import ModalityFlow
from cmarr.train.model.reconstruction import ReconstructionModule
from cmarr.train.model.stacked import RowStack, flows_forward, flows_inverse, reconstruct

from tests.random_modules import randomised

M, R, C, T = 3, 4, 6, 9


def _flows():
    return [randomised(lambda: ModalityFlow(C, steps=3, hidden=8), seed) for seed in range(M)]


def _recs():
    return [randomised(lambda: ReconstructionModule(C, blocks=2, reduction=2), 10 + seed) for seed in range(M)]


def _padding_mask():
    mask = torch.ones(M, R, T, dtype=torch.bool)
    mask[0, 1, 4:] = False
    mask[2, 3, 7:] = False
    return mask


@pytest.mark.parametrize("masked", [False, True])
def test_stacked_flows_equal_each_modality_s_own_flow(masked):
    flows = _flows()
    x = torch.randn(M, R, C, T, dtype=torch.float64)
    mask = _padding_mask() if masked else None
    z, logdet = flows_forward(flows, x, mask)
    back = flows_inverse(flows, z, mask)
    for m, flow in enumerate(flows):
        own_mask = None if mask is None else mask[m]
        z_own, logdet_own = flow(x[m], own_mask)
        torch.testing.assert_close(z[m], z_own, rtol=0, atol=1e-10)
        torch.testing.assert_close(logdet[m], logdet_own, rtol=0, atol=1e-10)
        torch.testing.assert_close(back[m], flow.inverse(z_own, own_mask), rtol=0, atol=1e-10)
    valid = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.unsqueeze(2).expand_as(x)
    torch.testing.assert_close(back[valid], x[valid], rtol=0, atol=1e-8)  # and the round trip itself


@pytest.mark.parametrize("masked", [False, True])
def test_stacked_reconstruction_equals_each_modality_s_own_module(masked):
    recs = _recs()
    x = torch.randn(M, R, C, T, dtype=torch.float64)
    mask = _padding_mask() if masked else None
    y = reconstruct(recs, x, mask)
    for m, rec in enumerate(recs):
        torch.testing.assert_close(y[m], rec(x[m], None if mask is None else mask[m]), rtol=0, atol=1e-10)


def test_gradients_reach_each_modality_s_own_parameters():
    """The stacked weights are rebuilt from the modules' parameters at every call: the gradients
    on those parameters equal the ones of running each modality alone."""
    flows, recs = _flows(), _recs()
    x = torch.randn(M, R, C, T, dtype=torch.float64)

    def loss_stacked():
        z, logdet = flows_forward(flows, x)
        return (reconstruct(recs, flows_inverse(flows, z.sin())) ** 2).sum() + logdet.sum()

    def loss_each():
        total = 0
        for m in range(M):
            z, logdet = flows[m](x[m], None)
            total = total + (recs[m](flows[m].inverse(z.sin(), None)) ** 2).sum() + logdet.sum()
        return total

    params = [p for module in (*flows, *recs) for p in module.parameters()]
    grads = []
    for loss in (loss_stacked, loss_each):
        grads.append(torch.autograd.grad(loss(), params))
    for stacked, each in zip(*grads):
        torch.testing.assert_close(stacked, each, rtol=1e-9, atol=1e-9)


def test_row_stack_keeps_each_modality_s_rows_apart():
    """Modalities with different rows (and one with none): each gets exactly its own rows back,
    computed as if alone, and zeros on the rows it does not have."""
    B = 5
    rows = [torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool), torch.tensor([0, 1, 0, 0, 0], dtype=torch.bool),
            torch.zeros(B, dtype=torch.bool)]  # fmt: skip
    stack = RowStack(rows)
    assert stack.size == 3 and stack.active == [0, 1]  # the modality without rows is not computed on
    values = [torch.randn(B, C, T, dtype=torch.float64) for _ in range(M)]
    flows = _flows()
    z, _ = flows_forward(stack.pick(flows), stack.gather(values))
    for m, (flow, z_m) in enumerate(zip(flows, stack.scatter(z))):
        own = rows[m]
        if own.any():
            torch.testing.assert_close(z_m[own], flow(values[m][own], None)[0], rtol=0, atol=1e-10)
        assert (z_m[~own] == 0).all()


def test_stacked_paths_under_cpu_autocast():
    """Flows run exactly as in fp32 under autocast (values, log-determinants, inverse); the
    reconstruction follows autocast."""
    flows = [f.float() for f in _flows()]
    recs = [r.float() for r in _recs()]
    x = torch.randn(M, R, C, T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, logdet = flows_forward(flows, x.bfloat16())
        back = flows_inverse(flows, z)
        y = reconstruct(recs, back)
    assert z.dtype == logdet.dtype == back.dtype == torch.float32
    z32, logdet32 = flows_forward(flows, x.bfloat16().float())  # no autocast
    for under_autocast, fp32 in [(z, z32), (logdet, logdet32), (back, flows_inverse(flows, z32))]:
        assert torch.equal(under_autocast, fp32)  # the flows ran exactly as in fp32
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
