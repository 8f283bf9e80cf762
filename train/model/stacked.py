"""CM-ARR's flows and reconstruction modules of all modalities, run as one batched computation.

Each modality owns its flow (`flow.py`) and reconstruction module (`reconstruction.py`); their own
`forward` methods are the readable reference (DiCMoR and single-modality callers use them). Run
one modality after another, a training step spends most of its time in small kernels: 32 flow
steps x 3 modalities of Conv1d over 16 rows x 50 steps, each followed by a few elementwise ops,
at about 15 GFLOP/s on a 2-core CPU whose matmul reaches 110 (bench/train_cpu.py). Here the M
modalities' parameters are stacked per layer into (M, ...) weights, rebuilt at every call from the
modules' own parameters (so gradients reach them and the state dict is unchanged), sequences are
laid out channels-last (M, R, T, C), and every convolution is one batched matmul (`baddbmm`) over
an im2col of its input: a third of the kernels, each three times larger. ActNorm is folded into
the invertible 1x1 convolution that follows it (one matmul instead of two elementwise ops and one
matmul). Measured: each part 1.3-1.8x faster (bench/results/stacked.md), a training step about 1.4x;
the longest batch's peak memory 1.82 GB (1.71 before; bench/results/train.md). A convolution as one
matmul to every tap's output plus shifted adds (no im2col) was 1.09x slower and saved 0.02 GB.
tests/test_stacked.py checks parity with the modules' own forward (values, log-determinants,
gradients, padding, rows).

Legend: M modalities (those with rows: `RowStack.active`), B batch, R rows per modality (each
modality's rows gathered to a common count by `RowStack`), T steps, C channels, D the common
width. `mask` (M, R, T) bool is True on valid steps, or None when every step is valid (CM-ARR's
pooled sequences).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from cmarr.train.model.flow import ActNorm, AffineCoupling, InvConv1x1, ModalityFlow
from cmarr.train.model.reconstruction import ChannelAttention, ReconstructionModule, ResidualChannelAttentionBlock
from cmarr.train.precision import at_least_fp32, full_precision, scatter_rows
from torch import nn
from torch.nn import functional as F

# ------------------------------------------------------------------ rows and layout


class RowStack:
    """Each modality's rows of a batch, gathered to a common count R (the largest of the
    modalities' counts). Only the modalities with rows are computed on (`active`, `pick`); a
    modality with fewer rows than R fills its remaining slots with row 0, computed on and dropped
    again by `scatter`: no slot of one row ever mixes with another's (every op here is row-wise),
    so the rows kept are exactly what computing each modality alone would give.

    `rows`: M tensors (B,) bool. `size` is R (0: nothing to compute)."""

    def __init__(self, rows: Sequence[torch.Tensor]):
        self.rows = rows
        index = [r.nonzero().squeeze(1) for r in rows]  # each (count_m,)
        self.active = [m for m, i in enumerate(index) if len(i)] or [0]  # one at least: shapes for `scatter`
        self.counts = [len(i) for i in index]
        self.size = max(self.counts)
        self._padded = torch.stack([F.pad(i, (0, self.size - len(i))) for i in self.pick(index)])  # (A, R)

    def pick(self, items: Sequence) -> list:
        """The items (one per modality) of the active modalities, in order."""
        return [items[m] for m in self.active]

    def gather(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        """M tensors (B, ...) -> (A, R, ...), A the active modalities."""
        return torch.stack([v[i] for v, i in zip(self.pick(values), self._padded)])

    def scatter(self, stacked: torch.Tensor) -> list[torch.Tensor]:
        """(A, R, ...) -> M tensors (B, ...): each active modality's own rows in place, zeros elsewhere
        and for the modalities without rows, in `stacked`'s dtype."""
        batch, slot = self.rows[0].shape[0], {m: a for a, m in enumerate(self.active)}
        return [
            scatter_rows(rows, stacked[slot[m], :count], batch)
            if m in slot
            else stacked.new_zeros((batch, *stacked.shape[2:]))
            for m, (rows, count) in enumerate(zip(self.rows, self.counts))
        ]


def _zero_padded(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x (M, R, T, C) with padded steps zeroed; unchanged when `mask` is None."""
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(M, R, C, T) -> contiguous (M, R, T, C)."""
    return x.transpose(2, 3).contiguous()


# ------------------------------------------------------------------ convolution as a batched matmul


def _stack(tensors) -> torch.Tensor:
    return torch.stack(list(tensors))


def _stacked_conv(convs: Sequence[nn.Conv1d]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """M Conv1d of the same shape (stride 1, padding k // 2, odd k) -> weight (M, k Cin, Cout), bias
    (M, 1, Cout) and k. Row j Cin + c of the weight multiplies input channel c at offset j - k // 2."""
    weight = _stack(c.weight for c in convs)  # (M, Cout, Cin, k)
    M, c_out, c_in, k = weight.shape
    return weight.permute(0, 3, 2, 1).reshape(M, k * c_in, c_out), _stack(c.bias for c in convs).unsqueeze(1), k


def _im2col(x: torch.Tensor, k: int) -> torch.Tensor:
    """(M, R, T, C) -> (M, R T, k C): each step's k neighbours (zeros past either end), the order
    of `_stacked_conv`'s weight rows."""
    M, R, T, C = x.shape
    if k == 1:
        return x.reshape(M, R * T, C)
    padded = F.pad(x, (0, 0, k // 2, k // 2))
    return torch.cat([padded[:, :, j : j + T] for j in range(k)], -1).reshape(M, R * T, k * C)


def _conv(x: torch.Tensor, conv: tuple[torch.Tensor, torch.Tensor, int]) -> torch.Tensor:
    """The stacked Conv1d `conv` (from `_stacked_conv`) on x (M, R, T, Cin) -> (M, R, T, Cout)."""
    weight, bias, k = conv
    M, R, T, _ = x.shape
    return torch.baddbmm(bias, _im2col(x, k), weight).view(M, R, T, -1)


# ------------------------------------------------------------------ flows


def _actnorm(actnorms: Sequence[ActNorm]) -> tuple[torch.Tensor, torch.Tensor]:
    """The M ActNorms' log-scales s and shifts b, each (M, C)."""
    return _stack(a.logs.view(-1) for a in actnorms), _stack(a.bias.view(-1) for a in actnorms)


def _actnorm_invconv(actnorms: Sequence[ActNorm], invconvs: Sequence[InvConv1x1]):
    """ActNorm then the 1x1 convolution, folded: W((x + b) e^s) = (W diag(e^s)) x + W diag(e^s) b.
    Returns the folded weight (M, C, C) (applied as x @ weight^T), the bias (M, 1, C) and
    log|det| per step (M,)."""
    logs, shift = _actnorm(actnorms)
    w = _stack(i.weight for i in invconvs)  # (M, C, C)
    folded = w * logs.exp().unsqueeze(1)  # scales column c by e^{s_c}
    bias = torch.bmm(shift.unsqueeze(1), folded.transpose(1, 2))  # (M, 1, C)
    return folded, bias, logs.sum(1) + torch.linalg.slogdet(w)[1]


def _coupling_scale_shift(couplings: Sequence[AffineCoupling], xa: torch.Tensor, mask):
    """The coupling subnets on xa (M, R, T, C/2): scale and shift (M, R, T, C - C/2) each, padded
    steps re-zeroed after every layer (as `AffineCoupling._subnet`)."""
    layers = [_stacked_conv([c.net[i] for c in couplings]) for i in range(3)]
    h = _zero_padded(torch.relu(_conv(xa, layers[0])), mask)
    h = _zero_padded(torch.relu(_conv(h, layers[1])), mask)
    logs, t = _zero_padded(_conv(h, layers[2]), mask).chunk(2, dim=-1)
    return torch.sigmoid(logs + 2.0) + 1e-4, t


def _flow_layers(flows: Sequence[ModalityFlow]):
    """Per flow step: the M ActNorms, 1x1 convolutions and couplings."""
    steps = [list(f.steps) for f in flows]
    if len({len(s) for s in steps}) != 1:
        raise ValueError("stacked flows need the same number of steps")
    return [tuple([s[i + j] for s in steps] for j in range(3)) for i in range(0, len(steps[0]), 3)]


def flows_forward(flows: Sequence[ModalityFlow], x: torch.Tensor, mask: torch.Tensor | None = None):
    """Every modality's flow at once: x (M, R, D, T) any float dtype, flow m on x[m] -> z (M, R, D, T)
    fp32 and log|det dz/dx| (M, R) fp32; equal to `flows[m](x[m], mask[m])` up to float rounding.
    Runs in fp32 with autocast disabled (see `precision.py`)."""
    with full_precision(x.device):
        h = _zero_padded(_channels_last(at_least_fp32(x)), mask)
        M, R, T, C = h.shape
        valid = h.new_full((M, R), T) if mask is None else mask.sum(-1).to(h.dtype)
        logdet = h.new_zeros(M, R)
        for actnorms, invconvs, couplings in _flow_layers(flows):
            weight, bias, step_logdet = _actnorm_invconv(actnorms, invconvs)
            h = _zero_padded(torch.baddbmm(bias, h.view(M, R * T, C), weight.transpose(1, 2)).view(M, R, T, C), mask)
            half = couplings[0].half
            xa, xb = h[..., :half], h[..., half:]
            scale, t = _coupling_scale_shift(couplings, xa, mask)
            yb = _zero_padded((xb + t) * scale, mask)
            h = torch.cat([xa, yb], -1)
            logdet = logdet + step_logdet.unsqueeze(1) * valid + _zero_padded(scale.log(), mask).sum((2, 3))
        return h.transpose(2, 3), logdet


def flows_inverse(flows: Sequence[ModalityFlow], z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The inverse of `flows_forward`: z (M, R, D, T) -> x (M, R, D, T) fp32, autocast disabled."""
    with full_precision(z.device):
        h = _zero_padded(_channels_last(at_least_fp32(z)), mask)
        M, R, T, C = h.shape
        for actnorms, invconvs, couplings in reversed(_flow_layers(flows)):
            half = couplings[0].half
            ya, yb = h[..., :half], h[..., half:]
            scale, t = _coupling_scale_shift(couplings, ya, mask)
            h = torch.cat([ya, _zero_padded(yb / scale - t, mask)], -1)
            # x = e^{-s} W^{-1} y - b: W^{-1}'s rows scaled by e^{-s}
            logs, shift = _actnorm(actnorms)
            unmix = torch.linalg.inv(_stack(i.weight for i in invconvs)) * (-logs).exp().unsqueeze(-1)
            h = torch.baddbmm(-shift.unsqueeze(1), h.view(M, R * T, C), unmix.transpose(1, 2)).view(M, R, T, C)
            h = _zero_padded(h, mask)
        return h.transpose(2, 3)


# ------------------------------------------------------------------ reconstruction


def _channel_attention(gates: Sequence[ChannelAttention], x: torch.Tensor, mask) -> torch.Tensor:
    """x (M, R, T, C) scaled per channel by its gate on the (masked) time mean."""
    if mask is None:
        pooled = x.mean(2)  # (M, R, C)
    else:
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(2) / m.sum(2).clamp(min=1)
    squeeze = _stacked_conv([g.gate[0] for g in gates])
    excite = _stacked_conv([g.gate[2] for g in gates])
    hidden = torch.relu(torch.baddbmm(squeeze[1], pooled, squeeze[0]))
    return x * torch.sigmoid(torch.baddbmm(excite[1], hidden, excite[0])).unsqueeze(2)


def _rcab(blocks: Sequence[ResidualChannelAttentionBlock], x: torch.Tensor, mask) -> torch.Tensor:
    h = _zero_padded(torch.relu(_conv(_zero_padded(x, mask), _stacked_conv([b.conv1 for b in blocks]))), mask)
    h = _zero_padded(_conv(h, _stacked_conv([b.conv2 for b in blocks])), mask)
    return x + _channel_attention([b.attention for b in blocks], h, mask)


def reconstruct(modules: Sequence[ReconstructionModule], x: torch.Tensor, mask: torch.Tensor | None = None):
    """Every modality's reconstruction module at once: x (M, R, D, T) -> (M, R, D, T), module m on
    x[m]; equal to `modules[m](x[m], mask[m])` up to float rounding. Follows autocast."""
    h = _conv(_channels_last(x), _stacked_conv([r.inp for r in modules]))
    g = h
    for blocks in zip(*(r.blocks for r in modules)):
        g = _rcab(blocks, g, mask)
    return _zero_padded(_conv(g + h, _stacked_conv([r.out for r in modules])), mask).transpose(2, 3)


# ------------------------------------------------------------------ per-modality rows in, per-modality rows out


def flows_on_rows(
    flows: dict[str, ModalityFlow], rows: dict[str, torch.Tensor], x: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Z_m = F_m(X_m) for every modality m at once, each on its own `rows[m]` (B,) bool: x[m]
    (B, D, T) -> (z {m: (B, D, T)}, logdet {m: (B,)}), zeros on the other rows. fp32."""
    names = list(flows)
    stack = RowStack([rows[m] for m in names])
    z, logdet = flows_forward(stack.pick([flows[m] for m in names]), stack.gather([x[m] for m in names]))
    return dict(zip(names, stack.scatter(z))), dict(zip(names, stack.scatter(logdet)))


def reconstruct_on_rows(
    flows: dict[str, ModalityFlow],
    modules: dict[str, ReconstructionModule],
    rows: dict[str, torch.Tensor],
    z: torch.Tensor,
) -> dict[str, torch.Tensor] | None:
    """X^_m = RCAN_m(F_m^-1(z)) for every modality m at once on its `rows[m]` (B,) bool, from the
    one latent z (B, D, T): {m: (B, D, T)}, zeros on the other rows; None when no row of any modality."""
    names = list(flows)
    stack = RowStack([rows[m] for m in names])
    if not stack.size:
        return None
    x_tilde = flows_inverse(stack.pick([flows[m] for m in names]), stack.gather([z] * len(names)))  # fp32
    return dict(zip(names, stack.scatter(reconstruct(stack.pick([modules[m] for m in names]), x_tilde))))
