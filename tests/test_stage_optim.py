"""The stage optimizer: fused Adam/AdamW on CPU and CUDA, the same update as torch's for-loop one."""

from __future__ import annotations

import pytest
import torch
from cmarr.shared.train_config import StageOptim
from cmarr.train.model.base import SystemModel
from cmarr.train.stage import make_optimizer
from torch import nn


class _Tiny(SystemModel):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Conv1d(5, 3, 3, padding=1)


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_fused_update_equals_the_for_loop_update(kind):
    optim = StageOptim(optimizer=kind, lr=1e-2, beta1=0.5, weight_decay=0.01)
    torch.manual_seed(0)
    fused_model = _Tiny()
    loop_model = _Tiny()
    loop_model.load_state_dict(fused_model.state_dict())
    fused = make_optimizer(optim, fused_model)
    assert fused.defaults["fused"] is True  # every parameter is a float CPU tensor
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    loop = cls(loop_model.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=0.01, foreach=False)
    x = torch.randn(4, 6)
    for _ in range(5):
        for model, opt in ((fused_model, fused), (loop_model, loop)):
            opt.zero_grad()
            model.b(model.a(x).unsqueeze(-1).expand(-1, -1, 7)).square().mean().backward()
            opt.step()
    for (name, p), q in zip(fused_model.named_parameters(), loop_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
    assert not torch.equal(fused_model.a.weight, _Tiny().a.weight)  # the steps moved the weights


def test_not_fused_where_torch_has_no_fused_kernel(monkeypatch):
    monkeypatch.setattr("cmarr.train.stage.FUSED_DEVICES", ("cuda",))  # as if the CPU had none
    opt = make_optimizer(StageOptim(lr=1e-4), _Tiny())
    assert not opt.defaults["fused"]
    assert opt.defaults["foreach"] is None  # torch's own default path


def test_fused_step_under_a_grad_scaler_skips_inf_and_unscales():
    """The CUDA fp16 path (GradScaler, unscale_ before clipping, then step) with the fused update,
    run on the CPU: an inf gradient skips the step, a finite one equals the unscaled update."""
    torch.manual_seed(0)
    model, reference = _Tiny(), _Tiny()
    reference.load_state_dict(model.state_dict())
    opt = make_optimizer(StageOptim(lr=1e-2), model)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, foreach=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x = torch.randn(4, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    scaler.scale(model.a(x).sum() * float("inf")).backward()
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # skipped
    assert scaler.get_scale() == 512.0

    opt.zero_grad()
    scaler.scale(model.a(x).square().mean()).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e6)  # clipping sees unscaled gradients
    scaler.step(opt)
    scaler.update()
    reference.a(x).square().mean().backward()
    ref_opt.step()
    torch.testing.assert_close(model.a.weight, reference.a.weight, rtol=1e-6, atol=1e-7)
