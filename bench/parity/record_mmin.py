"""Record utt-fusion's and MMIN's outputs, losses and clipped gradients from AIM3-RUC/MMIN's own
classes (models/utt_fusion_model.py, models/mmin_model.py) on the parity case of
tests/parity_cases.py, into tests/data/parity/<system>.npz, for tests/test_parity.py.

    python3 bench/parity/record_mmin.py /path/to/MMIN [commit]  # a checkout of AIM3-RUC/MMIN, branch master

The peer's models run unedited at cmarr's feature sizes, on the CPU, every module in eval mode
(no dropout draw to match); the weights are the case's (seeded, made on cmarr's model and copied
into the peer's nets by the name mapping below). One monkeypatch: MMINModel.load_pretrained_encoder
reads a trained teacher from disk and moves it to CUDA; here it builds the same UttFusionModel
untrained (its weights are then copied in like every other net's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests import parity_cases as case  # noqa: E402

OUT = ROOT / "tests" / "data" / "parity"
SEED = 31  # weights; the features' seed is SEED + 1
NETS = {"A": "audio", "L": "text", "V": "video"}


def peer_name(cmarr_name: str) -> tuple[str, str]:
    """cmarr's parameter name -> (peer net, its parameter name). The state dicts differ in the
    prefixes (cmarr's encoders.<modality> / teacher.<modality> / ae / ae_cycle / classifier are the
    peer's netA, netL, netV / pretrained_encoder.net* / netAE / netAE_cycle / netC) and in the
    TextCNN's convolutions (cmarr's convs.0-2, the peer's conv1-3); the rest is the same."""
    head, rest = cmarr_name.split(".", 1)
    if head in ("encoders", "teacher"):
        modality, rest = rest.split(".", 1)
        net = {v: k for k, v in NETS.items()}[modality]
        net = ("pretrained_encoder.net" if head == "teacher" else "net") + net
    else:
        net = {"ae": "netAE", "ae_cycle": "netAE_cycle", "classifier": "netC"}[head]
    if rest.startswith("convs."):
        k, tail = rest[len("convs.") :].split(".", 1)
        rest = f"conv{int(k) + 1}.{tail}"
    return net, rest


def teacher_split(cmarr_name: str) -> tuple[bool, str, str, str]:
    """(whether the name is under cmarr's teacher, the peer's net prefix there: pretrained_encoder.net
    for the teacher's, net otherwise; cmarr's module under it, the rest of the name)."""
    head, rest = cmarr_name.split(".", 1)
    teacher = head == "teacher"
    if teacher:
        head, rest = rest.split(".", 1)
    return teacher, "pretrained_encoder.net" if teacher else "net", head, rest


def options(tmp: str, **extra) -> SimpleNamespace:
    """The minimal opt namespace the peer's BaseModel and models read (scripts/CAP_*.sh values)."""
    base = dict(
        gpu_ids=[], isTrain=True, checkpoints_dir=tmp, name="parity", cuda_benchmark=False, cvNo=1,
        input_dim_a=case.DIMS["audio"], input_dim_l=case.DIMS["text"], input_dim_v=case.DIMS["video"],
        embd_size_a=128, embd_size_l=128, embd_size_v=128, embd_method_a="maxpool", embd_method_v="maxpool",
        cls_layers="128,128", bn=False, output_dim=case.N_CLASSES, lr=2e-4, beta1=0.5, weight_decay=0.0,
        modality="AVL",
    )  # fmt: skip
    return SimpleNamespace(**{**base, **extra})


def peer_net(peer, net: str) -> torch.nn.Module:
    """The peer's model is no nn.Module: its nets are attributes (the teacher's on another model)."""
    for part in net.split("."):
        peer = getattr(peer, part)
    return peer


def load(peer, state: dict[str, torch.Tensor], peer_name=peer_name) -> None:
    for name, value in state.items():
        net, rest = peer_name(name)
        with torch.no_grad():
            peer_net(peer, net).get_parameter(rest).copy_(value)


def peer_input(conditions: str) -> dict:
    x = case.features(SEED + 1)
    miss = np.array([[g[m][k] for m in ("audio", "video", "text")] for k in range(6)
                     for g in [case.given_rows(conditions)]], np.int64)  # fmt: skip
    return {"A_feat": x["audio"], "L_feat": x["text"], "V_feat": x["video"],
            "label": torch.tensor(case.LABELS), "missing_index": torch.from_numpy(miss)}  # fmt: skip


def run(system: str, peer, nets: list[str], losses: dict[str, str], outputs: dict[str, str], cond: str, clip,
        peer_name=peer_name, repo: str = "AIM3-RUC/MMIN", script: str = "record_mmin.py", switches=None,
        unweighted=(), peer_input=peer_input):  # fmt: skip
    stage, model = case.build(system, switches=switches)
    state = case.fill_weights(model, SEED)
    load(peer, state, peer_name)
    for n in nets:
        getattr(peer, "net" + n).eval()
    if hasattr(peer, "pretrained_encoder"):
        for n in NETS:
            getattr(peer.pretrained_encoder, "net" + n).eval()
    peer.set_input(peer_input(cond))
    peer.forward()
    for n in nets:
        getattr(peer, "net" + n).zero_grad(set_to_none=True)
    raw_norms = {}
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip_recording(params, max_norm, *a, **k):  # the peer's backward clips: note each norm
        params = list(params)
        norm = real_clip(params, max_norm, *a, **k)
        raw_norms[len(raw_norms)] = float(norm)
        return norm

    torch.nn.utils.clip_grad_norm_ = clip_recording
    try:
        peer.backward()
    finally:
        torch.nn.utils.clip_grad_norm_ = real_clip
    record = {f"out.{k}": getattr(peer, v).detach().double().numpy() for k, v in outputs.items()}
    scale = {k: stage.weights[k] if k in unweighted else 1.0 for k in losses}  # the record's terms: weighted
    record.update({f"loss.{k}": np.float64(scale[k] * getattr(peer, v).item()) for k, v in losses.items()})
    for name in state:
        net, rest = peer_name(name)
        if net.startswith("pretrained_encoder"):
            continue  # the frozen teacher
        grad = peer_net(peer, net).get_parameter(rest).grad
        record[f"grad.{name}"] = case.digest(grad)
    commit = subprocess.run(["git", "-C", sys.argv[1], "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = sys.argv[2] if len(sys.argv) > 2 else commit.stdout.strip()  # an archive: the commit as given
    meta = {
        "system": system, "peer": repo, "switches": switches or {}, "peer_commit": commit or "unknown",
        "torch": torch.__version__, "seed": SEED, "conditions": cond, "clip": clip,
        "peer_nets_clipped": nets, "unclipped_norms": list(raw_norms.values()),
        "loss_weights": {k: stage.weights[k] for k in losses},
        "command": f"python3 bench/parity/{script} <checkout of {repo}> [commit]",
    }  # fmt: skip
    record["meta"] = np.array(json.dumps(meta))
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{system}.npz", **record)
    print(system, json.dumps(meta))


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    from models.mmin_model import MMINModel
    from models.utt_fusion_model import UttFusionModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "parity").mkdir()  # the peer's save_dir's parent
        peer = UttFusionModel(options(tmp, dropout_rate=0.3))
        run("utt-fusion", peer, peer.model_names, {"ce": "loss_CE"}, {"logits": "logits"}, "full", 0.5)

        def teacher_untrained(self, opt):
            self.pretrained_encoder = UttFusionModel(options(tmp, dropout_rate=0.3, isTrain=False))

        MMINModel.load_pretrained_encoder = teacher_untrained
        stage, _ = case.build("mmin")
        w = stage.weights
        peer = MMINModel(options(
            tmp, AE_layers="256,128,64", n_blocks=5, dropout_rate=0.5, pretrained_path=tmp,
            ce_weight=w["ce"], mse_weight=w["imagination"], cycle_weight=w["cycle"], share_weight=False,
        ))  # fmt: skip
        losses = {"ce": "loss_CE", "imagination": "loss_mse", "cycle": "loss_cycle"}
        run("mmin", peer, peer.model_names, losses, {"logits": "logits", "recon": "recon_fusion"}, "six", 1.0)


if __name__ == "__main__":
    main()
