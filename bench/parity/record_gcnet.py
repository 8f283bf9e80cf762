"""Record GCNet's outputs, losses and gradients from zeroQiaoba/GCNet's own classes (gcnet/model.py
GraphModel, gcnet/loss.py MaskedCELoss and MaskedReconLoss) on the parity case of
tests/parity_cases.py, as a small conversation batch, into tests/data/parity/gcnet.npz, for
tests/test_parity.py.

    PYTHONPATH=<torch_geometric> python3 bench/parity/record_gcnet.py /path/to/GCNet/gcnet [commit]

The peer's classes run unedited at cmarr's sizes and the README's settings (--hidden=200
--windowp=2 --windowf=2, LSTM base, no --time-attn), on the CPU, in eval mode (no dropout draw);
the case's weights are made on cmarr's model and copied in by name. The case's six rows are two
conversations (DIALOGS: 4 and 2 utterances, two speakers), one missing condition per row; each
row's utterance vector is the mean of its valid steps per modality (what cmarr's GCNet pools to),
concatenated A, L, V and zeroed where the condition drops it (train_gcnet.py's masked input).
The peer's relation numbering comes from iterating a set of names (batch_graphify's
edge_type_mapping, hash-seed dependent): it is read from the peer's own function and the
relation weights are copied in that order. Its recon loss reads umask (dialog, step) against the
reconstruction flattened (step, dialog) (GCNet's layout slip): recorded with cmarr's published
switch `recon_mask = "published"`; the padded steps' masks are 1 (no loss there). No clipping
(train_gcnet.py has none); the loss is ce + recon, as --loss-recon sums them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests import parity_cases as case  # noqa: E402

OUT = ROOT / "tests" / "data" / "parity"
SEED = 31  # weights; the features' seed is SEED + 1 (as every record)
DIALOGS = {"dialog": [0, 0, 0, 0, 1, 1], "speaker": [0, 1, 1, 0, 1, 0]}  # two conversations, two speakers
SWITCHES = {"gcnet": {"model": {"recon_mask": "published"}}}
ORDER = ("audio", "text", "video")
TEMPORAL = ("past", "now", "future")  # cmarr's relation order (train/model/gcnet.py)
PEER_MODULES = {"lstm": "lstm", "unused": "", "temporal": "graph_net_temporal", "speaker": "graph_net_speaker",
                "classifier": "smax_fc", "reconstruction": "linear_rec"}  # fmt: skip
GRAPH_PARTS = {"conv1": "conv1", "conv2": "conv2", "fusion": "grufusion", "attention": "matchatt.transform",
               "linear": "linear"}  # fmt: skip


def peer_name(name: str) -> str:
    """cmarr's parameter name -> the peer GraphModel's."""
    head, rest = name.split(".", 1)
    if head == "unused":
        return rest  # unused.gru.* is the peer's (unused) gru.*
    if head in ("temporal", "speaker"):
        part, tail = rest.split(".", 1)
        return f"{PEER_MODULES[head]}.{GRAPH_PARTS[part]}.{tail}"
    return f"{PEER_MODULES[head]}.{rest}"


def relation_order(graphify, graph: str) -> list[int]:
    """cmarr's relation index for each of the peer's (its edge_type_mapping in this process)."""
    feats = torch.zeros(2, 1, 1, 1)
    qmask = torch.zeros(1, 2)
    *_, mapping = graphify(feats, qmask, [2], 2, 2, 2, graph, True)
    cmarr = {n: k for k, n in enumerate(TEMPORAL)} if graph == "temporal" else {
        f"{a}{b}": 2 * a + b for a in (0, 1) for b in (0, 1)}  # fmt: skip
    return [cmarr[n] for n, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def conversations(x: dict[str, torch.Tensor], given: dict[str, torch.Tensor]):
    """The peer's inputs: features (T, D, F) complete and masked, their [A, L, V] mask (T, D, 3),
    qmask and umask (D, T), the dialog lengths, labels (D, T), and each row's (t, d)."""
    d = np.array(DIALOGS["dialog"])
    pos = np.array([int((d[:k] == d[k]).sum()) for k in range(len(d))])
    lengths = [int((d == j).sum()) for j in range(d.max() + 1)]
    T, D = max(lengths), len(lengths)
    vec = {m: x[m].sum(1) / torch.tensor(case.LENGTHS[m], dtype=torch.float32)[:, None] for m in ORDER}
    full = torch.cat([vec[m] for m in ORDER], -1)  # (6, F)
    keep = torch.stack([given[m] for m in ORDER], -1).float()  # (6, 3)
    masked = torch.cat([vec[m] * given[m][:, None] for m in ORDER], -1)
    feats, mfeats = torch.zeros(T, D, full.shape[1]), torch.zeros(T, D, full.shape[1])
    fmask = torch.ones(T, D, 3)  # padded steps: present (no recon loss there)
    qmask, umask, labels = torch.zeros(D, T), torch.zeros(D, T), torch.zeros(D, T, dtype=torch.long)
    for k in range(len(d)):
        feats[pos[k], d[k]], mfeats[pos[k], d[k]], fmask[pos[k], d[k]] = full[k], masked[k], keep[k]
        qmask[d[k], pos[k]], umask[d[k], pos[k]] = DIALOGS["speaker"][k], 1
        labels[d[k], pos[k]] = case.LABELS[k]
    return feats, mfeats, fmask, qmask, umask, lengths, labels, (pos, d)


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    import torch_geometric
    from graph import batch_graphify
    from loss import MaskedCELoss, MaskedReconLoss
    from model import GraphModel

    torch.manual_seed(0)
    stage, model = case.build("gcnet", switches=SWITCHES)
    c = model.cfg
    state = case.fill_weights(model, SEED)
    peer = GraphModel("LSTM", case.DIMS["audio"], case.DIMS["text"], case.DIMS["video"], c.hidden, c.hidden // 2,
                      n_speakers=2, window_past=c.window_past, window_future=c.window_future,
                      n_classes=case.N_CLASSES, dropout=c.dropout, time_attn=False, no_cuda=True)  # fmt: skip
    order = {g: relation_order(batch_graphify, g) for g in ("temporal", "speaker")}
    with torch.no_grad():
        for name, value in state.items():
            if name.endswith("conv1.weight"):
                value = value[order[name.split(".")[0]]]  # the peer's relation k is cmarr's order[k]
            peer.get_parameter(peer_name(name)).copy_(value)
    assert sum(p.numel() for p in peer.parameters()) == sum(p.numel() for p in model.parameters())
    peer.eval()

    batch = case.batch(SEED + 1, "six", dialogs=DIALOGS)
    feats, mfeats, fmask, qmask, umask, lengths, labels, (pos, d) = conversations(batch.x, batch.given)
    log_prob, rec, _ = peer([mfeats], qmask, umask, lengths)  # (T, D, C), [(T, D, F)]
    lp = log_prob.transpose(0, 1).contiguous().view(-1, log_prob.size(2))
    ce = MaskedCELoss()(lp, labels.view(-1), umask)
    dims = [case.DIMS[m] for m in ORDER]
    recon = MaskedReconLoss()(rec, [feats], [fmask], umask, *dims)
    peer.zero_grad(set_to_none=True)
    (ce + recon).backward()

    record = {"out.logits": log_prob[pos, d].detach().double().numpy(),
              "out.recon": rec[0][pos, d].detach().double().numpy(),
              "loss.ce": np.float64(ce.item()), "loss.recon": np.float64(recon.item())}  # fmt: skip
    for name in state:
        grad = peer.get_parameter(peer_name(name)).grad
        if grad is None:
            continue  # the unused GRU and nodal attention
        if name.endswith("conv1.weight"):
            grad = grad[np.argsort(order[name.split(".")[0]])]  # back to cmarr's relation order
        record[f"grad.{name}"] = case.digest(grad)
    commit = subprocess.run(["git", "-C", sys.argv[1], "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = sys.argv[2] if len(sys.argv) > 2 else commit.stdout.strip()
    meta = {
        "system": "gcnet", "peer": "zeroQiaoba/GCNet", "switches": SWITCHES, "peer_commit": commit or "unknown",
        "torch": torch.__version__, "torch_geometric": torch_geometric.__version__, "seed": SEED,
        "conditions": "six", "dialogs": DIALOGS, "clip": 0.0, "clip_mode": "norm",
        "relations": order, "loss_weights": {k: stage.weights[k] for k in ("ce", "recon")},
        "command": "PYTHONPATH=<torch_geometric> python3 bench/parity/record_gcnet.py <GCNet checkout>/gcnet [commit]",
    }  # fmt: skip
    record["meta"] = np.array(json.dumps(meta))
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "gcnet.npz", **record)
    print("gcnet", json.dumps(meta))


if __name__ == "__main__":
    main()
