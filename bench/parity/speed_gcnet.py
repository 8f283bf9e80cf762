"""One GCNet training step, cmarr's model against zeroQiaoba/GCNet's own GraphModel, on the same
conversation batch, one thread: forward, losses, backward, (no clipping: GCNet has none), Adam;
alternating, the median of several; into bench/results/peer-speed-gcnet.md.

    PYTHONPATH=<torch_geometric> python3 bench/parity/speed_gcnet.py /path/to/GCNet/gcnet [--dialogs 8] [--repeats 7]

The batch: `--dialogs` conversations of IEMOCAP-like lengths (20 to 80 utterances, seeded), two
speakers alternating with repeats, six-condition masks per utterance, cmarr's sizes (768/768/342)
and the README's model (hidden 200, windows 2). cmarr's step reads the batch's sequences (audio 60,
text 20, video 30 steps per utterance at most) and pools them in its forward; the peer's gets the
same pooled vectors in its conversation layout (its loader pools before training), plus its own
graph building (batch_graphify) in its forward.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_gcnet as rec  # noqa: E402
import side_by_side  # noqa: E402

case = rec.case
STEPS = {"audio": 60, "text": 20, "video": 30}


def conversation_batch(dialogs: int, seed: int = 0):
    """cmarr's Batch of `dialogs` conversations and its peer inputs."""
    from cmarr.train.batch import Batch

    g = np.random.default_rng(seed)
    lengths = g.integers(20, 81, dialogs)
    n = int(lengths.sum())
    dialog = np.repeat(np.arange(dialogs), lengths)
    speaker = (np.cumsum(g.random(n) < 0.7) % 2).astype(np.int64)  # turns, sometimes the same speaker again
    x, mask = {}, {}
    for m in rec.ORDER:
        steps = g.integers(1, STEPS[m] + 1, n)
        mask[m] = torch.from_numpy(np.arange(STEPS[m])[None] < steps[:, None])
        x[m] = torch.from_numpy(g.standard_normal((n, STEPS[m], case.DIMS[m]), np.float32)) * mask[m][..., None]
    six = np.array(case.SIX)[g.integers(0, 6, n)]  # [A, V, L]
    given = {m: torch.from_numpy(six[:, k].astype(bool)) for m, k in (("audio", 0), ("video", 1), ("text", 2))}
    known = {m: torch.ones(n, dtype=torch.bool) for m in rec.ORDER}
    labels = torch.from_numpy(g.integers(0, case.N_CLASSES, n))
    batch = Batch(x, mask, given, known, labels, torch.from_numpy(dialog), torch.from_numpy(speaker))
    return batch, lengths


def peer_inputs(batch, lengths):
    """The peer's (features, masked features, [A, L, V] mask, qmask, umask, lengths, labels)."""
    pos = np.concatenate([np.arange(k) for k in lengths])
    d = batch.dialog.numpy()
    T, D = int(lengths.max()), len(lengths)
    vec = {m: (batch.x[m] * batch.mask[m][..., None]).sum(1) / batch.mask[m].sum(1, keepdim=True) for m in rec.ORDER}
    full = torch.cat([vec[m] for m in rec.ORDER], -1)
    masked = torch.cat([vec[m] * batch.given[m][:, None] for m in rec.ORDER], -1)
    keep = torch.stack([batch.given[m] for m in rec.ORDER], -1).float()
    feats, mfeats = torch.zeros(T, D, full.shape[1]), torch.zeros(T, D, full.shape[1])
    fmask = torch.ones(T, D, 3)
    qmask, umask, labels = torch.zeros(D, T), torch.zeros(D, T), torch.zeros(D, T, dtype=torch.long)
    feats[pos, d], mfeats[pos, d], fmask[pos, d] = full, masked, keep
    qmask[d, pos], umask[d, pos], labels[d, pos] = batch.speaker.float(), 1.0, batch.labels
    return feats, mfeats, fmask, qmask, umask, [int(k) for k in lengths], labels


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("peer")
    p.add_argument("--dialogs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, args.peer)
    from cmarr.train.stage import make_optimizer
    from loss import MaskedCELoss, MaskedReconLoss
    from model import GraphModel

    torch.manual_seed(0)
    stage, model = case.build("gcnet")
    c = model.cfg
    peer = GraphModel("LSTM", case.DIMS["audio"], case.DIMS["text"], case.DIMS["video"], c.hidden, c.hidden // 2,
                      n_speakers=2, window_past=c.window_past, window_future=c.window_future,
                      n_classes=case.N_CLASSES, dropout=c.dropout, time_attn=False, no_cuda=True)  # fmt: skip
    model.train(), peer.train()
    opt = make_optimizer(stage.optim, model)
    peer_opt = torch.optim.Adam(peer.parameters(), lr=stage.optim.lr, weight_decay=stage.optim.weight_decay)
    batch, lengths = conversation_batch(args.dialogs)
    feats, mfeats, fmask, qmask, umask, lens, labels = peer_inputs(batch, lengths)
    dims = [case.DIMS[m] for m in rec.ORDER]
    ce_loss, rec_loss = MaskedCELoss(), MaskedReconLoss()

    def peer_step():
        peer_opt.zero_grad()
        log_prob, recon, _ = peer([mfeats], qmask, umask, lens)
        lp = log_prob.transpose(0, 1).contiguous().view(-1, log_prob.size(2))
        loss = ce_loss(lp, labels.view(-1), umask) + rec_loss(recon, [feats], [fmask], umask, *dims)
        loss.backward()
        peer_opt.step()

    times = side_by_side.alternate(side_by_side.cmarr_step(model, stage, opt, batch), peer_step, args.repeats)
    side_by_side.report(
        "gcnet", "GCNet: one training step, cmarr vs the authors' code",
        f"PYTHONPATH=<torch_geometric> python3 bench/parity/speed_gcnet.py <GCNet>/gcnet --dialogs {args.dialogs} "
        f"--repeats {args.repeats}",
        f"Batch: {args.dialogs} dialogs, {int(lengths.sum())} utterances (longest {int(lengths.max())}); "
        "768/768/342 features, hidden 200, windows 2; forward, losses, backward, Adam;",
        times,
    )  # fmt: skip


if __name__ == "__main__":
    main()
