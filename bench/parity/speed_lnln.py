"""One LNLN training step, cmarr's model against Haoyu-ha/LNLN's own LNLN class and MultimodalLoss,
on the same batch, one thread: forward, losses, backward, (no clipping: LNLN has none), AdamW;
alternating, the median of several; into bench/results/peer-speed-lnln.md.

    python3 bench/parity/speed_lnln.py /tmp/peers/LNLN [--batch 16] [--repeats 5]
    python3 bench/parity/speed_lnln.py /tmp/peers/LNLN --batch 64 --repeats 3  # the published batch: the file

The batch: `--batch` utterances at cmarr's feature widths (768/768/342) and the peer's fixed
lengths (text 50, audio 500, video 500), each row a seeded number of valid steps (a fifth of the
length up to all of it). Both models are built as record_lnln.py builds them (cmarr's weights
copied into the peer; the peer's BERT an identity: both read the 768-d text features) and compute
the same thing: before timing, one forward of each under the same noise is checked to agree.
Timed, cmarr's step draws its own training noise inside its forward, as its trainer runs it; the
peer's step reads the noisy input its data loader would have drawn (made once, outside the timing).
Both losses are CE for the task (the peer's MSE made K-way) plus l_cc, l_adv, l_rec at the
published weights (MultimodalLoss's, for the peer).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_lnln as rec  # noqa: E402
import side_by_side  # noqa: E402

case = rec.case


def lnln_batch(size: int, lengths: dict[str, int], seed: int = 0):
    """cmarr's Batch of `size` rows (every modality given and known), each as long as its length at most."""
    from cmarr.train.batch import Batch

    g = np.random.default_rng(seed)
    x, mask = {}, {}
    for m, L in lengths.items():
        steps = g.integers(L // 5, L + 1, size)
        mask[m] = torch.from_numpy(np.arange(L)[None] < steps[:, None])
        x[m] = torch.from_numpy(g.standard_normal((size, L, case.DIMS[m]), np.float32)) * mask[m][..., None]
    every = {m: torch.ones(size, dtype=torch.bool) for m in lengths}
    return Batch(x, mask, every, dict(every), torch.from_numpy(g.integers(0, case.N_CLASSES, size)))


def peer_inputs(batch, noise):
    """The peer's (complete, incomplete) inputs in its order (vision, audio, language) under `noise`."""
    order = (("video", "vision"), ("audio", "audio"), ("text", "language"))
    complete = {p: batch.x[m] for m, p in order}  # already zero off the valid steps, and at the fixed length
    incomplete = {p: batch.x[m] * noise.keep[m][..., None] for m, p in order}
    return complete, incomplete


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("peer")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    import cmarr.train.systems.lnln  # noqa: F401  registers the system
    from cmarr.train.stage import make_optimizer

    stage, model = case.build("lnln")
    peer, loss_fn = rec.build_peer(args.peer, model.cfg)
    rec.load(peer, {n: p.detach() for n, p in model.named_parameters()})
    model.train(), peer.train()
    batch = lnln_batch(args.batch, model.lengths)
    torch.manual_seed(0)
    noise = model.draw_noise(batch.mask)  # the peer's loader's noise, drawn once
    complete, incomplete = peer_inputs(batch, noise)
    order = rec.PEER_ORDER
    w = stage.weights
    B = args.batch

    def peer_losses(out):
        effective = torch.cat([torch.ones(B * 8), torch.zeros(B * 8)]).long()  # h_d's tokens, then the clean ones
        label = {"sentiment_labels": torch.zeros(B, case.N_CLASSES), "effectiveness_labels": effective,
                 "completeness_labels": 1.0 - noise.rate["text"][:, None]}  # fmt: skip
        parts = loss_fn(out, label)
        return (w["task"] * F.cross_entropy(out["sentiment_preds"], batch.labels) + w["completeness"] * parts["l_cc"]
                + w["adversarial"] * parts["l_adv"] + w["rec"] * parts["l_rec"])  # fmt: skip

    # the same computation: one forward each under the same noise
    with torch.no_grad():
        mine, theirs = model(batch, noise), peer(tuple(complete[k] for k in order), tuple(incomplete[k] for k in order))
    worst = (mine.logits - theirs["sentiment_preds"]).abs().max().item()
    assert worst < 1e-4, f"cmarr's and the peer's logits differ by {worst}"

    opt = make_optimizer(stage.optim, model)
    peer_opt = torch.optim.AdamW(peer.parameters(), lr=stage.optim.lr, weight_decay=stage.optim.weight_decay)

    def peer_step():  # train.py's order: forward, loss, backward, step, zero_grad
        out = peer(tuple(complete[k] for k in order), tuple(incomplete[k] for k in order))
        peer_losses(out).backward()
        peer_opt.step()
        peer_opt.zero_grad()

    times = side_by_side.alternate(side_by_side.cmarr_step(model, stage, opt, batch), peer_step, args.repeats)
    L = model.lengths
    side_by_side.report(
        "lnln", "LNLN: one training step, cmarr vs the authors' code",
        f"python3 bench/parity/speed_lnln.py <checkout of Haoyu-ha/LNLN> --batch {args.batch} --repeats {args.repeats}",
        f"Batch: {args.batch} utterances, fixed lengths text {L['text']}, audio {L['audio']}, video {L['video']} "
        "(valid steps a fifth of the length to all of it); 768/768/342 features, D 128, 8 tokens; the peer's BERT "
        "an identity (both read BERT features); forward, losses, backward, AdamW; logits of one forward under the "
        f"same noise agree (largest difference {worst:.1e});",
        times,
    )  # fmt: skip


if __name__ == "__main__":
    main()
