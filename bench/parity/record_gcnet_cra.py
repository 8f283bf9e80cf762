"""Record CRA's outputs, losses and clipped gradients from zeroQiaoba/GCNet's own class
(baseline-mmin/models/mmin_CRA_model.py) on the parity case of tests/parity_cases.py, into
tests/data/parity/cra.npz, for tests/test_parity.py.

    python3 bench/parity/record_gcnet_cra.py /path/to/GCNet/baseline-mmin [commit]  # zeroQiaoba/GCNet

As record_mmin.py (its helpers are used): the peer's model unedited, eval mode, the case's weights
copied in by name; no monkeypatch. GCNet's CRA reads one vector per utterance and modality: the
mean of the case's valid steps is given to it (what cmarr's CRA pools its sequences to). Its loss
terms are unweighted (the model weights their sum): the record multiplies them by cmarr's weights.
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
    """cmarr's encoders.<m> / decoders.<m> are net{A,L,V} / net{AA,LL,VV}; ae, classifier are netAE,
    netC; inside each the names are the same."""
    head, rest = cmarr_name.split(".", 1)
    if head in ("encoders", "decoders"):
        modality, rest = rest.split(".", 1)
        letter = {v: k for k, v in rec.NETS.items()}[modality]
        return "net" + (letter * 2 if head == "decoders" else letter), rest
    return {"ae": "netAE", "classifier": "netC"}[head], rest


def pooled_input(conditions: str) -> dict:
    """The case's inputs, each row's sequence averaged over its valid steps (B, F)."""
    seq = rec.peer_input(conditions)
    for key, m in (("A_feat", "audio"), ("L_feat", "text"), ("V_feat", "video")):
        lengths = torch.tensor(case.LENGTHS[m], dtype=torch.float32)[:, None]
        seq[key] = seq[key].sum(1) / lengths
    return seq


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    from models.mmin_CRA_model import MMINCRAModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "parity").mkdir()
        stage, _ = case.build("cra")
        w = stage.weights
        peer = MMINCRAModel(rec.options(
            tmp, AE_layers="256,128", n_blocks=2, dropout_rate=0.5, dataset_mode="iemocapfour_miss",
            ce_weight=w["ce"], mse_weight=w["recon"], verbose=False,
        ))  # fmt: skip
        losses, outputs = {"ce": "loss_ce", "recon": "loss_recon"}, {"logits": "logits", "recon": "recon_fusion"}
        rec.run("cra", peer, peer.model_names, losses, outputs, "six", 5.0, peer_name, "zeroQiaoba/GCNet",
                "record_gcnet_cra.py", unweighted=("ce", "recon"), peer_input=pooled_input)  # fmt: skip


if __name__ == "__main__":
    main()
