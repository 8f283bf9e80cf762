"""One IMDer training step of the missing stage, cmarr's model against mdswyz/IMDer's own IMDER, on
the same batch, one thread: forward (score matching and 100-step sampling of the missing modality,
refinement, fusion), losses, backward, clip_grad_value_ 1.0, Adam; alternating, the median of
several after a warm-up; into bench/results/peer-speed-imder.md.

    python3 bench/parity/speed_imder.py /tmp/peers/IMDer [--batch 32] [--repeats 5] [--missing text]

The batch: `--batch` rows (config.json's MOSI batch 32) of 50 steps (IMDer's aligned length: cmarr's
masked adaptive pooling is then the identity) of 768/768/342 features, every row missing `--missing`
(IMDER.py draws one missing pattern per batch; python's random is seeded before each peer step so
that it drops the same modality), its true features held for the losses. Both in train mode
(dropout on), the case's weights in both (record_imder.py's mapping), the second stage's frozen
projections (the peer computes them under no_grad), the peer pointed at the CPU as in the record.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_imder as rec  # noqa: E402
import side_by_side  # noqa: E402

case = rec.case
PEER_INDEX = {"text": 0, "video": 1, "audio": 2}  # IMDER's modal_idx


def python_seed_dropping(missing: str) -> int:
    """A seed of python's random under which IMDER's sample([0, 1, 2], 2) leaves out `missing`."""
    for seed in range(100):
        random.seed(seed)
        if PEER_INDEX[missing] not in random.sample([0, 1, 2], 2):
            return seed
    raise AssertionError(missing)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("peer")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--missing", choices=rec.MODALITIES, default="text")
    args = p.parse_args()
    torch.set_num_threads(1)
    from cmarr.train.batch import Batch
    from cmarr.train.stage import make_optimizer

    Model, Trainer, _ = rec.peer_classes(args.peer)
    stage, model = case.build("imder", modalities=rec.MODALITIES)
    cfg = model.cfg
    peer_args = rec.options(cfg)
    torch.manual_seed(0)
    peer, trainer = Model(peer_args), Trainer(peer_args)
    rec.load(peer, case.fill_weights(model, rec.SEED, rec.SMALL))
    model.freeze()
    model.train(), peer.train()
    opt = make_optimizer(stage.optim, model)
    peer_opt = torch.optim.Adam(peer.parameters(), lr=stage.optim.lr)  # IMDER.py do_train's optimiser

    B, L = args.batch, cfg.seq_len
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(B, L, case.DIMS[m], generator=g) for m in rec.MODALITIES}
    labels = torch.randint(0, case.N_CLASSES, (B,), generator=g)
    rows = torch.ones(B, dtype=torch.bool)
    given = {m: rows & (m != args.missing) for m in rec.MODALITIES}
    mask = {m: torch.ones(B, L, dtype=torch.bool) for m in rec.MODALITIES}
    batch = Batch(x, mask, given, {m: rows for m in rec.MODALITIES}, labels)
    py_seed = python_seed_dropping(args.missing)

    def peer_step():  # IMDER.py do_train's step
        peer_opt.zero_grad()
        random.seed(py_seed)
        res = peer(x["text"], x["audio"], x["video"], num_modal=2)
        task = trainer.criterion(res["M"], labels)
        loss = task + 0.1 * (res["loss_score_l"] + res["loss_score_v"] + res["loss_score_a"] + res["loss_rec"])
        loss.backward()
        torch.nn.utils.clip_grad_value_([q for q in peer.parameters() if q.requires_grad], stage.optim.clip)
        peer_opt.step()

    times = side_by_side.alternate(side_by_side.cmarr_step(model, stage, opt, batch), peer_step, args.repeats)
    side_by_side.report(
        "imder", "IMDer: one missing-stage training step, cmarr vs the authors' code (mdswyz/IMDer)",
        f"python3 bench/parity/speed_imder.py <checkout of mdswyz/IMDer> --batch {B} --repeats {args.repeats} "
        f"--missing {args.missing}",
        f"Batch: {B} rows of {L} steps, 768/768/342 features, every row missing {args.missing} (its truth held "
        f"for the losses); d = {cfg.width}, {cfg.layers} crossmodal layers, score U-Net {cfg.score_channels}, "
        f"{cfg.sampling_steps} Euler-Maruyama steps, {cfg.rcab_blocks} RCAB blocks; train mode; forward, losses, "
        "backward, clip_grad_value_ 1.0, Adam;",
        times,
    )  # fmt: skip


if __name__ == "__main__":
    main()
