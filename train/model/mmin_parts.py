"""Building blocks of the MMIN family (MMIN, IF-MMIN, CIF-MMIN, GCNet's CRA, utt-fusion), rebuilt from
the published architecture (AIM3-RUC/MMIN models/networks; sizes in the team's SYSTEMS.md section 1).

Legend: B batch, T steps, F feature width, E embedding width (128).

The published encoders run over the batch's zero padding (the LSTM reads it, the max includes it),
so an utterance's embedding depends on the longest utterance in its batch. By default these
encoders respect the padding mask (`masked=True`: each LSTM output read at valid steps only, max
over valid steps only); the published behaviour is one switch away
(`train.mmin_family.masked_pooling = false`), and keeps the peers' padded computation. A modality a
condition does not give is an all-zero input: one zero step when masked (its length would tell the
model something about the missing recording), the batch's padded length of zeros when not, at
evaluation too (`reads_padding`: the peers' datasets zero a dropped modality's features, its
length kept, and pad the batch to its longest recording).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from cmarr.train.batch import Batch
from cmarr.train.precision import full_precision
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def given_input(batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The MMIN family's view of modality m: features (B, T, F) zeroed on rows that do not give it,
    and the valid-step mask (B, T) of the rows that do."""
    return batch.given_features(m), batch.given_mask(m)


def complete_input(batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Modality m's true features wherever they are known (training targets)."""
    known = batch.known[m]
    return batch.x[m] * known[:, None, None].to(batch.x[m].dtype), batch.mask[m] & known[:, None]


def reverse_input(batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MMIN's reverse input for the teacher: the true features of the modalities the condition
    drops, zeros for the ones it gives."""
    rows = batch.known[m] & ~batch.given[m]
    return batch.x[m] * rows[:, None, None].to(batch.x[m].dtype), batch.mask[m] & rows[:, None]


class LSTMEncoder(nn.Module):
    """One unidirectional LSTM layer; the utterance vector is the max over steps (`maxpool`) or the
    last hidden state (`last`). (B, T, F), (B, T) -> (B, E)."""

    def __init__(self, in_dim: int, hidden: int = 128, pooling: str = "maxpool", masked: bool = True):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, batch_first=True)
        self.pooling, self.masked = pooling, masked

    @property
    def reads_padding(self) -> bool:
        return not self.masked

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # fp32 even under autocast: oneDNN has no bf16 kernel for a packed LSTM's inference on
        # many CPUs ("could not create a primitive descriptor"), and reduced-precision RNN support
        # differs between GPUs; the LSTMs are small, so fp32 costs little and runs everywhere.
        with full_precision(x.device):
            return self._forward(x.float(), mask)

    def _forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.masked:  # as published: the padding is read
            out, (h_n, _) = self.rnn(x)
            return out.max(1).values if self.pooling == "maxpool" else h_n[0]
        lengths = mask.sum(1).clamp(min=1)  # (B,); a missing modality is one zero step
        return self._packed(x, lengths) if x.device.type == "cuda" else self._dense(x, lengths)

    def _packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Over packed sequences: cuDNN skips the padding."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.rnn(packed)
        if self.pooling == "last":
            return h_n[0]
        out, _ = pad_packed_sequence(out, batch_first=True, padding_value=float("-inf"))  # (B, T', E)
        return out.max(1).values

    def _dense(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The same result from one dense LSTM over the batch up to its longest valid row, read at
        valid steps only: a one-directional LSTM's output at step t depends on steps <= t alone, so
        the padding after a row changes none of its valid outputs (equal to `_packed` up to float
        rounding, gradients too). On a CPU the packed LSTM runs step by step outside oneDNN's fused
        kernel, 6-7x slower than this at batch 128 (bench/results/train.md)."""
        T = int(lengths.max())
        out, _ = self.rnn(x[:, :T])  # (B, T, E)
        if self.pooling == "last":
            return out[torch.arange(len(out), device=out.device), lengths - 1]
        valid = torch.arange(T, device=x.device)[None] < lengths[:, None]  # (B, T)
        return out.masked_fill(~valid[..., None], float("-inf")).max(1).values


class TextCNN(nn.Module):
    """Full-width convolutions of heights 3, 4, 5 over the token sequence, ReLU, max over time,
    concatenated -> dropout -> Linear -> ReLU. (B, T, F), (B, T) -> (B, E). Sequences shorter than
    the widest kernel are zero-padded to it (the published code fails on them)."""

    def __init__(self, in_dim: int, embedding: int = 128, kernels=(3, 4, 5), dropout: float = 0.5, masked=True):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(1, embedding, (k, in_dim)) for k in kernels)
        self.dropout = nn.Dropout(dropout)
        self.embd = nn.Sequential(nn.Linear(len(kernels) * embedding, embedding), nn.ReLU())
        self.kernels, self.masked = kernels, masked

    @property
    def reads_padding(self) -> bool:
        return not self.masked

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        widest = max(self.kernels)
        if x.shape[1] < widest:
            x = F.pad(x, (0, 0, 0, widest - x.shape[1]))
        lengths = mask.sum(1).clamp(min=1)  # (B,)
        pooled = []
        for k, conv in zip(self.kernels, self.convs):
            h = F.relu(conv(x.unsqueeze(1)).squeeze(3))  # (B, E, T - k + 1)
            if self.masked:  # windows that start inside the sequence (at least one window each)
                last_start = (lengths - k).clamp(min=0)  # (B,)
                valid = torch.arange(h.shape[-1], device=h.device)[None] <= last_start[:, None]
                h = h.masked_fill(~valid[:, None], float("-inf"))
            pooled.append(h.max(-1).values)
        return self.embd(self.dropout(torch.cat(pooled, -1)))


class FcClassifier(nn.Module):
    """Linear -> ReLU -> Dropout per hidden layer, then a linear output; returns (output, last hidden)."""

    def __init__(self, in_dim: int, layers: list[int], out_dim: int, dropout: float = 0.3):
        super().__init__()
        blocks = []
        for width in layers:
            blocks += [nn.Linear(in_dim, width), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            in_dim = width
        self.module = nn.Sequential(*blocks)
        self.fc_out = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.module(x)
        return self.fc_out(feat), feat


class ResidualAE(nn.Module):
    """The cascaded residual autoencoder (Tran et al. 2017) as MMIN builds it: `n_blocks` pairs of
    MLP encoder (LeakyReLU, no activation on the last layer) and decoder (ReLU), and a transition.
    `forward` is MMIN's cascade: block k reads the input plus every earlier decoder output, the
    reconstruction is transition(input + all decoder outputs). (B, D) -> ((B, D), (B, n_blocks * L))."""

    def __init__(self, layers: list[int], n_blocks: int, input_dim: int, dropout: float = 0.0):
        super().__init__()
        self.n_blocks = n_blocks
        self.transition = nn.Sequential(nn.Linear(input_dim, input_dim), nn.ReLU(), nn.Linear(input_dim, input_dim))
        for i in range(n_blocks):
            setattr(self, f"encoder_{i}", _ae_encoder(input_dim, layers, dropout))
            setattr(self, f"decoder_{i}", _ae_decoder(input_dim, layers, dropout))

    def blocks(self) -> Iterator[tuple[nn.Module, nn.Module]]:
        for i in range(self.n_blocks):
            yield getattr(self, f"encoder_{i}"), getattr(self, f"decoder_{i}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_in, x_out, latents = x, torch.zeros_like(x), []
        for encoder, decoder in self.blocks():
            x_in = x_in + x_out
            latent = encoder(x_in)
            x_out = decoder(latent)
            latents.append(latent)
        return self.transition(x_in + x_out), torch.cat(latents, -1)


def _ae_encoder(input_dim: int, layers: list[int], dropout: float) -> nn.Sequential:
    modules, width = [], input_dim
    for i, out in enumerate(layers):
        modules.append(nn.Linear(width, out))
        if i < len(layers) - 1:  # the last layer has no activation
            modules += [nn.LeakyReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        width = out
    return nn.Sequential(*modules)


def _ae_decoder(input_dim: int, layers: list[int], dropout: float) -> nn.Sequential:
    widths = list(reversed(copy.copy(layers))) + [input_dim]
    modules = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        modules += [nn.Linear(a, b), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
    modules.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*modules)


def shared_encoder(width: int = 128, layer_norm: bool = False) -> nn.Sequential:
    """IF-MMIN's shared (invariant) encoder: Linear -> LeakyReLU -> Linear -> LeakyReLU; CIF-MMIN's
    projection heads put a LayerNorm after the first activation."""
    norm = [nn.LayerNorm(width)] if layer_norm else []
    return nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(), *norm, nn.Linear(width, width), nn.LeakyReLU())


class ModalityEncoders(nn.Module):
    """The MMIN family's per-modality encoders: LSTM for audio and video, TextCNN for text (or an
    LSTM for every modality, CIF-MMIN's consistent encoders). `forward(inputs)` takes
    {modality: (x, mask)} and returns the embeddings in MMIN's order [A, L, V] -> (B, 3E)."""

    ORDER = ("audio", "text", "video")  # MMIN concatenates A, L, V
    clip_apart = True  # three networks to the peers' `backward` (netA, netL, netV), each clipped alone

    def __init__(self, dims: dict[str, int], embedding: int, masked: bool, text: str = "textcnn", pooling=None):
        super().__init__()
        pooling = pooling or {}
        self.audio = LSTMEncoder(dims["audio"], embedding, pooling.get("audio", "maxpool"), masked)
        self.video = LSTMEncoder(dims["video"], embedding, pooling.get("video", "maxpool"), masked)
        if text == "textcnn":
            self.text = TextCNN(dims["text"], embedding, masked=masked)
        else:
            self.text = LSTMEncoder(dims["text"], embedding, pooling.get("text", "maxpool"), masked)

    def embed(self, inputs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {m: getattr(self, m)(*inputs[m]) for m in self.ORDER}

    def forward(self, inputs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        e = self.embed(inputs)
        return torch.cat([e[m] for m in self.ORDER], -1)


def slot(fused: torch.Tensor, m: str) -> torch.Tensor:
    """Modality m's part (B, E) of a concatenation (B, 3E) in MMIN's order [A, L, V]."""
    e = fused.shape[1] // len(ModalityEncoders.ORDER)
    k = ModalityEncoders.ORDER.index(m)
    return fused[:, k * e : (k + 1) * e]


def init_weights(module: nn.Module, kind: str) -> None:
    """MMIN's `init_net`: Linear and Conv weights kaiming-normal (fan-in) or normal(0, 0.02),
    biases zero; LSTMs and LayerNorms keep PyTorch's initialisation. `default` changes nothing."""
    if kind == "default":
        return
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            if kind == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def cmd(x1: torch.Tensor, x2: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy (Zellinger et al.) between two batches of features (B, E):
    ||mean1 - mean2|| + sum over k = 2..moments of ||E[(x1 - mean1)^k] - E[(x2 - mean2)^k]||."""
    m1, m2 = x1.mean(0), x2.mean(0)
    s1, s2 = x1 - m1, x2 - m2
    total = (m1 - m2).norm()
    for k in range(2, moments + 1):
        total = total + (s1.pow(k).mean(0) - s2.pow(k).mean(0)).norm()
    return total


def cif_contrastive(a: torch.Tensor, b: torch.Tensor, scale: float = torch.e) -> torch.Tensor:
    """CIF-MMIN's in-batch contrastive loss between two views (B, E): cosine similarity times a
    fixed scale e (its temperature parameter is never optimised), the positive excluded from the
    denominator, the two directions averaged."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    sim = torch.exp(a @ b.T * scale)  # (B, B)
    pos = sim.diagonal()
    off = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
    a2b = -torch.log(pos / ((sim * off).sum(1) + 1e-10) + 1e-20).mean()
    b2a = -torch.log(pos / ((sim * off).sum(0) + 1e-10) + 1e-20).mean()
    return (a2b + b2a) / 2
