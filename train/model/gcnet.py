"""GCNet (Lian et al., TPAMI 2023; zeroQiaoba/GCNet gcnet/model.py): graph completion over a
conversation's utterances, rebuilt from the published architecture.

Legend: N utterances of the batch (rows, whole dialogs, each in time order), D dialogs, T the
longest dialog's utterances, F = F_a + F_t + F_v the concatenated utterance vector, H the
sequential encoder's width per direction (`hidden`), G the graph width (`hidden // 2`).

One vector per utterance and modality (the masked mean of its valid steps, zeros where the
condition does not give it), concatenated [A, L, V]; a 2-layer bidirectional LSTM over each dialog
(run, as published, over the zero padding of the shorter dialogs); two graph networks over the
utterances, one with three temporal relations (past, now, future) and one with a relation per
(target speaker, source speaker) pair, edges within `window_past` / `window_future` utterances;
each is a relational GCN (mean per relation) then a GraphConv (sum), the node features
concatenated to their input, a 2-layer bidirectional LSTM over the dialog and a ReLU projection.
The two graph outputs are summed; a linear classifier and a linear reconstruction of F read them.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Literal

import numpy as np
import torch
from cmarr.shared.sections import Section
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.pooling import masked_mean
from cmarr.train.precision import full_precision
from pydantic import Field
from torch import nn
from torch.nn import functional as F

ORDER = ("audio", "text", "video")  # GCNet concatenates A, L, V
TEMPORAL = ("past", "now", "future")  # relation index of a temporal edge (target after, at, before its source)


class GCNetModel(Section):
    """GCNet's sizes and graph (train_gcnet.py's options; README: --hidden=200 --windowp=2 --windowf=2)."""

    hidden: int = Field(200, gt=1)  # D_e: the LSTM's width per direction; the graph width is hidden // 2
    window_past: int = Field(2, ge=-1)  # edges to utterances up to this many before; -1: all of them
    window_future: int = Field(2, ge=-1)  # and after
    speakers: int = Field(2, gt=0)  # speaker relations: speakers ** 2 (a dialog's later speakers share the last)
    dropout: float = Field(0.5, ge=0, lt=1)  # between the stacked LSTM layers
    # "published": train_gcnet's recon loss reads its utterance mask in the other layout (GCNet's bug)
    recon_mask: Literal["aligned", "published"] = "aligned"


class RelationalGraphConv(nn.Module):
    """RGCN layer (Schlichtkrull et al.), no bases: x_i W_root + b + sum_r mean_{j in N_r(i)} x_j W_r.
    x (N, F_in), edges (src, dst, rel) (E,) each -> (N, F_out)."""

    def __init__(self, in_dim: int, out_dim: int, relations: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(relations, in_dim, out_dim))
        self.root = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        bound = math.sqrt(6.0 / (in_dim + out_dim))  # glorot on the last two axes
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.root, -bound, bound)

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        n, r = x.shape[0], self.weight.shape[0]
        slot = rel * n + dst  # (E,) one (relation, target) pair
        degree = x.new_zeros(r * n).index_add_(0, slot, x.new_ones(len(slot)))  # edges per (relation, target)
        mean = x.new_zeros(r * n, x.shape[1]).index_add_(0, slot, x[src]) / degree.clamp(min=1)[:, None]  # (R*N, F_in)
        messages = torch.bmm(mean.view(r, n, -1), self.weight).sum(0)  # (N, F_out)
        return messages + x @ self.root + self.bias


class GraphConv(nn.Module):
    """Morris et al.'s GraphConv, sum aggregation: lin_rel(sum_{j in N(i)} x_j) + lin_root(x_i)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.lin_rel = nn.Linear(in_dim, out_dim)
        self.lin_root = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        summed = torch.zeros_like(x).index_add_(0, dst, x[src])  # (N, F_in)
        return self.lin_rel(summed) + self.lin_root(x)


class DialogGraph(nn.Module):
    """One of GCNet's two graph networks: RGCN -> GraphConv, [input, graph] per node, a 2-layer
    bidirectional LSTM over each dialog, ReLU(linear). `attention` is the published class's nodal
    attention (MatchingAttention 'general2'), built but not run: the published recipe has no
    --time-attn (it counts in the parameters, as in the authors' model)."""

    def __init__(self, in_dim: int, width: int, relations: int, dropout: float):
        super().__init__()
        out = in_dim + width
        self.conv1 = RelationalGraphConv(in_dim, width, relations)
        self.conv2 = GraphConv(width, width)
        self.fusion = nn.LSTM(out, out, num_layers=2, bidirectional=True, dropout=dropout)
        self.attention = nn.Linear(2 * out, 2 * out)  # inert (time_attn off)
        self.linear = nn.Linear(2 * out, out)

    def forward(self, nodes: torch.Tensor, edges: tuple[torch.Tensor, ...], layout) -> torch.Tensor:
        src, dst, rel = edges
        graph = self.conv2(self.conv1(nodes, src, dst, rel), src, dst)  # (N, G)
        h = to_dialogs(torch.cat([nodes, graph], -1), layout)  # (T, D, F_in + G)
        h, _ = self.fusion(h)  # (T, D, 2 (F_in + G))
        return F.relu(self.linear(h))  # (T, D, F_in + G)


def to_dialogs(rows: torch.Tensor, layout) -> torch.Tensor:
    """(N, C) rows -> (T, D, C), zero where a dialog has ended (the published padding)."""
    pos, dialog, steps, dialogs = layout
    out = rows.new_zeros(steps, dialogs, rows.shape[-1])
    out[pos, dialog] = rows
    return out


def dialog_layout(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(position in its dialog (N,), dialog (N,), T, D) from `batch.dialog` (rows of a dialog
    contiguous and in time order); without it the batch is one dialog."""
    n = batch.size
    device = batch.labels.device if batch.labels is not None else next(iter(batch.given.values())).device
    dialog = batch.dialog if batch.dialog is not None else torch.zeros(n, dtype=torch.long, device=device)
    d = dialog.cpu().numpy()
    starts = np.r_[0, np.flatnonzero(d[1:] != d[:-1]) + 1]
    lengths = np.diff(np.r_[starts, n])
    pos = np.arange(n) - np.repeat(starts, lengths)
    index = np.repeat(np.arange(len(starts)), lengths)  # dialogs numbered 0.. in batch order
    as_t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return as_t(pos), as_t(index), int(lengths.max(initial=1)), len(starts)


def dialog_edges(layout, speaker: np.ndarray, past: int, future: int, speakers: int, device):
    """Per graph (temporal, speaker) the (src, dst, rel) edges (E,) of GCNet's `batch_graphify`:
    source j to target i of one dialog for i - j in [-past, future] (-1: unbounded), self loops
    included; temporal relation past/now/future (TEMPORAL), speaker relation speaker(i) * S + speaker(j)."""
    pos, dialog, _, _ = (t.cpu().numpy() if torch.is_tensor(t) else t for t in layout)
    offset = np.flatnonzero(np.r_[True, dialog[1:] != dialog[:-1]])
    src, dst = [], []
    for k, lo in enumerate(offset):
        hi = offset[k + 1] if k + 1 < len(offset) else len(dialog)
        j, i = np.meshgrid(np.arange(lo, hi), np.arange(lo, hi), indexing="ij")
        ok = np.ones(j.shape, bool)
        if past >= 0:
            ok &= i - j >= -past
        if future >= 0:
            ok &= i - j <= future
        src.append(j[ok]), dst.append(i[ok])
    src, dst = np.concatenate(src), np.concatenate(dst)
    temporal = np.where(dst > src, 0, np.where(dst == src, 1, 2))
    spk = np.minimum(speaker, speakers - 1)
    by_speaker = spk[dst] * speakers + spk[src]
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.int64)).to(device)  # noqa: E731
    return (as_t(src), as_t(dst), as_t(temporal)), (as_t(src), as_t(dst), as_t(by_speaker))


class GCNet(SystemModel):
    """GCNet on cmarr's batches of whole dialogs (`reads_dialogs`): logits (N, C) per utterance and
    the reconstruction (N, F) of its concatenated utterance vector."""

    reads_missing_targets = True  # the reconstruction targets are the dropped modalities' true vectors
    reads_dialogs = True  # batches are whole dialogs in time order (StoreData.dialog_batches)

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: GCNetModel):
        super().__init__()
        self.dims, self.cfg = {m: dims[m] for m in ORDER}, cfg
        width, e, g = sum(self.dims.values()), cfg.hidden, cfg.hidden // 2
        self.lstm = nn.LSTM(width, e, num_layers=2, bidirectional=True, dropout=cfg.dropout)
        self.unused = nn.ModuleDict({"gru": nn.GRU(width, e, num_layers=2, bidirectional=True, dropout=cfg.dropout)})
        self.temporal = DialogGraph(2 * e, g, len(TEMPORAL), cfg.dropout)
        self.speaker = DialogGraph(2 * e, g, cfg.speakers**2, cfg.dropout)
        self.classifier = nn.Linear(2 * e + g, n_classes)
        self.reconstruction = nn.Linear(2 * e + g, width)

    def vectors(self, batch: Batch, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """[A, L, V] utterance vectors (N, F): each the mean of its valid steps, zero where not `rows`."""
        return torch.cat([masked_mean(batch.x[m], batch.mask[m] & rows[m][:, None]) for m in ORDER], -1)

    def forward(self, batch: Batch):
        layout = dialog_layout(batch)
        pos, dialog = layout[0], layout[1]
        speaker = batch.speaker.cpu().numpy() if batch.speaker is not None else np.zeros(batch.size, np.int64)
        c = self.cfg
        temporal, by_speaker = dialog_edges(layout, speaker, c.window_past, c.window_future, c.speakers, pos.device)
        h, _ = self.lstm(to_dialogs(self.vectors(batch, batch.given), layout))  # (T, D, 2H)
        nodes = h[pos, dialog]  # (N, 2H)
        hidden = self.temporal(nodes, temporal, layout) + self.speaker(nodes, by_speaker, layout)  # (T, D, 2H + G)
        hidden = hidden[pos, dialog]  # (N, 2H + G)
        return SimpleNamespace(logits=self.classifier(hidden), recon=self.reconstruction(hidden), layout=layout)

    def losses(self, batch: Batch, out) -> dict[str, torch.Tensor]:
        """ce: mean over the batch's utterances (MaskedCELoss); recon: per modality the squared error
        of the dropped modalities' reconstruction, summed and divided by the modality's width, the
        three added and divided by the utterances (MaskedReconLoss)."""
        with full_precision(batch.labels.device):
            target = self.vectors(batch, batch.known).float()
            recon = out.recon.float()
            weight = self._recon_weight(out.layout).to(recon.dtype)  # (N,)
            terms = {"ce": F.cross_entropy(out.logits.float(), batch.labels)}
            rec, lo = recon.new_zeros(()), 0
            for m in ORDER:
                hi = lo + self.dims[m]
                dropped = (batch.known[m] & ~batch.given[m]).to(recon.dtype) * weight
                rec = rec + (((recon[:, lo:hi] - target[:, lo:hi]) ** 2).sum(1) * dropped).sum() / self.dims[m]
                lo = hi
            terms["recon"] = rec / batch.size
        return terms

    def _recon_weight(self, layout) -> torch.Tensor:
        """1 per utterance; with `recon_mask = "published"`, train_gcnet's umask as MaskedReconLoss
        reads it: its (dialog, step) mask flattened dialog-major applied to the reconstruction
        flattened step-major, so an utterance at (t, d) takes the mask of entry t * D + d."""
        pos, dialog, steps, dialogs = layout
        if self.cfg.recon_mask != "published":
            return torch.ones_like(pos, dtype=torch.float32)
        lengths = torch.bincount(dialog, minlength=dialogs)
        flat = pos * dialogs + dialog  # (N,) the entry the published loss reads
        return (flat % steps < lengths[flat // steps]).float()
