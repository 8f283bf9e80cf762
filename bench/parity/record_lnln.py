"""Record LNLN's outputs, losses and gradients from Haoyu-ha/LNLN's own class (models/lnln.py LNLN,
the loss of core/losses.py MultimodalLoss, the missing noise of core/dataset.py MMDataset) on the
parity case of tests/parity_cases.py, for tests/test_parity.py (tests/data/parity/lnln.npz) and
tests/test_lnln.py (tests/data/lnln-noise.npz).

    python3 bench/parity/record_lnln.py /tmp/peers/LNLN 80a052c62b7b3b7a6cb6956846e9d9c121f56eda

(the first argument a checkout of Haoyu-ha/LNLN, the second its commit; the speed of its training
step is bench/parity/speed_lnln.py's). As record_mmin.py: the peer's model unedited at cmarr's
sizes, on the CPU (it has no dropout: the published rates are 0, so train and eval mode compute the
same), the case's weights copied in by name. Besides:

- BERT: the peer runs BERT inside its forward (`BertTextEncoder`, fine-tuned); cmarr reads the
  store's precomputed BERT-base token features. One monkeypatch: the peer's BertTextEncoder is an
  identity, so both read the case's 768-d text features.
- Input: the peer reads fixed-length, zero-padded sequences (MMSA's unaligned_50.pkl); the case's
  rows are padded to cmarr's lengths (text 50, audio 500, video 500: the peer's input_length), which
  cmarr's fixed_length leaves as they are (no row is longer).
- Records. `lnln`: the six conditions, one per row (a dropped modality all zeros, the text's
  missing rate 1 there and 0 elsewhere), the clean case as the peer's complete input.
  `lnln-noise`: the full condition under LNLN's training noise, drawn by the peer's own code:
  the rates as MMDataset.__init_mosi draws them (np.random.uniform per row, `random.sample` of
  half the rows set to 0; both seeded), the kept steps by MMDataset.generate_m (which seeds numpy
  with the config's seed itself). cmarr's model is given those rates and kept steps (its own draw
  uses torch's generator). The text goes through generate_m's audio/vision branch (zeroing the
  dropped steps' features): the peer's text branch swaps token ids for [UNK] before BERT, which
  precomputed features cannot do, and keeps [CLS]/[SEP], which cmarr's store does not hold.
- Task: the peer regresses (one output, MSE); cmarr classifies K ways. The peer is built with K
  outputs (`regression.out_dim`) and its MSE `l_sp` is replaced by cross-entropy; l_cc, l_adv and
  l_rec are MultimodalLoss's, with the published weights alpha, beta, gamma (asserted equal to
  cmarr's). LNLN clips no gradient: the gradients are compared unclipped.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_mmin as rec  # noqa: E402

case = rec.case
SEED = rec.SEED
PY_SEED = 0  # numpy's and Python's seed before the noise rates are drawn
MISSING_SEED = 1111  # the config's base.seed: generate_m seeds numpy with it before each modality
PEER_ORDER = ("vision", "audio", "language")  # the peer's inputs (complete_input, incomplete_input)
NOISE_RECORD = rec.ROOT / "tests" / "data" / "lnln-noise.npz"
PREFIXES = [  # cmarr's module -> the peer's (the rest of the name follows RULES)
    ("proj.text.linear.", "proj_l.0."), ("proj.text.encoder.", "proj_l.1."),
    ("proj.audio.linear.", "proj_a.0."), ("proj.audio.encoder.", "proj_a.1."),
    ("proj.video.linear.", "proj_v.0."), ("proj.video.encoder.", "proj_v.1."),
    ("proxy.", "proxy_dominate_modality_generator."), ("discriminator.", "effective_discriminator."),
    ("completeness.encoder.", "completeness_check.0."), ("completeness.head.", "completeness_check.1."),
    ("reconstructor.audio.", "reconstructor.0."), ("reconstructor.video.", "reconstructor.1."),
    ("reconstructor.text.", "reconstructor.2."), ("language.", "dmml.0."), ("hyper.", "dmml.1."),
    ("fusion.layers.", "dmml.2.CrossTransformerEncoder.layers."), ("fusion.", "dmml.2."), ("head.", "dmml.3."),
]  # fmt: skip
RULES = [  # inside a transformer (applied in order)
    (r"^(proj_.\.1|proxy_dominate_modality_generator|completeness_check\.0|reconstructor\.\d|dmml\.0)\.layers\.",
     r"\1.encoder.layers."),
    (r"\.pos$", ".pos_embedding"), (r"\.pos_source$", ".pos_embedding_s"), (r"\.pos_target$", ".pos_embedding_t"),
    (r"\.extra$", ".extra_token"),
    (r"\.(norm_[qkv])\.", r".0.\1."), (r"\.attn\.to_out\.", ".0.fn.to_out.0."), (r"\.attn\.(to_[qkv])\.", r".0.fn.\1."),
    (r"\.norm_ff\.", ".1.norm."), (r"\.ff\.fc1\.", ".1.fn.net.0."), (r"\.ff\.fc2\.", ".1.fn.net.3."),
    (r"\.norm_dominant\.", ".0.norm1."), (r"\.norm_audio\.", ".0.norm2."), (r"\.norm_video\.", ".0.norm3."),
    (r"\.norm_hyper\.", ".0.norm4."),
    (r"(dmml\.1\.layers\.\d+)\.to_out\.", r"\1.0.fn.to_out.0."), (r"(dmml\.1\.layers\.\d+)\.to_q\.", r"\1.0.fn.to_q."),
    (r"\.to_([kv])_audio\.", r".0.fn.to_\1_ta."), (r"\.to_([kv])_video\.", r".0.fn.to_\1_tv."),
]  # fmt: skip


def peer_name(name: str) -> str:
    """cmarr's parameter name -> the LNLN module's."""
    if name in ("proxy_tokens", "hyper_tokens"):
        return {"proxy_tokens": "h_p", "hyper_tokens": "h_hyper"}[name]
    for mine, theirs in PREFIXES:
        if name.startswith(mine):
            name = theirs + name[len(mine) :]
            break
    for pattern, repl in RULES:
        name = re.sub(pattern, repl, name)
    return name


def load(peer: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(peer.named_parameters())
    assert len(params) == len(state), (len(params), len(state))
    for name, value in state.items():
        with torch.no_grad():
            params[peer_name(name)].copy_(value)


def peer_args(cfg) -> dict:
    """configs/train_mosi.yaml's model section at cmarr's sizes (feature widths, lengths, K outputs)."""
    t = lambda length, depth, **k: dict(input_length=length, depth=depth, heads=cfg.heads,  # noqa: E731
                                        input_dim=cfg.width, hidden_dim=cfg.mlp, **k)  # fmt: skip
    N = cfg.tokens
    return {"model": {
        "feature_extractor": {
            "bert_pretrained": "bert-base-uncased", "heads": cfg.heads, "depth": cfg.encoder_depth,
            "input_length": [cfg.text_length, cfg.video_length, cfg.audio_length], "token_length": [N, N, N],
            "input_dims": [case.DIMS["text"], case.DIMS["video"], case.DIMS["audio"]], "hidden_dims": [cfg.width] * 3,
        },
        "dmc": {
            "proxy_dominant_feature_generator": t(3 * N, cfg.proxy_depth, token_length=N),
            "effectiveness_discriminator": {"input_dim": cfg.width, "hidden_dim": cfg.discriminator_hidden,
                                            "out_dim": 2},
            "completeness_check": t(N, cfg.completeness_depth, token_length=1),
        },
        "reconstructor": t(N, cfg.reconstructor_depth),
        "dmml": {
            "language_encoder": t(N, cfg.language_depth, token_length=N),
            "hyper_modality_learning": t(None, cfg.hyper_depth),
            "fuison_transformer": {"source_length": N, "tgt_length": N, "depth": cfg.fusion_depth, "heads": cfg.heads,
                                   "input_dim": cfg.width, "hidden_dim": cfg.mlp},
            "regression": {"input_dim": cfg.width, "out_dim": case.N_CLASSES},
        },
    }}  # fmt: skip


def build_peer(checkout: str, cfg):
    """The peer's LNLN at cmarr's sizes with BERT an identity, and its MultimodalLoss."""
    sys.path.insert(0, checkout)
    import models.lnln as peer_lnln
    from core.losses import MultimodalLoss

    peer_lnln.BertTextEncoder = lambda **kwargs: nn.Identity()  # the store's features are BERT's output
    torch.manual_seed(0)
    peer = peer_lnln.LNLN(peer_args(cfg))
    return peer, MultimodalLoss({"base": {"alpha": 0.9, "beta": 0.8, "gamma": 0.1, "sigma": 1.0}})


def padded(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, F) zero-padded to (B, length, F): the peer's fixed-length input."""
    return F.pad(x, (0, 0, 0, length - x.shape[1]))


def peer_noise(dataset_cls, clean: dict[str, np.ndarray], lengths: dict[str, list[int]]):
    """(rates, kept steps) per modality, drawn by the peer's own code (see the module's notes)."""
    np.random.seed(PY_SEED)
    random.seed(PY_SEED)
    n = len(case.LABELS)
    rates = [np.random.uniform(size=(n, 1)) for _ in range(3)]  # language, audio, vision (__init_mosi)
    for r in rates:
        r[random.sample(list(range(n)), int(n / 2))] = 0
    rate, keep, noisy = {}, {}, {}
    for m, r in zip(("text", "audio", "video"), rates):
        x_m, mask, _, kept = dataset_cls.generate_m(None, clean[m], None, lengths[m], r, MISSING_SEED, mode="audio")
        rate[m], keep[m], noisy[m] = r[:, 0], kept.astype(bool), x_m.astype(np.float32)
    return rate, keep, noisy


def peer_step(peer, loss_fn, weights, complete, incomplete, text_rate):
    """The peer's forward, its loss terms (cmarr's weights; CE for l_sp) and backward."""
    labels = torch.tensor(case.LABELS)
    out = peer(tuple(complete[k] for k in PEER_ORDER), tuple(incomplete[k] for k in PEER_ORDER))
    B = len(labels)
    label = {"sentiment_labels": torch.zeros(B, case.N_CLASSES), "completeness_labels": (1.0 - text_rate)[:, None],
             "effectiveness_labels": torch.cat([torch.ones(B * 8), torch.zeros(B * 8)]).long()}  # fmt: skip
    parts = loss_fn(out, label)
    terms = {"task": F.cross_entropy(out["sentiment_preds"], labels), "completeness": parts["l_cc"],
             "adversarial": parts["l_adv"], "rec": parts["l_rec"]}  # fmt: skip
    peer.zero_grad(set_to_none=True)
    sum(weights[k] * v for k, v in terms.items()).backward()
    return out, terms


def peer_lr_factors(n_epochs: int) -> list[float]:
    """The peer's learning-rate factor in each epoch: get_scheduler on a one-parameter AdamW,
    stepped after each epoch as train.py does."""
    from core.scheduler import get_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = get_scheduler(opt, {"base": {"n_epochs": n_epochs}})
    factors = []
    for _ in range(n_epochs):
        factors.append(opt.param_groups[0]["lr"])
        with warnings.catch_warnings():  # torch's warning about the peer's step(epoch) call
            warnings.simplefilter("ignore")
            schedule.step()
    return factors


def record(path: Path, name: str, peer, loss_fn, stage, state, inputs, meta: dict) -> None:
    complete, incomplete, text_rate = inputs
    out, terms = peer_step(peer, loss_fn, stage.weights, complete, incomplete, text_rate)
    keys = {"logits": "sentiment_preds", "w": "w", "discriminator": "effectiveness_discriminator_out",
            "rec": "rec_feats", "clean": "complete_feats"}  # fmt: skip
    result = {f"out.{k}": out[v].detach().double().numpy() for k, v in keys.items()}
    result.update({f"loss.{k}": np.float64(stage.weights[k] * v.item()) for k, v in terms.items()})
    params = dict(peer.named_parameters())
    for n in state:
        grad = params[peer_name(n)].grad
        if grad is not None:
            result[f"grad.{n}"] = case.digest(grad)
    commit = subprocess.run(["git", "-C", sys.argv[1], "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = sys.argv[2] if len(sys.argv) > 2 else commit.stdout.strip() or "unknown"
    meta = {
        "system": "lnln", "peer": "Haoyu-ha/LNLN", "peer_commit": commit, "torch": torch.__version__, "seed": SEED,
        "clip": 0.0, "clip_mode": "norm", "loss_weights": stage.weights, **meta,
        # the peer's LNLN at cmarr's sizes, its BERT an identity (so not counted): tests/test_lnln.py
        "parameters": {"peer": sum(p.numel() for p in peer.parameters()),
                       "peer_trainable": sum(p.numel() for p in peer.parameters() if p.requires_grad)},
        # the learning-rate factor of each of the published 200 epochs (core/scheduler.py)
        "lr_factors": peer_lr_factors(200),
        "compared": "logits, w, discriminator, rec, clean; task (CE in place of the peer's MSE l_sp), "
                    "completeness, adversarial, rec (MultimodalLoss's l_cc, l_adv, l_rec), each times cmarr's "
                    "weight; gradients of every parameter (LNLN clips none)",
        "command": "python3 bench/parity/record_lnln.py <checkout of Haoyu-ha/LNLN> [commit]",
    }  # fmt: skip
    result["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **result)
    print(name, {k: round(float(v), 6) for k, v in result.items() if k.startswith("loss.")})


def case_inputs(model, conditions: str):
    """The peer's complete and incomplete inputs for the case under `conditions`, and the text rate."""
    L = model.lengths
    x = case.features(SEED + 1)
    given = {m: torch.tensor(v) for m, v in case.given_rows(conditions).items()}
    clean = {m: padded(x[m], L[m]) for m in x}
    names = {"video": "vision", "audio": "audio", "text": "language"}
    complete = {names[m]: clean[m] for m in clean}
    incomplete = {names[m]: clean[m] * given[m][:, None, None] for m in clean}
    return complete, incomplete, 1.0 - given["text"].float()


def main() -> None:
    torch.set_num_threads(1)
    import cmarr.train.systems.lnln  # noqa: F401  registers the system

    stage, model = case.build("lnln")
    peer, loss_fn = build_peer(sys.argv[1], model.cfg)
    assert stage.weights == {"task": 1.0, "completeness": 0.9, "adversarial": 0.8, "rec": 0.1}, "train_mosi.yaml"
    assert stage.optim.clip == 0, "train.py clips no gradient"
    state = case.fill_weights(model, SEED)
    load(peer, state)
    record(rec.OUT / "lnln.npz", "lnln", peer, loss_fn, stage, state, case_inputs(model, "six"), {"conditions": "six"})

    from core.dataset import MMDataset

    x = case.features(SEED + 1)
    clean = {m: padded(x[m], model.lengths[m]).numpy() for m in x}
    rate, keep, noisy = peer_noise(MMDataset, clean, case.LENGTHS)
    names = {"video": "vision", "audio": "audio", "text": "language"}
    complete = {names[m]: torch.from_numpy(clean[m]) for m in clean}
    incomplete = {names[m]: torch.from_numpy(noisy[m]) for m in noisy}
    meta = {"conditions": "full", "noise": {m: rate[m].tolist() for m in rate}, "python_random_seed": PY_SEED,
            "missing_seed": MISSING_SEED}  # fmt: skip
    inputs = (complete, incomplete, torch.from_numpy(rate["text"]).float())
    record(NOISE_RECORD, "lnln-noise", peer, loss_fn, stage, state, inputs, meta)
    with np.load(NOISE_RECORD) as f:
        extra = {k: f[k] for k in f.files}
    extra.update({f"keep.{m}": keep[m] for m in keep})  # the kept steps, given to cmarr's model
    np.savez_compressed(NOISE_RECORD, **extra)


if __name__ == "__main__":
    main()
