"""Record IMDer's outputs, losses and clipped gradients from mdswyz/IMDer's own class
(trains/singleTask/model/imder.py IMDER; the loss sum and clip of trains/singleTask/IMDER.py) on
the parity case of tests/parity_cases.py, into tests/data/parity/imder.npz (one modality missing)
and imder-one.npz (two missing), for tests/test_parity.py.

    python3 bench/parity/record_imder.py /tmp/peers/IMDer 1901a92f0c91017ef9ac0dc2f2ca0b101a4dec9c

(the first argument a checkout of mdswyz/IMDer, the second its commit). As record_dicmor.py: the
peer's model at cmarr's sizes, on the CPU, in eval mode (no dropout draw to match), the case's
weights copied in by name; one common length (50: cmarr's masked adaptive pooling is then the
identity); BERT off (`use_bert` false: both read the case's 768-d text features); the peer's
classification branch (K outputs, IMDER.py's `nn.CrossEntropyLoss`); cat.text's input halves
swapped (record_dicmor.swap_cat_sources: the peer's cat_va takes video first). Besides:

- Random draws: the forward draws the available modalities (`random.sample`, seeded as in
  record_dicmor.py and checked) and all its diffusion noise from torch's global generator: each
  missing modality's score-matching t and noise, then each one's sampler start and per step two
  noises. torch is seeded with cmarr's `sample_seed` before the call; cmarr's model in eval mode
  draws from a generator of that seed, in the same order and shapes.
- Device: imder.py fixes `device = 'cuda'` (a module global read by marginal_prob_std) and calls
  the sampler with device='cuda'; both are pointed at the CPU (the one monkeypatch: the device).
- trains/utils imports pynvml (never called here): where absent an empty module stands in.
- Parameter counts of both sides, per stage, are printed and kept in the meta (`parameters`):
  IMDER's total, those it trains in the missing stage (requires_grad, less proj_l/a/v, which its
  forward runs under no_grad; GaussianFourierProjection.W is requires_grad False), and cmarr's.
"""

from __future__ import annotations

import functools
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
import cmarr.train.systems.imder  # noqa: E402, F401  (registers "imder")
import record_dicmor as dic  # noqa: E402
import record_mmin as rec  # noqa: E402

case = rec.case
SEED = rec.SEED
RECORDS = {"imder": 2, "imder-one": 1}  # record -> modalities available (num_modal)
# rec_m's closing 1x1 convs get case weights of std 0.003 (near the published default init's scale
# for a sample this large): at the case's usual std the recovered modality is ~40 times the truth,
# rec ~1e3, and float32's rounding of its gradients passes 1e-5
SMALL = {r"^rec\.\w+\.out\.": 0.003, r"^rec\.\w+\.inp\.weight": 0.01}
PY_SEED = 0  # python's random before each forward: video, audio (text missing) and video alone
PEER_ORDER = ("text", "video", "audio")  # IMDer's modal_idx 0, 1, 2
MODALITIES = ("text", "audio", "video")  # cmarr's input order, IMDer's l, a, v
LETTER = {"text": "l", "audio": "a", "video": "v"}
CAT = {"text": "cat_va", "video": "cat_la", "audio": "cat_lv"}  # the missing modality's cat_*
TRANSFORMER = [(r"\.attn\.", ".self_attn."), (r"\.norm_attn\.", ".layer_norms.0."),
               (r"\.norm_ff\.", ".layer_norms.1."), (r"^norm\.", "layer_norm.")]  # fmt: skip


def score_name(rest: str) -> str:
    """A name inside cmarr's ScoreNet -> the peer's: down.<i> is level i + 1 (conv, conv_cond,
    attention_, dense, gnorm), up.<j> level 4 - j (tconv, tconv_cond, attention_t, dense 5 + j,
    tgnorm); time / time_proj its embed.0 / embed.1."""
    if rest.startswith("time."):
        return "embed.0." + rest[len("time.") :]
    if rest.startswith("time_proj."):
        return "embed.1." + rest[len("time_proj.") :]
    path, j, part, tail = rest.split(".", 3)
    k = int(j) + 1 if path == "down" else 4 - int(j)
    t = "t" if path == "up" else ""
    if part == "attention":
        for pattern, repl in TRANSFORMER:
            tail = re.sub(pattern, repl, tail)
        return f"attention_{t}{k}.{tail}"
    names = {"conv": f"{t}conv{k}", "cond": f"{t}conv{k}_cond", "norm": f"{t}gnorm{k}",
             "dense": f"dense{k if path == 'down' else 5 + int(j)}.dense"}  # fmt: skip
    return f"{names[part]}.{tail}"


def peer_name(cmarr_name: str) -> str:
    """cmarr's parameter name -> the IMDER module's (score.<m> its score_<l|a|v>, cat.<m> the cat_*
    of the two others; proj, rec, fusion and head as record_dicmor.peer_name)."""
    head, rest = cmarr_name.split(".", 1)
    if head in ("score", "cat"):
        m, rest = rest.split(".", 1)
        return f"score_{LETTER[m]}.{score_name(rest)}" if head == "score" else f"{CAT[m]}.{rest}"
    return dic.peer_name(cmarr_name)


def load(peer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy every case tensor into the peer's parameter of the mapped name."""
    params = dict(peer.named_parameters())
    assert len(params) == len(state), "every parameter of either side has one on the other"
    for name, value in state.items():
        target = params[peer_name(name)]
        assert target.shape == value.shape, name
        with torch.no_grad():
            target.copy_(dic.swap_cat_sources(name, value))


def options(cfg) -> SimpleNamespace:
    """The args IMDER reads (config.json's MOSI values, at cmarr's sizes and K classes)."""
    return SimpleNamespace(
        use_bert=False, use_finetune=False, transformers="bert", pretrained="bert-base-uncased",
        dst_feature_dim_nheads=(cfg.width, cfg.heads), feature_dims=tuple(case.DIMS[m] for m in MODALITIES),
        nlevels=cfg.layers, attn_dropout=cfg.attn_dropout, attn_dropout_a=cfg.attn_dropout_audio,
        attn_dropout_v=cfg.attn_dropout_video, relu_dropout=cfg.relu_dropout, embed_dropout=cfg.embed_dropout,
        res_dropout=cfg.res_dropout, output_dropout=cfg.output_dropout, text_dropout=cfg.text_dropout,
        attn_mask=True, train_mode="classification", num_classes=case.N_CLASSES,
        conv1d_kernel_size_l=cfg.kernel_size, conv1d_kernel_size_a=cfg.kernel_size,
        conv1d_kernel_size_v=cfg.kernel_size, dataset_name="mosi",
    )  # fmt: skip


def cpu_device(imder_module) -> None:
    """Point imder.py's fixed 'cuda' at the CPU (its module global and its sampler calls)."""
    imder_module.device = "cpu"
    sampler = imder_module.Euler_Maruyama_sampler
    imder_module.Euler_Maruyama_sampler = functools.wraps(sampler)(
        lambda *a, **k: sampler(*a, **{**k, "device": "cpu"})
    )


def parameter_counts(peer: torch.nn.Module) -> dict[str, int]:
    """Both sides' counts at cmarr's sizes: totals, and what each trains in each stage (cmarr: its
    trainable_parameters() with requires_grad; the peer: requires_grad, and in the missing stage
    not proj_*, computed under no_grad in IMDER.forward, so never given a gradient)."""
    params = list(peer.named_parameters())
    counts = {
        "peer": sum(p.numel() for _, p in params),
        "peer_requires_grad": sum(p.numel() for _, p in params if p.requires_grad),
        "peer_trained_missing": sum(p.numel() for n, p in params if p.requires_grad and not n.startswith("proj_")),
    }
    for key, index in (("cmarr_full", 0), ("cmarr_missing", -1)):
        model = case.build("imder", index, modalities=MODALITIES)[1]
        model.freeze()
        counts[key] = sum(p.numel() for p in model.parameters())
        counts[f"{key}_trained"] = sum(p.numel() for p in model.trainable_parameters() if p.requires_grad)
    return counts


def record(name: str, num_modal: int, peer, trainer, model, stage, state, commit: str, counts: dict) -> None:
    """One forward, loss and clipped backward of the peer with `num_modal` modalities available."""
    weights, clip, length = stage.weights, stage.optim.clip, model.cfg.seq_len
    x = case.features(SEED + 1, length)
    labels = torch.tensor(case.LABELS)
    random.seed(PY_SEED)
    drawn = random.sample([0, 1, 2], num_modal)
    random.seed(PY_SEED)
    torch.manual_seed(model.cfg.sample_seed)  # cmarr's eval-mode noise generator
    res = peer(x["text"], x["audio"], x["video"], num_modal=num_modal)
    assert res["ava_modal_idx"] == drawn
    given = [m for m in MODALITIES if PEER_ORDER.index(m) in drawn]
    terms = {"task": trainer.criterion(res["M"], labels), "score_t": res["loss_score_l"],
             "score_s": res["loss_score_a"], "score_v": res["loss_score_v"], "rec": res["loss_rec"]}  # fmt: skip
    terms = {k: v.float() for k, v in terms.items()}  # the peer's zero terms are int64 tensors
    peer.zero_grad(set_to_none=True)
    combine = terms["task"] + 0.1 * (terms["score_t"] + terms["score_v"] + terms["score_s"] + terms["rec"])
    combine.backward()  # IMDER.py do_train's loss and clip
    torch.nn.utils.clip_grad_value_([p for p in peer.parameters() if p.requires_grad], clip)

    out = {"out.logits": res["M"].detach().double().numpy()}
    out.update({f"loss.{k}": np.float64(weights[k] * v.item()) for k, v in terms.items()})
    params = dict(peer.named_parameters())
    for n in state:
        grad = params[peer_name(n)].grad
        if grad is not None:
            out[f"grad.{n}"] = case.digest(dic.swap_cat_sources(n, grad))
    meta = {
        "system": "imder", "peer": "mdswyz/IMDer", "peer_commit": commit, "torch": torch.__version__,
        "seed": SEED, "conditions": "given:" + ",".join(given), "length": length, "modalities": list(MODALITIES),
        "clip": clip, "clip_mode": "value", "python_random_seed": PY_SEED, "torch_seed": model.cfg.sample_seed,
        "num_modal": num_modal, "small_weights": SMALL, "loss_weights": weights,
        "sampling_steps": model.cfg.sampling_steps, "parameters": counts,
        "compared": "logits; task (the peer's classification branch: CrossEntropyLoss), score_t, score_s, score_v, "
                    "rec, each times cmarr's weight; value-clipped gradients of every parameter with one",
        "command": "python3 bench/parity/record_imder.py <checkout of mdswyz/IMDer> [commit]",
    }  # fmt: skip
    out["meta"] = np.array(json.dumps(meta))
    rec.OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(rec.OUT / f"{name}.npz", **out)
    print(name, json.dumps({k: meta[k] for k in ("conditions", "num_modal")}), {k: v.item() for k, v in terms.items()})


def peer_classes(checkout: str):
    """(IMDER model class, IMDER trainer class, the imder module) from a checkout."""
    sys.path.insert(0, checkout)
    try:
        import pynvml  # noqa: F401
    except ImportError:
        sys.modules["pynvml"] = types.ModuleType("pynvml")
    from trains.singleTask.IMDER import IMDER as Trainer
    from trains.singleTask.model import imder as module

    cpu_device(module)
    return module.IMDER, Trainer, module


def main() -> None:
    torch.set_num_threads(1)
    Model, Trainer, _ = peer_classes(sys.argv[1])
    stage, model = case.build("imder", modalities=MODALITIES)
    cfg = model.cfg
    fixed = (cfg.width, cfg.kernel_size, cfg.score_channels, cfg.score_embed, cfg.sampling_steps, cfg.rcab_blocks)
    assert fixed == (32, 3, (32, 64, 128, 256), 256, 100, 20), "IMDER fixes these (scoremodel.py, imder.py)"
    weights = {"task": 1.0, "score_t": 0.1, "score_s": 0.1, "score_v": 0.1, "rec": 0.1}
    assert stage.weights == weights, "IMDER.py's combine_loss weights"
    assert (stage.optim.clip, stage.optim.clip_mode) == (1.0, "value"), "MOSI's clip_grad_value_ at 1.0"
    commit = subprocess.run(["git", "-C", sys.argv[1], "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = sys.argv[2] if len(sys.argv) > 2 else commit.stdout.strip() or "unknown"
    torch.manual_seed(0)
    args = options(cfg)
    peer, trainer = Model(args), Trainer(args)
    state = case.fill_weights(model, SEED, SMALL)
    load(peer, state)
    counts = parameter_counts(peer)
    print("parameters", json.dumps(counts))
    peer.eval()
    for name, num_modal in RECORDS.items():
        record(name, num_modal, peer, trainer, model, stage, state, commit, counts)


if __name__ == "__main__":
    main()
