"""Gradient clipping per sub-network (`clip_mode = "norm-per-module"`): each MMIN-family system clips
exactly the networks its peer's `backward` clips one by one (`for model in self.model_names:
clip_grad_norm_(net<model>.parameters(), clip)`), the modality encoders each alone."""

from __future__ import annotations

import pytest
import torch
from cmarr.shared.train_config import TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.stage import _clip
from cmarr.train.systems import get_system

# Per system and stage, the peer's `model_names` (each a `net<name>` clipped alone) and the cmarr
# module that is that network: AIM3-RUC/MMIN models/utt_fusion_model.py, mmin_model.py;
# ZhuoYulang/IF-MMIN models/utt_shared_model.py, IFMMIN_model.py; ZhuoYulang/CIF-MMIN
# models/utt_self_supervise_model.py, models/our/CIF_MMIN_model.py; zeroQiaoba/GCNet
# baseline-mmin/models/mmin_CRA_model.py.
ENCODERS = {"A": "encoders.audio", "L": "encoders.text", "V": "encoders.video"}
SPECIFIC = {"A": "specific.audio", "L": "specific.text", "V": "specific.video"}
CONSISTENT = {"ConA": "consistent.audio", "ConL": "consistent.text", "ConV": "consistent.video"}
PEER_NETS = {
    ("utt-fusion", 0): {**ENCODERS, "C": "classifier"},
    ("mmin", 1): {**ENCODERS, "C": "classifier", "AE": "ae", "AE_cycle": "ae_cycle"},
    ("if-mmin", 0): {**ENCODERS, "C": "classifier", "Shared": "shared"},
    ("if-mmin", 1): {**ENCODERS, "C": "classifier", "AE": "ae", "invariant": "invariant"},
    ("cif-mmin", 0): {
        **SPECIFIC,
        **CONSISTENT,
        "C": "classifier",
        "SharedA": "heads.audio",
        "SharedT": "heads.text",
        "SharedV": "heads.video",
    },  # fmt: skip
    ("cif-mmin", 1): {**SPECIFIC, **CONSISTENT, "C": "classifier", "AE": "ae"},
    ("cra", 0): {
        "A": "encoders.audio",
        "L": "encoders.text",
        "V": "encoders.video",
        "AA": "decoders.audio",
        "LL": "decoders.text",
        "VV": "decoders.video",
        "C": "classifier",
        "AE": "ae",
    },  # fmt: skip
}
DIMS = {"text": 6, "audio": 5, "video": 4}
LENGTHS = {"text": [3, 8, 5, 6, 2, 7], "audio": [9, 2, 14, 6, 5, 3], "video": [4, 3, 7, 2, 6, 5]}
GIVEN = {"text": [1, 0, 1, 1, 0, 1], "audio": [1, 1, 0, 1, 0, 0], "video": [0, 1, 1, 1, 1, 0]}


def _tiny_cfg() -> TrainConfig:
    cfg = TrainConfig().model_dump()
    cfg["mmin_family"].update(embedding=8, cls_layers=[8, 8])
    for name in ("mmin", "if_mmin", "cif_mmin"):
        cfg[name].update(ae_layers=[16, 8], blocks=2)
    cfg["cra"].update(ae_layers=[16, 8])
    return TrainConfig.model_validate(cfg)


def _batch(seed: int = 0) -> Batch:
    """Six rows under a missing condition each, with every modality's true features known."""
    g = torch.Generator().manual_seed(seed)
    x, mask = {}, {}
    for m, d in DIMS.items():
        T = max(LENGTHS[m])
        mask[m] = torch.arange(T)[None] < torch.tensor(LENGTHS[m])[:, None]
        x[m] = torch.randn(len(LENGTHS[m]), T, d, generator=g) * mask[m][..., None]
    given = {m: torch.tensor(v, dtype=torch.bool) for m, v in GIVEN.items()}
    known = {m: torch.ones(6, dtype=torch.bool) for m in DIMS}
    return Batch(x, mask, given, known, torch.tensor([0, 1, 2, 3, 1, 2]))


def _raw_gradients(system: str, stage_index: int):
    torch.manual_seed(0)
    stage = get_system(system, _tiny_cfg()).stages[stage_index]
    model = stage.build(DIMS, 4)
    model.freeze()
    model.train()
    batch = _batch()
    terms = model.losses(batch, model(batch))
    sum(stage.weights[k] * v for k, v in terms.items()).backward()
    return stage, model


def _clip_by_hand(grads: list[torch.Tensor], clip: float) -> list[torch.Tensor]:
    """torch's clip_grad_norm_ written out: scale by clip / (norm + 1e-6) when that is below 1."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    scale = min(1.0, clip / (float(norm) + 1e-6))
    return [g * scale for g in grads]


@pytest.mark.parametrize("system, stage_index", PEER_NETS)
def test_each_network_the_peer_clips_alone_is_clipped_alone(system, stage_index):
    stage, model = _raw_gradients(system, stage_index)
    nets = PEER_NETS[(system, stage_index)]
    trainable = {id(p) for p in model.trainable_parameters()}
    params = {name: list(model.get_submodule(path).parameters()) for name, path in nets.items()}
    covered = [id(p) for ps in params.values() for p in ps]
    assert sorted(covered) == sorted(trainable)  # the peer's networks are every trainable parameter, once
    raw = {name: [p.grad.clone() for p in ps] for name, ps in params.items()}
    clip = 1e-3  # below every network's gradient norm: each group is scaled
    optim = stage.optim.model_copy(update={"clip": clip})
    assert optim.clip_mode == "norm-per-module"
    _clip(optim, model, model.trainable_parameters())
    for name, ps in params.items():
        for p, want in zip(ps, _clip_by_hand(raw[name], clip)):
            assert torch.allclose(p.grad, want, rtol=1e-5, atol=1e-12), (system, name)


def test_the_encoders_clipped_jointly_would_differ():
    """The case the fix is for: MMIN's netA, netL, netV clipped as one group scale differently."""
    _, model = _raw_gradients("mmin", 1)
    nets = [list(model.get_submodule(ENCODERS[n]).parameters()) for n in ("A", "L", "V")]
    raw = [[p.grad.clone() for p in ps] for ps in nets]
    apart = [_clip_by_hand(g, 1e-3) for g in raw]
    joint = _clip_by_hand([g for gs in raw for g in gs], 1e-3)
    joint = [joint[: len(raw[0])], joint[len(raw[0]) : len(raw[0]) + len(raw[1])], joint[-len(raw[2]) :]]
    ratios = [float(torch.cat([g.flatten() for g in a]).norm() / torch.cat([g.flatten() for g in j]).norm())
              for a, j in zip(apart, joint)]  # fmt: skip
    assert max(abs(r - 1) for r in ratios) > 0.1
