"""LNLN (Zhang et al., "Towards Robust Multimodal Sentiment Analysis with Incomplete Data", NeurIPS
2024; Haoyu-ha/LNLN): the language-dominated noise-resistant learning network, made K-way.

One stage, trained as published (train.py, configs/train_mosi.yaml): every modality the utterance
has, with LNLN's random per-step missing noise drawn inside the model (`LNLNModel.noise`), AdamW
at 1e-4 with weight decay 1e-4, batches of 64, 200 epochs, no gradient clipping; the rate warms up
linearly from 0 over the first tenth of the epochs, then follows a cosine to 0 (core/scheduler.py,
`stage.warmup_cosine`). Selected on the
validation UAR averaged over cmarr's six missing conditions (the published run keeps the best test
epoch). Loss: 1.0 task + 0.9 completeness + 0.8 adversarial + 0.1 rec (sigma, alpha, beta, gamma).
Settings: `[train.lnln]`; docs/systems/lnln.md says what differs from the published code.
"""

from __future__ import annotations

from cmarr.shared.sections import Section
from cmarr.shared.train_config import StageOptim, TrainConfig
from cmarr.train.model.lnln import LNLN, LNLNModel
from cmarr.train.schedule import warmup_cosine
from cmarr.train.systems.base import Stage, System
from cmarr.train.systems.registry import register_system
from pydantic import Field


class LNLNLoss(Section):
    task: float = Field(1.0, ge=0)  # sigma: cross-entropy (the published MSE regression loss, made K-way)
    completeness: float = Field(0.9, ge=0)  # alpha: MSE of the completeness score to 1 - the text's missing rate
    adversarial: float = Field(0.8, ge=0)  # beta: the effectiveness discriminator's cross-entropy
    rec: float = Field(0.1, ge=0)  # gamma: MSE of the reconstructed tokens to the clean input's


class LNLNConfig(Section):
    """LNLN (Zhang et al., NeurIPS 2024): one stage on noisy input, as published."""

    optim: StageOptim = StageOptim(optimizer="adamw", lr=1e-4, weight_decay=1e-4, batch_size=64, epochs=200)
    # get_scheduler: a linear warm-up over 0.1 n_epochs, then CosineAnnealingLR over the other 0.9
    warmup_share: float = Field(0.1, ge=0, lt=1)
    model: LNLNModel = LNLNModel()
    loss: LNLNLoss = LNLNLoss()


def lnln(cfg: TrainConfig) -> System:
    c = cfg.lnln
    w = c.loss
    weights = {"task": w.task, "completeness": w.completeness, "adversarial": w.adversarial, "rec": w.rec}
    # "none": every modality the utterance has; the missingness is the model's own noise
    epochs = c.optim.epochs + c.optim.decay_epochs
    schedule = warmup_cosine(round(c.warmup_share * epochs), epochs)
    stage = Stage("lnln", lambda dims, k: LNLN(dims, k, c.model), c.optim, weights, "none", lr_schedule=schedule)
    options = {"noise": c.model.noise, "lengths": [c.model.text_length, c.model.audio_length, c.model.video_length]}
    title = "LNLN (Zhang et al., NeurIPS 2024): language-dominated, trained on random per-step missing noise"
    return System("lnln", title, (stage,), options)


FAST = {
    "train.lnln.optim.batch_size": 16,
    "train.lnln.optim.epochs": 4,
    "train.lnln.model.audio_length": 50,  # 1 s of wav2vec2 frames (longer recordings averaged down)
    "train.lnln.model.video_length": 25,
    "train.lnln.model.encoder_depth": 1,
}  # `--preset fast`
register_system("lnln", lnln, sections={"lnln": LNLNConfig}, fast=FAST, groups=("table2",))
