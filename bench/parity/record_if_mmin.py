"""Record IF-MMIN's outputs, losses and clipped gradients from ZhuoYulang/IF-MMIN's own classes
(models/IFMMIN_model.py, its teacher models/utt_shared_model.py) on the parity case of
tests/parity_cases.py, into tests/data/parity/if-mmin.npz, for tests/test_parity.py.

    python3 bench/parity/record_if_mmin.py /path/to/IF-MMIN [commit]  # a checkout of ZhuoYulang/IF-MMIN

As record_mmin.py (its helpers are used): the peer's model unedited, eval mode, the case's weights
copied in by name. One monkeypatch: IFMMINModel.load_pretrained_encoder reads a trained teacher
and moves it to CUDA; here it builds the same UttSharedModel untrained (weights copied in after).
`run_idx` names no `V0...` variant, so SharedEncoder is its default (Linear, LeakyReLU twice), the
one cmarr builds. The invariant weight is cmarr's stage weight (100, the script's intent; the
published code runs with its flag's default 1: `published_invariant_weight`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_mmin as rec  # noqa: E402

case = rec.case


def peer_name(cmarr_name: str) -> tuple[str, str]:
    """cmarr's names -> the peer's: encoders.<m> / teacher.encoders.<m> are net{A,L,V} /
    pretrained_encoder.net{A,L,V}; invariant / teacher.shared (Sequential 0, 2) are netinvariant /
    pretrained_encoder.netShared (netshared.shared_1, shared_2); ae, classifier are netAE, netC."""
    teacher, prefix, head, rest = rec.teacher_split(cmarr_name)
    if head in ("invariant", "shared"):
        k, tail = rest.split(".", 1)
        return prefix + ("Shared" if teacher else "invariant"), f"netshared.shared_{int(k) // 2 + 1}.{tail}"
    if head == "encoders":
        net, rest = rec.peer_name("encoders." + rest)
        return prefix + net[3:], rest
    return {"ae": "netAE", "classifier": "netC"}[head], rest


def main() -> None:
    sys.argv[1:2] = [sys.argv[1]]
    sys.path.insert(0, sys.argv[1])
    from models.IFMMIN_model import IFMMINModel
    from models.utt_shared_model import UttSharedModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "parity").mkdir()
        extra = dict(run_idx="parity", image_dir=tmp, shared_dir=tmp)

        def teacher_untrained(self, opt):
            self.pretrained_encoder = UttSharedModel(rec.options(tmp, dropout_rate=0.3, isTrain=False, **extra))

        IFMMINModel.load_pretrained_encoder = teacher_untrained
        stage, _ = case.build("if-mmin")
        w = stage.weights
        peer = IFMMINModel(rec.options(
            tmp, AE_layers="256,128,64", n_blocks=5, dropout_rate=0.5, pretrained_path=tmp, share_weight=False,
            ce_weight=w["ce"], mse_weight=w["imagination"], invariant_weight=w["invariant"], cycle_weight=1.0, **extra,
        ))  # fmt: skip
        losses = {"ce": "loss_CE", "imagination": "loss_mse", "invariant": "loss_invariant"}
        outputs = {"logits": "logits", "recon": "recon_fusion", "invariant": "invariant_miss"}
        rec.run("if-mmin", peer, peer.model_names, losses, outputs, "six", 1.0, peer_name,
                "ZhuoYulang/IF-MMIN", "record_if_mmin.py")  # fmt: skip


if __name__ == "__main__":
    main()
