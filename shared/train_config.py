"""The `[train]` part of `pipeline.toml`: the protocol every system shares, then one section per system.

The protocol keys (folds, validation, missing conditions, devices) apply to every system. Each
system's own settings (model sizes, loss weights, optimiser and schedule per stage) sit in its
section, with the published code's values as defaults (`shared/comparison/SYSTEMS.md` in the team
handbook gives the sources); the system itself is defined in `train/systems/<name>.py`.
"""

from __future__ import annotations

from typing import Literal

from cmarr.shared.sections import Section
from pydantic import Field, ValidationInfo, field_validator

SYSTEM_NAMES = (
    "cm-arr",
    "baseline",
    "no-udcl",
    "no-spcl",
    "no-attention",
    "point",
    "utt-fusion",
    "cra",
    "mmin",
    "if-mmin",
    "cif-mmin",
    "dicmor",
)
SystemName = Literal[SYSTEM_NAMES]


class StageOptim(Section):
    """Optimiser and schedule of one training stage."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-4, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)  # Adam's first beta (the MMIN family's missing stage uses 0.5)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=2)  # at least 2: contrastive and batch-statistics terms need pairs
    epochs: int = Field(100, gt=0)  # epochs at the full learning rate
    decay_epochs: int = Field(0, ge=0)  # then this many with the rate decaying linearly (MMIN's niter_decay)
    patience: int = Field(0, ge=0)  # early stopping after this many epochs without a better validation score; 0 = off
    clip: float = Field(0.0, ge=0)  # gradient clipping threshold; 0 = none
    clip_mode: Literal["norm", "norm-per-module", "value"] = "norm"  # global norm, norm per sub-network, value


# --------------------------------------------------------------------------- CM-ARR


class ModelConfig(Section):
    width: int = Field(128, gt=0)  # uncertainty module width (paper: 128)
    heads: int = Field(8, gt=0)  # attention heads in the uncertainty module
    latent_dim: int = Field(64, gt=0)  # common width D of the projections and flows
    latent_len: int = Field(50, gt=0)  # common length T after masked adaptive pooling
    kernel_size: int = Field(5, gt=0)  # Conv1d projection kernel ("same" padding)
    flow_steps: int = Field(32, gt=0)  # Glow steps per modality (DiCMoR's count)
    flow_hidden: int = Field(64, gt=0)  # coupling subnet channels
    rcab_blocks: int = Field(20, gt=0)  # residual channel-attention blocks (one group)
    rcab_reduction: int = Field(16, gt=0)  # channel-attention squeeze ratio
    fusion_heads: int = Field(4, gt=0)
    proj_dim: int = Field(128, gt=0)  # SPCL projection width
    dropout: float = Field(0.1, ge=0, lt=1)
    alignment: Literal["distribution", "point"] = "distribution"  # Table 3 "w/ Point" = point
    umc_attention: bool = True  # Table 3 "w/o attention" switches the UMC's attention off
    fusion: Literal["paper", "all-queries"] = "paper"  # paper: text queries speech and video (Eq. 10-13)


class LossConfig(Section):
    alpha: float = Field(1.0, ge=0)  # UDCL weight
    beta: float = Field(0.1, ge=0)  # SPCL weight (section 4.2; 4.5 calls 0.5 optimal)
    lambda_rec: float = Field(10.0, ge=0)  # reconstruction weight
    w_nll: float = Field(0.1, ge=0)  # flow Gaussian NLL weight (flows get no gradient without it)
    tau_init: float = Field(0.07, gt=0)  # UDCL learnable temperature, initial value
    d2w_scale_init: float = -1 / 200  # a in S = a * D2W + b (must stay negative)
    d2w_shift_init: float = 4.0  # b
    spcl_temperature: float = Field(0.07, gt=0)


class CMARRConfig(Section):
    """CM-ARR, its Table-3 ablations and the paper's Baseline (section 4.2: lr 1e-5, batch 16, 100 epochs)."""

    optim: StageOptim = StageOptim(
        optimizer="adamw", lr=1e-5, batch_size=16, epochs=100, patience=10, clip=1.0, clip_mode="norm"
    )
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()


# --------------------------------------------------------------------------- the MMIN family


class MMINFamilyConfig(Section):
    """Modules every MMIN-family system shares (AIM3-RUC/MMIN models/networks)."""

    embedding: int = Field(128, gt=0)  # per-modality utterance embedding (LSTM hidden size, TextCNN output)
    cls_layers: list[int] = [128, 128]  # FcClassifier hidden layers
    masked_pooling: bool = True  # false = as published: LSTMs and TextCNN run over padding, max includes it
    init: Literal["kaiming", "default"] = "kaiming"  # Linear/Conv weights kaiming-normal, zero biases (MMIN)


class UttFusionConfig(Section):
    """MMIN's full-modality model (`utt_fusion`); also the teacher MMIN trains against."""

    optim: StageOptim = StageOptim(
        lr=2e-4, beta1=0.9, batch_size=128, epochs=10, decay_epochs=10, clip=0.5, clip_mode="norm-per-module"
    )
    dropout: float = Field(0.3, ge=0, lt=1)


class CRALoss(Section):
    ce: float = Field(1.0, ge=0)
    recon: float = Field(0.02, ge=0)  # GCNet's run_cra.sh sweep: 0.01-0.03 (recon summed over the batch)


class CRAConfig(Section):
    """Cascaded residual autoencoder (Tran et al. 2017) as GCNet's `mmin_CRA` builds it."""

    optim: StageOptim = StageOptim(
        lr=1e-3, beta1=0.5, batch_size=256, epochs=20, decay_epochs=80, clip=5.0, clip_mode="norm-per-module"
    )
    ae_layers: list[int] = [256, 128]
    blocks: int = Field(2, gt=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    target: Literal["input", "embedding"] = "input"  # reconstruct the input features (GCNet) or the embeddings
    recon_norm: Literal["sum-over-batch", "mean"] = "sum-over-batch"  # GCNet sums over the batch
    missingness: Literal["six", "fixed-rate"] = "six"  # cmarr's six-condition sampler, or GCNet's fixed mask
    mask_rate: float = Field(0.5, ge=0, lt=1)  # fixed-rate missingness: share of missing modality entries
    loss: CRALoss = CRALoss()


class MMINLoss(Section):
    ce: float = Field(1.0, ge=0)
    imagination: float = Field(4.0, ge=0)  # MSE to the teacher's embeddings (scripts/CAP_mmin.sh: 4)
    cycle: float = Field(2.0, ge=0)  # backward autoencoder back to the student's embeddings (2)


class MMINConfig(Section):
    """MMIN (Zhao et al., ACL 2021): utt-fusion pretraining ([train.utt_fusion]), then MMIN with it as teacher."""

    optim: StageOptim = StageOptim(
        lr=2e-4, beta1=0.5, batch_size=128, epochs=30, decay_epochs=30, clip=1.0, clip_mode="norm-per-module"
    )
    ae_layers: list[int] = [256, 128, 64]
    blocks: int = Field(5, gt=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    share_cycle: bool = False  # one autoencoder both ways (MMIN's MSP-IMPROV script)
    loss: MMINLoss = MMINLoss()


class IFPretrainLoss(Section):
    ce: float = Field(1.0, ge=0)
    cmd: float = Field(1.0, ge=0)  # central moment discrepancy between the shared features


class IFMMINLoss(Section):
    ce: float = Field(1.0, ge=0)
    imagination: float = Field(1.0, ge=0)
    invariant: float = Field(100.0, ge=0)  # the script's intent (it passes 100 under a flag the code lacks)


class IFMMINConfig(Section):
    """IF-MMIN (Zuo et al., ICASSP 2023): shared-encoder pretraining with CMD, then IF-MMIN."""

    pretrain: StageOptim = StageOptim(
        lr=2e-4, beta1=0.9, batch_size=64, epochs=10, decay_epochs=10, clip=0.5, clip_mode="norm-per-module"
    )
    optim: StageOptim = StageOptim(
        lr=2e-4, beta1=0.5, batch_size=128, epochs=20, decay_epochs=20, clip=1.0, clip_mode="norm-per-module"
    )
    ae_layers: list[int] = [256, 128, 64]
    blocks: int = Field(5, gt=0)
    pretrain_dropout: float = Field(0.3, ge=0, lt=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    ifim_variant: Literal["2024", "2022"] = "2024"  # the authors' current IF-IM forward, or the one at release
    published_invariant_weight: bool = False  # true: weight 1, what the published code runs with the bad flag dropped
    pretrain_loss: IFPretrainLoss = IFPretrainLoss()
    loss: IFMMINLoss = IFMMINLoss()


class CIFPretrainLoss(Section):
    ce: float = Field(1.0, ge=0)
    cl_tv: float = Field(0.25, ge=0)  # contrastive text-video (weights hard-coded in CIF-MMIN's backward)
    cl_ta: float = Field(0.25, ge=0)
    cl_va: float = Field(0.5, ge=0)


class CIFMMINLoss(Section):
    ce: float = Field(1.0, ge=0)
    imagination: float = Field(8.0, ge=0)
    consistent: float = Field(100.0, ge=0)


class CIFMMINConfig(Section):
    """CIF-MMIN (Liu et al., TAFFC 2024): contrastive pretraining, then CIF-MMIN."""

    pretrain: StageOptim = StageOptim(
        lr=2e-4, beta1=0.9, batch_size=64, epochs=30, decay_epochs=10, clip=0.5, clip_mode="norm-per-module"
    )
    optim: StageOptim = StageOptim(
        lr=2e-4, beta1=0.5, batch_size=64, epochs=20, decay_epochs=20, clip=1.0, clip_mode="norm-per-module"
    )
    ae_layers: list[int] = [256, 128, 64]
    blocks: int = Field(5, gt=0)
    pretrain_dropout: float = Field(0.3, ge=0, lt=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    conl_pooling: Literal["maxpool", "last"] = "maxpool"  # last = as published (stage 2's text ConL pools by h_n)
    pretrain_loss: CIFPretrainLoss = CIFPretrainLoss()
    loss: CIFMMINLoss = CIFMMINLoss()


# --------------------------------------------------------------------------- DiCMoR


class DiCMoRModel(Section):
    """DiCMoR's modules (mdswyz/DiCMoR dicmor.py, MOSI's config: d = 32, 4 crossmodal layers)."""

    width: int = Field(32, gt=0)  # common width d (MOSI 32, MOSEI 64); even, and a multiple of `heads`
    heads: int = Field(8, gt=0)
    layers: int = Field(4, gt=0)  # crossmodal layers (nlevels; MOSEI 6); self-attention: max(layers, 3)
    seq_len: int = Field(50, gt=0)  # common length after masked adaptive pooling (DiCMoR's word-aligned 50)
    kernel_size: int = Field(5, gt=0)  # projection kernel, no padding: seq_len - kernel_size + 1 steps
    flow: Literal["glow", "dicmor-exact"] = "glow"  # glow: whole Glow steps; dicmor-exact: coupling-only steps
    flow_steps: int = Field(32, gt=0)
    flow_hidden: int = Field(64, gt=0)  # channels of each coupling subnet
    rcab_blocks: int = Field(20, gt=0)  # residual channel-attention blocks per reconstructor
    rcab_reduction: int = Field(16, gt=0)  # channel-attention squeeze ratio
    attention: Literal["causal-last", "full-mean"] = "causal-last"  # MulT's causal mask + last step, or neither
    text_dropout: float = Field(0.5, ge=0, lt=1)  # on the text input
    attn_dropout: float = Field(0.3, ge=0, lt=1)  # attention dropout with text as source, and in self-attention
    attn_dropout_audio: float = Field(0.2, ge=0, lt=1)  # attention dropout with audio as source
    attn_dropout_video: float = Field(0.0, ge=0, lt=1)  # attention dropout with video as source
    embed_dropout: float = Field(0.2, ge=0, lt=1)
    relu_dropout: float = Field(0.0, ge=0, lt=1)
    res_dropout: float = Field(0.0, ge=0, lt=1)
    output_dropout: float = Field(0.5, ge=0, lt=1)

    @field_validator("width")
    @classmethod
    def _even(cls, width: int) -> int:
        if width % 2:
            raise ValueError("must be even (each coupling splits the channels in half)")
        return width

    @field_validator("heads")
    @classmethod
    def _divides_width(cls, heads: int, info: ValidationInfo) -> int:
        width = info.data.get("width")
        if width is not None and width % heads:
            raise ValueError(f"must divide width {width}")
        return heads

    @field_validator("kernel_size")
    @classmethod
    def _fits_length(cls, kernel: int, info: ValidationInfo) -> int:
        length = info.data.get("seq_len")
        if length is not None and kernel > length:
            raise ValueError(f"must not exceed seq_len {length}")
        return kernel


class DiCMoRLoss(Section):
    task: float = Field(1.0, ge=0)  # cross-entropy (the published code's L1 regression loss, made K-way)
    nll: float = Field(0.1, ge=0)  # each modality's flow likelihood (bits per dimension)
    rec: float = Field(0.1, ge=0)  # MSE of the recovered missing modality to its projected true features


_DICMOR_OPTIM = StageOptim(lr=1e-4, batch_size=32, epochs=100, patience=10, clip=0.6, clip_mode="value")


class DiCMoRConfig(Section):
    """DiCMoR (Wang et al., ICCV 2023), "DiCMoR+" on wav2vec2 features: a full-data stage, then the
    missing-modality stage starting from it with its projections frozen."""

    pretrain: StageOptim = _DICMOR_OPTIM  # stage 1, complete data (the authors' pretrained-<dataset>.pth)
    optim: StageOptim = _DICMOR_OPTIM  # stage 2, with missingness
    missingness: Literal["batch-schedule", "six"] = "batch-schedule"  # DiCMoR's schedule or cmarr's six conditions
    missing_rate: Literal[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] = 0.5  # batch-schedule's MR (0.5: the test grid's mean)
    model: DiCMoRModel = DiCMoRModel()
    loss: DiCMoRLoss = DiCMoRLoss()


# --------------------------------------------------------------------------- the protocol


class TrainConfig(Section):
    system: SystemName = "cm-arr"  # what to train; `cmarr-train describe` lists the systems and their stages
    preset: Literal["paper", "fast"] = "paper"
    seed: int = 0
    val_rule: Literal["stratified", "other-speaker"] = "stratified"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    include_full_condition: bool = False  # also draw the full condition when sampling six-condition missingness
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "bf16"
    cpu_threads: int = Field(0, ge=0)  # torch CPU threads per process or dask worker; 0 = its share of the cores
    non_finite: Literal["error", "missing"] = "error"  # NaN/inf features: refuse the store, or treat as missing
    cm_arr: CMARRConfig = CMARRConfig()
    mmin_family: MMINFamilyConfig = MMINFamilyConfig()
    utt_fusion: UttFusionConfig = UttFusionConfig()
    cra: CRAConfig = CRAConfig()
    mmin: MMINConfig = MMINConfig()
    if_mmin: IFMMINConfig = IFMMINConfig()
    cif_mmin: CIFMMINConfig = CIFMMINConfig()
    dicmor: DiCMoRConfig = DiCMoRConfig()
