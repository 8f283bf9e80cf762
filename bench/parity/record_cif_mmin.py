"""Record CIF-MMIN's outputs, losses and clipped gradients from ZhuoYulang/CIF-MMIN's own classes
(models/our/CIF_MMIN_model.py, its teacher models/utt_self_supervise_model.py) on the parity case
of tests/parity_cases.py, into tests/data/parity/cif-mmin.npz, for tests/test_parity.py.

    python3 bench/parity/record_cif_mmin.py /path/to/CIF-MMIN [commit]  # a checkout of ZhuoYulang/CIF-MMIN

As record_mmin.py (its helpers are used): the peer's model unedited, eval mode, the case's weights
copied in by name. Two monkeypatches: CIF_MMIN_model.py imports models.utt_AVL_model, absent from
every commit and unused (SYSTEMS.md 6.7): an empty stand-in module is registered under that name;
CIFMMINModel.load_pretrained_encoder reads a trained teacher and moves it to CUDA: here it builds
the same UttSelfSuperviseModel untrained (weights copied in after). Recorded with cmarr's
published-behaviour switch `conl_pooling = "last"` (SYSTEMS.md 6.8: the peer's stage-2 netConL
pools by its last state).
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_mmin as rec  # noqa: E402

case = rec.case
SWITCHES = {"cif_mmin": {"conl_pooling": "last"}}


def peer_name(cmarr_name: str) -> tuple[str, str]:
    """cmarr's names -> the peer's: specific.<m> / consistent.<m> are net{A,L,V} / netCon{A,L,V}
    (the teacher's on pretrained_encoder), the TextCNN's convs.0-2 its conv1-3; ae, classifier are
    netAE, netC."""
    _, prefix, head, rest = rec.teacher_split(cmarr_name)
    if head in ("specific", "consistent"):
        net, rest = rec.peer_name("encoders." + rest)
        return prefix + ("Con" if head == "consistent" else "") + net[3:], rest
    return {"ae": "netAE", "classifier": "netC"}[head], rest


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    sys.modules["models.utt_AVL_model"] = types.SimpleNamespace(UttAVLModel=None)  # the absent, unused import
    from models.our.CIF_MMIN_model import CIFMMINModel
    from models.utt_self_supervise_model import UttSelfSuperviseModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "parity").mkdir()
        extra = dict(run_idx="parity", image_dir=tmp, shared_dir=tmp, corpus_name="IEMOCAP", verbose=False)
        extra["batch_size"] = len(case.LABELS)

        def teacher_untrained(self, opt):
            self.pretrained_encoder = UttSelfSuperviseModel(rec.options(tmp, dropout_rate=0.3, isTrain=False, **extra))

        CIFMMINModel.load_pretrained_encoder = teacher_untrained
        stage, _ = case.build("cif-mmin", switches=SWITCHES)
        w = stage.weights
        peer = CIFMMINModel(rec.options(
            tmp, AE_layers="256,128,64", n_blocks=5, dropout_rate=0.5, pretrained_path=tmp, share_weight=False,
            ce_weight=w["ce"], mse_weight=w["imagination"], consistent_weight=w["consistent"], cycle_weight=1.0,
            **extra,
        ))  # fmt: skip
        losses = {"ce": "loss_CE", "imagination": "loss_mse", "consistent": "loss_consistent"}
        outputs = {"logits": "logits", "recon": "recon_fusion", "consistent": "consistent_miss"}
        rec.run("cif-mmin", peer, peer.model_names, losses, outputs, "six", 1.0, peer_name,
                "ZhuoYulang/CIF-MMIN", "record_cif_mmin.py", SWITCHES)  # fmt: skip


if __name__ == "__main__":
    main()
