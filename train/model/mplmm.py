"""MPLMM (Guo et al., ACL 2024; zrguo/MPLMM src/model.py) on cmarr's store: missing-aware prompts on
a MulT backbone, classifying K classes.

Legend: B batch, T_m fixed steps of modality m, F_m its feature width, D common width (the prompt
width too), P prompt length, K classes.

Each sequence is fitted to its modality's fixed length T_m (MPLMM's MLPs mix time steps, so every
row must have T_m of them): a row up to T_m steps is zero-padded, as the peer's collate pads, and a
longer one is averaged down to T_m by masked adaptive pooling (where the peer's fixed-length
features simply end). A given modality is projected, X_m = Conv1d(F_m -> D, 1)(x_m), plus its
*present* missing-signal prompt. A modality the row does not give is generated from the others:
the raw features of each given source n are mapped by G_{n->m} = GELU(Conv1d(F_n -> D, 1)), put
after m's generative prompt (D, P) along time, and an MLP over time, GELU(Conv1d(P + sum T_n ->
T_m, 1)), makes (D, T_m) of them; plus m's *missing* missing-signal prompt. The missing-type prompt
of the row's pattern, E (3, P, D) @ sum_m S_m^{state} (D, T_m) @ W_m (T_m, 2D), gives each MulT
target modality P more steps (P, 2D) after its crossmodal outputs, before its self-attention
encoder; the causal MulT reads its last step. Then MulT's residual head with K outputs.

Without prompts (`prompts=False`) this is the peer's MULTModel, its pre-training backbone: every
modality projected, the dropped ones read as the zeros the loader gives. Loss: cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.sections import Section
from cmarr.train.batch import Batch
from cmarr.train.model.base import SystemModel
from cmarr.train.model.dicmor import ResidualHead
from cmarr.train.model.mult import MulTFusion
from cmarr.train.model.pooling import masked_adaptive_pool
from cmarr.train.precision import full_precision
from pydantic import Field, ValidationInfo, field_validator
from torch import nn
from torch.nn import functional as F

# The sub-modules of the pre-trained backbone that the prompt stage takes and keeps frozen (the peer's
# transfer_model: everything but proj_l/a/v and out_layer).
BACKBONE = ("fusion", "head.proj1", "head.proj2")


class MPLMMModel(Section):
    """MPLMM's modules (zrguo/MPLMM main.py's defaults, its README's IEMOCAP runs; IEMOCAP lengths)."""

    width: int = Field(30, gt=0)  # proj_dim = prompt_dim (the prompts are added to the projections)
    heads: int = Field(5, gt=0)  # must divide width
    layers: int = Field(5, gt=0)  # crossmodal layers (nlevels); self-attention: max(layers, 3)
    prompt_length: int = Field(16, gt=0)  # P: generative and missing-type prompt steps
    text_len: int = Field(22, gt=0)  # T_m, the peer's IEMOCAP get_seq_len (22, 350, 50)
    audio_len: int = Field(350, gt=0)
    video_len: int = Field(50, gt=0)
    text_dropout: float = Field(0.25, ge=0, lt=1)  # on the text input (the peer's embed_dropout there)
    attn_dropout: float = Field(0.1, ge=0, lt=1)  # attention dropout with text as source, and in self-attention
    attn_dropout_audio: float = Field(0.1, ge=0, lt=1)
    attn_dropout_video: float = Field(0.1, ge=0, lt=1)
    embed_dropout: float = Field(0.25, ge=0, lt=1)
    relu_dropout: float = Field(0.1, ge=0, lt=1)
    res_dropout: float = Field(0.1, ge=0, lt=1)
    output_dropout: float = Field(0.1, ge=0, lt=1)

    @field_validator("heads")
    @classmethod
    def _divides_width(cls, heads: int, info: ValidationInfo) -> int:
        width = info.data.get("width")
        if width is not None and width % heads:
            raise ValueError(f"must divide width {width}")
        return heads

    def length(self, m: str) -> int:
        return {"text": self.text_len, "audio": self.audio_len, "video": self.video_len}[m]


@dataclass
class MPLMMOutputs:
    logits: torch.Tensor  # (B, K)


def fit_length(x: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
    """x (B, T, F) with `mask` (B, T) -> (B, F, length): rows up to `length` valid steps zero-padded
    (padding zeroed), longer rows averaged down by masked adaptive pooling."""
    x = x * mask.unsqueeze(-1).to(x.dtype)
    T = x.shape[1]
    padded = F.pad(x[:, :length], (0, 0, 0, max(0, length - T))).transpose(1, 2)  # (B, F, length)
    long = mask.sum(1) > length
    if not long.any():
        return padded
    pooled = masked_adaptive_pool(x[long].transpose(1, 2), mask[long], length)
    return padded.index_put((long,), pooled.to(padded.dtype))


class TimeMLP(nn.Module):
    """GELU(Conv1d(c_in -> c_out, 1)): the peer's MLPLayer, over features or (transposed) over time."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x))


class MissingAwarePrompts(nn.Module):
    """The three prompt kinds: generative (with their translators and time MLPs), missing-signal
    (one for present, one for missing, per modality) and missing-type (with its per-modality maps).
    Zero at the start, as published."""

    def __init__(self, dims: dict[str, int], lengths: dict[str, int], width: int, prompt_length: int):
        super().__init__()
        ms, D, P = [m for m in MODALITIES if m in dims], width, prompt_length
        self.modalities = ms
        self.generative = nn.Parameter(torch.zeros(len(ms), D, P))  # (M, D, P)
        self.translate = nn.ModuleDict({f"{n}_{m}": TimeMLP(dims[n], D) for m in ms for n in ms if n != m})
        self.merge = nn.ModuleDict(
            {
                _key(m, src): TimeMLP(P + sum(lengths[n] for n in src), lengths[m])
                for m in ms
                for src in _source_sets(ms, m)
            }
        )
        self.signal_missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(D, lengths[m])) for m in ms})
        self.signal_present = nn.ParameterDict({m: nn.Parameter(torch.zeros(D, lengths[m])) for m in ms})
        self.type_prompt = nn.Parameter(torch.zeros(len(ms), P, D))  # (M, P, D)
        self.type_map = nn.ParameterDict({m: nn.Parameter(torch.zeros(lengths[m], 2 * D)) for m in ms})

    def generate(self, m: str, raw: dict[str, torch.Tensor], sources: tuple[str, ...]) -> torch.Tensor:
        """(R, D, T_m) modality m made from the raw features (R, F_n, T_n) of `sources`."""
        R = raw[sources[0]].shape[0]
        k = self.modalities.index(m)
        parts = [self.generative[k].expand(R, -1, -1)] + [self.translate[f"{n}_{m}"](raw[n]) for n in sources]
        h = torch.cat(parts, -1)  # (R, D, P + sum T_n)
        return self.merge[_key(m, sources)](h.transpose(1, 2)).transpose(1, 2) + self.signal_missing[m]

    def type_prompts(self) -> dict[tuple[str, ...], torch.Tensor]:
        """{given modalities: (M, P, 2D)} the missing-type prompts of every pattern, one per target
        modality. All seven are made each forward, as the peer's get_proj_matrix does, so every
        missing-signal prompt takes a gradient (zero where its pattern is absent) and Adam moves it."""
        patterns, mixes = _patterns(self.modalities), []
        for given in patterns:
            states = [self.signal_present[m] if m in given else self.signal_missing[m] for m in self.modalities]
            mixes.append(sum(s @ self.type_map[m] for s, m in zip(states, self.modalities)))  # (D, 2D)
        mixes = torch.stack(mixes)  # one tensor, as the peer's torch.cat: a gradient reaches every prompt
        return {given: self.type_prompt @ mixes[k] for k, given in enumerate(patterns)}


def _patterns(ms: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of `ms`, in `ms` order."""
    return [tuple(m for k, m in enumerate(ms) if code >> k & 1) for code in range(1, 2 ** len(ms))]


def _source_sets(ms: list[str], m: str) -> list[tuple[str, ...]]:
    others = tuple(n for n in ms if n != m)
    return [(n,) for n in others] + [others]


def _key(m: str, sources: tuple[str, ...]) -> str:
    return f"{m}_from_{'_'.join(sources)}"


class MPLMM(SystemModel):
    """The model of both MPLMM stages: `prompts=False` the pre-training MulT backbone (stage 1),
    `prompts=True` the prompt model whose backbone (BACKBONE) comes from stage 1 and stays frozen."""

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: MPLMMModel, prompts: bool = False):
        super().__init__()
        self.modalities, self.cfg = [m for m in MODALITIES if m in dims], cfg  # the peer's l, a, v order
        D = cfg.width
        self.lengths = {m: cfg.length(m) for m in dims}
        self.proj = nn.ModuleDict({m: nn.Conv1d(f, D, 1, bias=False) for m, f in dims.items()})
        attn = {"text": cfg.attn_dropout, "audio": cfg.attn_dropout_audio, "video": cfg.attn_dropout_video}
        dropouts = {"embed": cfg.embed_dropout, "relu": cfg.relu_dropout, "res": cfg.res_dropout}
        self.fusion = PromptedMulT(
            self.modalities, D, cfg.heads, cfg.layers, {**attn, "self": cfg.attn_dropout}, dropouts, causal=True
        )
        self.head = ResidualHead(self.fusion.out_dim, n_classes, cfg.output_dropout)
        self.prompts = MissingAwarePrompts(dims, self.lengths, D, cfg.prompt_length) if prompts else None
        self.backbone = BACKBONE if prompts else ()

    def freeze(self) -> None:
        """The backbone holds no gradient and is not optimised, but keeps its dropout in training
        (the peer sets requires_grad False and trains the model in train mode)."""
        super().freeze()
        for name in self.backbone:
            self.get_submodule(name).requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        fixed = {id(p) for name in self.backbone for p in self.get_submodule(name).parameters()}
        return [p for p in super().trainable_parameters() if id(p) not in fixed]

    def forward(self, batch: Batch) -> MPLMMOutputs:
        raw = {m: fit_length(batch.x[m], batch.mask[m], self.lengths[m]) for m in self.modalities}  # (B, F_m, T_m)
        if "text" in raw:
            raw["text"] = F.dropout(raw["text"], self.cfg.text_dropout, self.training)
        if self.prompts is None:
            seqs = {m: self.proj[m](raw[m]).transpose(1, 2) for m in self.modalities}  # (B, T_m, D)
            return MPLMMOutputs(self.head(self.fusion(seqs)))
        seqs, suffix = self._prompted(batch, raw)
        return MPLMMOutputs(self.head(self.fusion(seqs, suffix)))

    def _prompted(self, batch: Batch, raw: dict[str, torch.Tensor]):
        """Per missing pattern of the batch, its rows' completed sequences (B, T_m, D) and the
        missing-type prompts (B, P, 2D) of each target modality. A row that gives nothing (only a
        store lacking all three could make one) reads its zeros as if given."""
        pattern = torch.stack([batch.given[m] for m in self.modalities], 1)  # (B, M)
        typed_all = self.prompts.type_prompts()
        order, seqs, suffix = [], {m: [] for m in self.modalities}, {m: [] for m in self.modalities}
        for code in torch.unique(pattern, dim=0):
            rows = (pattern == code).all(1).nonzero().squeeze(1)
            given = tuple(m for m, g in zip(self.modalities, code.tolist()) if g) or tuple(self.modalities)
            sub = {m: raw[m][rows] for m in self.modalities}
            for m in self.modalities:
                if m in given:
                    x = self.proj[m](sub[m]) + self.prompts.signal_present[m]
                else:
                    x = self.prompts.generate(m, sub, given)
                seqs[m].append(x.transpose(1, 2))  # (R, T_m, D)
            for k, m in enumerate(self.modalities):
                suffix[m].append(typed_all[given][k].expand(len(rows), -1, -1))  # (R, P, 2D)
            order.append(rows)
        back = torch.argsort(torch.cat(order))  # the batch's row order again
        return ({m: torch.cat(v)[back] for m, v in seqs.items()}, {m: torch.cat(v)[back] for m, v in suffix.items()})

    def losses(self, batch: Batch, out: MPLMMOutputs) -> dict[str, torch.Tensor]:
        """{'task'}: cross-entropy (the peer's IEMOCAP CrossEntropyLoss), fp32."""
        with full_precision(batch.labels.device):
            return {"task": F.cross_entropy(out.logits.float(), batch.labels)}


class PromptedMulT(MulTFusion):
    """MulT fusion whose self-attention encoders can read P more steps after the crossmodal
    outputs (the missing-type prompts), each target modality its own."""

    def forward(self, seqs: dict[str, torch.Tensor], suffix: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """seqs[m] (B, T_m, D), suffix[m] (B, P, 2D) -> (B, 2D M)."""
        pooled = []
        for t in self.modalities:
            h = torch.cat([self.cross[f"{t}_{s}"](seqs[t], seqs[s]) for s in self.modalities if s != t], -1)
            if suffix is not None:
                h = torch.cat([h, suffix[t]], 1)  # (B, T_t + P, 2D)
            h = self.memory[t](h)
            pooled.append(h[:, -1])  # causal: the last step has seen every one
        return torch.cat(pooled, -1)
