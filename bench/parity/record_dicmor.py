"""Record DiCMoR's outputs, losses and clipped gradients from mdswyz/DiCMoR's own class
(trains/singleTask/model/dicmor.py DICMOR; the loss sum and clip of trains/singleTask/DICMOR.py) on
the parity case of tests/parity_cases.py, into tests/data/parity/dicmor.npz (one modality missing)
and dicmor-one.npz (two missing), for tests/test_parity.py.

    python3 bench/parity/record_dicmor.py /tmp/peers/DiCMoR 3d7e617ea173232ee8ae652a7fe7964d4b4485e1

(the first argument a checkout of mdswyz/DiCMoR, the second its commit). As record_mmin.py: the
peer's model unedited at cmarr's sizes, on the CPU, in eval mode (no dropout draw to match), the
case's weights copied in by name; no monkeypatch. Besides:

- Input: DiCMoR reads word-aligned sequences of one length, so every row of every modality has
  cmarr's `seq_len` (50) steps; cmarr's masked adaptive pooling to 50 steps is then the identity.
  BERT is off (`use_bert` false): both read the case's 768-d text features. cmarr's model takes its
  inputs in MODALITIES order (text, audio, video: its trainer's, and DiCMoR's l, a, v).
- Missingness: the forward draws the available modalities itself (`random.sample`, one pattern for
  the whole batch). Python's `random` is seeded before the call; the pattern, given to cmarr as
  `given:<m>,<m>` on every row, is checked against the forward's `ava_modal_idx`.
- Task: the released runs are regression (run.py forces it: L1, one output), cmarr's task K-way
  cross-entropy (train/systems/dicmor.py). The peer's own classification branch is the latter: the
  model gives `num_classes` outputs and DICMOR.py's criterion is `nn.CrossEntropyLoss`; labels 0..3
  pick its priors neutral, weakly, plain, highly positive (`np.round(label)`). The record runs that
  branch, so every term is compared: logits, `task` (CE), `nll_t`, `nll_s`, `nll_v` (the flows' bits
  per dimension), `rec` (MSE of the recovered modalities), each times cmarr's weight (DICMOR.py's
  1 and 0.1, asserted), and the gradients of their sum after DICMOR.py's `clip_grad_value_(.., 0.6)`.
- Layout: cat.text's input halves are swapped between the two (see swap_cat_sources); the flows are
  cmarr's `dicmor-exact` variant (coupling-only steps, as published). ActNorm, InvConv, the Glow
  block prior and weight_l/v/a are copied too but take part in nothing on either side.
- Weights: the couplings' closing ZeroConvs get small case weights (SMALL).
- trains/utils imports pynvml (for picking a GPU, never called here): where it is not installed an
  empty module stands in for it.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_mmin as rec  # noqa: E402

case = rec.case
SEED = rec.SEED
# record -> modalities available (num_modal): one missing, recovered from both others (cat_m, two
# inverse flows); two missing, each recovered from the one left (the mean of their MSEs)
RECORDS = {"dicmor": 2, "dicmor-one": 1}
# Python's `random` seed before each forward: its draws are video, audio (text missing: the one
# recovery whose sources' order differs, see swap_cat_sources) and video alone
PY_SEED = 0
PEER_ORDER = ("text", "video", "audio")  # DiCMoR's modal_idx 0, 1, 2
LETTER = {"text": "l", "audio": "a", "video": "v"}
PRIORS = ("prior_neutral", "prior_wp", "prior_p", "prior_hp")  # np.round(label) 0, 1, 2, 3
SWITCHES = {"dicmor": {"model": {"flow": "dicmor-exact"}}}  # the published coupling-only steps
# The couplings' closing ZeroConvs (zero-initialised as published) get case weights of std 0.003:
# at the case's usual std the 32 inverse steps, each dividing by s = sigmoid(log_s + 2)
# < 1 and shifting by t, blow the recovered modality up (rec ~1e7 times its weight, beyond float32's
# 1e-5, and most of rec_m's gradients at the clip); near their zero start the weighted rec is below 10.
SMALL = {r"\.coupling\.net\.4\.": 0.003}
MODALITIES = ("text", "audio", "video")  # cmarr's input order, DiCMoR's l, a, v (its fusion's concat order)
RULES = [  # cmarr's name -> the peer's, applied in order (after the modality prefix)
    (r"^steps\.(\d+)\.actnorm\.bias$", r"blocks.0.flows.\1.actnorm.loc"),
    (r"^steps\.(\d+)\.actnorm\.logs$", r"blocks.0.flows.\1.actnorm.scale"),  # its exp: see `load`
    (r"^steps\.(\d+)\.(invconv|coupling)\.", r"blocks.0.flows.\1.\2."),
    (r"^block_prior\.", "blocks.0.prior."),
    (r"^blocks\.(\d+)\.conv1\.", r"1.body.\1.body.0."),  # rec_m: Sequential(conv, Group, conv)
    (r"^blocks\.(\d+)\.conv2\.", r"1.body.\1.body.2."),
    (r"^blocks\.(\d+)\.attention\.gate\.(\d)\.", r"1.body.\1.body.3.conv_du.\2."),
    (r"^tail\.", "1.body.20."),  # the Group's closing conv
    (r"^inp\.", "0."),
    (r"^out\.", "2."),
    (r"\.attn\.", ".self_attn."),  # MulT layers
    (r"\.norm_attn\.", ".layer_norms.0."),
    (r"\.norm_ff\.", ".layer_norms.1."),
    (r"^norm\.", "layer_norm."),
]


def peer_name(cmarr_name: str) -> str:
    """cmarr's parameter name -> the DICMOR module's: the per-modality ModuleDicts are its *_l, *_a,
    *_v attributes (`unused` its weight_*), fusion.cross.<t>_<s> / fusion.memory.<t> its
    trans_<t>_with_<s> / trans_<t>_mem, prior.priors.<k> its prior for label k, head its proj1,
    proj2, out_layer; inside them RULES."""
    head, rest = cmarr_name.split(".", 1)
    if head == "head":
        return re.sub(r"^out\.", "out_layer.", rest)
    if head == "prior":  # prior.priors.<k>.<rest>
        k, tail = rest[len("priors.") :].split(".", 1)
        return f"{PRIORS[int(k)]}.{tail}"
    if head == "fusion":
        kind, pair, rest = rest.split(".", 2)
        target, *source = (LETTER[m] for m in pair.split("_"))
        net = f"trans_{target}_mem" if kind == "memory" else f"trans_{target}_with_{source[0]}"
    else:
        m, rest = rest.split(".", 1)
        net = ("weight" if head == "unused" else head) + "_" + LETTER[m]
    for pattern, repl in RULES:
        rest = re.sub(pattern, repl, rest)
    return f"{net}.{rest}"


def swap_cat_sources(name: str, value: torch.Tensor) -> torch.Tensor:
    """cat.text's input halves swapped, between cmarr's layout and the peer's (its own inverse). cmarr
    concatenates a missing modality's two inverse flows in its input order (text: audio, video); the
    peer writes cat_l([flow_l.reverse(z_v), flow_l.reverse(z_a)]), video first (cat_v and cat_a
    agree: l, a and l, v)."""
    if name.startswith("cat.text."):
        if value.dim() < 2:
            return value  # the bias
        half = value.shape[1] // 2
        return torch.cat([value[:, half:], value[:, :half]], 1)
    return value


def load(peer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy every case tensor into the peer's parameter of the mapped name (1x1 Conv1d weights become
    the peer's Conv2d ones: same numbers, a trailing axis more)."""
    params = dict(peer.named_parameters())
    for name, value in state.items():
        target = params[peer_name(name)]
        if name.endswith("actnorm.logs"):
            value = value.exp()  # cmarr's ActNorm scales by exp(logs), the peer's by scale
        assert target.numel() == value.numel(), name
        with torch.no_grad():
            target.copy_(swap_cat_sources(name, value).reshape(target.shape))


def options(cfg) -> SimpleNamespace:
    """The args DICMOR reads (config.json's MOSI values, at cmarr's sizes and K classes)."""
    return SimpleNamespace(
        use_bert=False, use_finetune=False, transformers="bert", pretrained="bert-base-uncased",
        dst_feature_dim_nheads=(cfg.width, cfg.heads), feature_dims=tuple(case.DIMS[m] for m in MODALITIES),
        nlevels=cfg.layers, attn_dropout=cfg.attn_dropout, attn_dropout_a=cfg.attn_dropout_audio,
        attn_dropout_v=cfg.attn_dropout_video, relu_dropout=cfg.relu_dropout, embed_dropout=cfg.embed_dropout,
        res_dropout=cfg.res_dropout, output_dropout=cfg.output_dropout, text_dropout=cfg.text_dropout,
        attn_mask=cfg.attention == "causal-last", train_mode="classification", num_classes=case.N_CLASSES,
        conv1d_kernel_size_l=cfg.kernel_size, conv1d_kernel_size_a=cfg.kernel_size,
        conv1d_kernel_size_v=cfg.kernel_size, dataset_name="mosi",
    )  # fmt: skip


def record(name: str, num_modal: int, peer, trainer, model, stage, state, commit: str) -> None:
    """One forward, loss and clipped backward of the peer with `num_modal` modalities available;
    the record into tests/data/parity/<name>.npz."""
    weights, clip, length = stage.weights, stage.optim.clip, model.cfg.seq_len
    x = case.features(SEED + 1, length)
    labels = torch.tensor(case.LABELS)
    random.seed(PY_SEED)
    drawn = random.sample([0, 1, 2], num_modal)
    random.seed(PY_SEED)  # the forward's own draw gives the same
    res = peer(x["text"], x["audio"], x["video"], labels, num_modal=num_modal)
    assert res["ava_modal_idx"] == drawn
    given = [m for m in MODALITIES if PEER_ORDER.index(m) in drawn]
    terms = {"task": trainer.criterion(res["M"], labels), "nll_t": res["log_p_l"], "nll_s": res["log_p_a"],
             "nll_v": res["log_p_v"], "rec": res["loss_rec"]}  # fmt: skip
    peer.zero_grad(set_to_none=True)
    combine_loss = terms["task"] + 0.1 * (terms["nll_t"] + terms["nll_s"] + terms["nll_v"] + terms["rec"])
    combine_loss.backward()  # DICMOR.py do_train's loss and clip
    torch.nn.utils.clip_grad_value_([p for p in peer.parameters() if p.requires_grad], clip)

    out = {"out.logits": res["M"].detach().double().numpy()}
    out.update({f"loss.{k}": np.float64(weights[k] * v.item()) for k, v in terms.items()})
    params = dict(peer.named_parameters())
    for n in state:
        grad = params[peer_name(n)].grad
        if grad is not None:  # the parameters the step trains (test_parity compares the sets)
            out[f"grad.{n}"] = case.digest(swap_cat_sources(n, grad.reshape(state[n].shape)))
    meta = {
        "system": "dicmor", "peer": "mdswyz/DiCMoR", "switches": SWITCHES, "peer_commit": commit,
        "torch": torch.__version__, "seed": SEED, "conditions": "given:" + ",".join(given), "length": length,
        "modalities": list(MODALITIES), "clip": clip, "clip_mode": "value", "python_random_seed": PY_SEED,
        "num_modal": num_modal, "small_weights": SMALL, "loss_weights": weights,
        "compared": "logits; task (the peer's classification branch: CrossEntropyLoss), nll_t, nll_s, nll_v, rec, "
                    "each times cmarr's weight; value-clipped gradients of every parameter with one",
        "command": "python3 bench/parity/record_dicmor.py <checkout of mdswyz/DiCMoR> [commit]",
    }  # fmt: skip
    out["meta"] = np.array(json.dumps(meta))
    rec.OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(rec.OUT / f"{name}.npz", **out)
    print(name, json.dumps(meta))


def main() -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    try:
        import pynvml  # noqa: F401
    except ImportError:
        sys.modules["pynvml"] = types.ModuleType("pynvml")
    from trains.singleTask.DICMOR import DICMOR as Trainer
    from trains.singleTask.model.dicmor import DICMOR

    stage, model = case.build("dicmor", switches=SWITCHES, modalities=MODALITIES)
    cfg = model.cfg
    fixed = (cfg.flow_steps, cfg.flow_hidden, cfg.rcab_blocks, cfg.rcab_reduction)
    assert fixed == (32, 64, 20, 16), "DICMOR fixes 32 coupling steps of 64 channels and 20 RCABs, reduction 16"
    weights = {"task": 1.0, "nll_t": 0.1, "nll_s": 0.1, "nll_v": 0.1, "rec": 0.1}
    assert stage.weights == weights, "DICMOR.py's combine_loss weights"
    assert (stage.optim.clip, stage.optim.clip_mode) == (0.6, "value"), "DICMOR.py's clip_grad_value_ at 0.6"
    commit = subprocess.run(["git", "-C", sys.argv[1], "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = sys.argv[2] if len(sys.argv) > 2 else commit.stdout.strip() or "unknown"
    torch.manual_seed(0)
    args = options(cfg)
    peer, trainer = DICMOR(args), Trainer(args)
    state = case.fill_weights(model, SEED, SMALL)
    load(peer, state)
    peer.eval()
    for name, num_modal in RECORDS.items():
        record(name, num_modal, peer, trainer, model, stage, state, commit)


if __name__ == "__main__":
    main()
