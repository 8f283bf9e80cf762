"""Record MPLMM's outputs, losses and clipped gradients from zrguo/MPLMM's own classes
(src/model.py PromptModel and MULTModel; the loss and clip of src/train.py) on the parity case of
tests/parity_cases.py, for tests/test_parity.py and tests/test_mplmm.py; with --speed, time one
training step of each side by side instead (bench/results/peer-speed-mplmm.md).

    python3 bench/parity/record_mplmm.py /tmp/peers/MPLMM c6f8d18e9222bd65165a3214820201dc51a35f19
    python3 bench/parity/record_mplmm.py /tmp/peers/MPLMM c6f8d18e9222bd65165a3214820201dc51a35f19 --speed

(the first argument a checkout of zrguo/MPLMM, the second its commit). As record_dicmor.py: the
peer's classes unedited at cmarr's sizes (768/768/342, K = 4, main.py's other defaults), on the CPU,
in eval mode (no dropout draw to match), the case's weights copied in by name; no monkeypatch.

- Records: mplmm.npz, the prompt model (stage 2) on the case's six conditions, one per row, which
  are MPLMM's missing codes 0-5 (the peer's per-sample `missing_mod`); mplmm-all.npz, the prompt
  model with every modality (code 6); and tests/data/parity/stages/mplmm-full.npz, the pre-training
  backbone MULTModel (stage 1) on complete data (tests/test_mplmm.py compares it: test_parity
  compares a system's last stage).
- Input: the peer reads fixed lengths per modality (IEMOCAP's get_seq_len, 22/350/50): the case's
  rows (at most 12 steps) zero-padded to them, as the peer's collate pads; cmarr pads the same.
  The modalities a row does not give keep their true features in the peer's input (its forward never
  reads them: each is generated from the others), cmarr's training batch knows them too.
- Freezing: the peer's `transfer_model` loads a torch.save'd MULTModel and sets requires_grad False
  on every parameter it copied (all MULTModel's but proj_l/a/v and out_layer). Its torch.load of a
  pickled module fails under torch's weights_only default, so the record applies that rule by
  name against a MULTModel built here, then checks that the frozen set is cmarr's backbone.
- Weights: every case tensor, the zero-initialised prompts included (at zero the missing-type
  prompts take no gradient, see docs/systems/mplmm.md, so the case makes them nonzero).
- Parameter counts of both sides are recorded in the meta (authors' vs cmarr's at 768/768/342).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cmarr.train.systems.mplmm  # noqa: F401  (registers the system)
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_dicmor  # noqa: E402
import record_mmin as rec  # noqa: E402
import side_by_side  # noqa: E402

case = rec.case
SEED = rec.SEED
MODALITIES = ("text", "audio", "video")  # the peer's l, a, v
LETTER = {"text": "l", "audio": "a", "video": "v"}
CODES = {("text",): 0, ("audio",): 1, ("video",): 2, ("text", "audio"): 3, ("text", "video"): 4}
CODES.update({("audio", "video"): 5, (): 6})  # the peer's missing_mod: which modalities are missing
RECORDS = {"mplmm": "six", "mplmm-all": "full"}
STAGE_RECORD = rec.OUT / "stages" / "mplmm-full.npz"
PEER_EXCLUDED = ("proj_l.weight", "proj_a.weight", "proj_v.weight", "out_layer.weight", "out_layer.bias")


def peer_name(name: str) -> str:
    """cmarr's parameter name -> the peer's: proj, fusion and head as DiCMoR's record maps them
    (the same MulT code); the prompts' names below."""
    head, rest = name.split(".", 1)
    if head != "prompts":
        return record_dicmor.peer_name(name)
    kind, rest = rest.split(".", 1) if "." in rest else (rest, "")
    if kind == "generative":
        return "generative_prompt"
    if kind == "type_prompt":
        return "missing_type_prompt"
    if kind in ("signal_missing", "signal_present"):
        return f"prompt{LETTER[rest]}_{'m' if kind == 'signal_missing' else 'nm'}"
    if kind == "type_map":
        return f"m_{LETTER[rest]}"
    pair, tail = rest.split(".", 1)
    if kind == "translate":  # translate.<source>_<target>: the peer's <s>2<t>
        source, target = pair.split("_")
        return f"{LETTER[source]}2{LETTER[target]}.{tail}"
    target, sources = pair.split("_from_")  # merge.<target>_from_<sources>: the peer's <t>_<sources>p
    letters = "".join(LETTER[s] for s in sources.split("_"))
    return f"{LETTER[target]}_{'al' if letters == 'la' else letters}p.{tail}"  # v_alp concatenates l, a


def options(cfg) -> SimpleNamespace:
    """main.py's hyp_params at cmarr's sizes (its defaults, IEMOCAP's output_dim and lengths)."""
    return SimpleNamespace(
        orig_d_l=case.DIMS["text"], orig_d_a=case.DIMS["audio"], orig_d_v=case.DIMS["video"],
        proj_dim=cfg.width, num_heads=cfg.heads, layers=cfg.layers, attn_dropout=cfg.attn_dropout,
        attn_dropout_a=cfg.attn_dropout_audio, attn_dropout_v=cfg.attn_dropout_video,
        relu_dropout=cfg.relu_dropout, res_dropout=cfg.res_dropout, out_dropout=cfg.output_dropout,
        embed_dropout=cfg.embed_dropout, attn_mask=True, prompt_length=cfg.prompt_length,
        prompt_dim=cfg.width, seq_len=(cfg.text_len, cfg.audio_len, cfg.video_len), output_dim=case.N_CLASSES,
    )  # fmt: skip


def load(peer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy every case tensor into the peer's parameter of the mapped name."""
    params = dict(peer.named_parameters())
    assert len(params) == len(state), (len(params), len(state))
    for name, value in state.items():
        target = params[peer_name(name)]
        assert target.shape == value.shape, name
        with torch.no_grad():
            target.copy_(value)


def freeze_as_transfer_model(peer: torch.nn.Module, backbone: torch.nn.Module) -> None:
    """utils.transfer_model's requires_grad rule: every parameter named in the pre-trained model's
    state dict but the excluded five."""
    names = set(backbone.state_dict())
    for name, param in peer.named_parameters():
        if name in names and name not in PEER_EXCLUDED:
            param.requires_grad = False


def peer_inputs(x: dict[str, torch.Tensor], cfg) -> list[torch.Tensor]:
    """(B, T_m, F_m) zero-padded to the peer's fixed lengths, in its l, a, v order."""
    return [torch.nn.functional.pad(x[m], (0, 0, 0, cfg.length(m) - x[m].shape[1])) for m in MODALITIES]


def missing_codes(conditions: str) -> torch.Tensor:
    given = case.given_rows(conditions)
    return torch.tensor([CODES[tuple(m for m in MODALITIES if not given[m][r])] for r in range(6)])


def step(peer, inputs, codes, labels, clip: float) -> dict[str, np.ndarray]:
    """The peer's train step (src/train.py): CE on the K outputs, backward, clip_grad_norm_."""
    preds = peer(*inputs, codes) if codes is not None else peer(*inputs)
    loss = torch.nn.CrossEntropyLoss()(preds.view(-1, case.N_CLASSES), labels.view(-1))
    peer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(peer.parameters(), clip)
    return {"out.logits": preds.detach().double().numpy(), "loss.task": np.float64(loss.item())}


def record(path: Path, peer, model, stage, state, conditions: str, commit: str, stage_index: int) -> None:
    x = case.features(SEED + 1)
    codes = missing_codes(conditions) if stage_index else None
    out = step(peer, peer_inputs(x, model.cfg), codes, torch.tensor(case.LABELS), stage.optim.clip)
    params = dict(peer.named_parameters())
    for n in state:
        grad = params[peer_name(n)].grad
        if grad is not None:
            out[f"grad.{n}"] = case.digest(grad)
    peer_trainable = sum(p.numel() for p in peer.parameters() if p.requires_grad)
    meta = {
        "system": "mplmm", "stage": stage.name, "peer": "zrguo/MPLMM", "peer_commit": commit,
        "torch": torch.__version__, "seed": SEED, "conditions": conditions, "modalities": list(MODALITIES),
        "missing_mod": None if codes is None else codes.tolist(), "clip": stage.optim.clip, "clip_mode": "norm",
        "loss_weights": stage.weights,
        "parameters": {"peer": sum(p.numel() for p in peer.parameters()), "peer_trainable": peer_trainable,
                       "cmarr": sum(p.numel() for p in model.parameters()),
                       "cmarr_trainable": sum(p.numel() for p in model.trainable_parameters())},
        "compared": "logits; task (CrossEntropyLoss); gradients after clip_grad_norm_(0.8) of every parameter "
                    "with one",
        "command": "python3 bench/parity/record_mplmm.py <checkout of zrguo/MPLMM> [commit]",
    }  # fmt: skip
    out["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    print(path.name, json.dumps(meta))


def build(stage_index: int):
    stage, model = case.build("mplmm", stage_index, modalities=MODALITIES)
    state = case.fill_weights(model, SEED)
    model.freeze()
    model.eval()
    return stage, model, state


def parity(commit: str) -> None:
    from src.model import MULTModel, PromptModel

    stage, model, state = build(0)
    args = options(model.cfg)
    backbone = MULTModel(args)
    load(backbone, state)
    backbone.eval()
    record(STAGE_RECORD, backbone, model, stage, state, "full", commit, 0)
    stage, model, state = build(-1)
    peer = PromptModel(args)
    freeze_as_transfer_model(peer, backbone)
    trainable = {id(p) for p in model.trainable_parameters()}
    frozen = {peer_name(n) for n, p in model.named_parameters() if id(p) not in trainable}
    assert frozen == {n for n, p in peer.named_parameters() if not p.requires_grad}, "the backbone both freeze"
    load(peer, state)
    peer.eval()
    for name, conditions in RECORDS.items():
        record(rec.OUT / f"{name}.npz", peer, model, stage, state, conditions, commit, -1)


def speed(commit: str, batch_size: int = 64, repeats: int = 7) -> None:
    """One training step (forward, loss, backward, clip, Adam) of each side on the same batch:
    B rows at the fixed lengths, each row a missing code drawn as MPLMM draws at drop_rate 0.7;
    one thread, train mode, alternating, the median of `repeats` after a warm-up."""
    from cmarr.train.batch import Batch
    from cmarr.train.stage import make_optimizer
    from src.model import MULTModel, PromptModel

    stage, model = case.build("mplmm", -1, modalities=MODALITIES)
    g = torch.Generator().manual_seed(0)
    cfg = model.cfg
    x = {m: torch.randn(batch_size, cfg.length(m), case.DIMS[m], generator=g) for m in MODALITIES}
    missing = torch.where(torch.rand(batch_size, generator=g) < 0.7, torch.randint(0, 6, (batch_size,), generator=g), 6)
    pattern = {code: miss for miss, code in CODES.items()}
    given = {m: torch.tensor([m not in pattern[int(c)] for c in missing]) for m in MODALITIES}
    labels = torch.randint(0, case.N_CLASSES, (batch_size,), generator=g)
    mask = {m: torch.ones(batch_size, cfg.length(m), dtype=torch.bool) for m in MODALITIES}
    batch = Batch(x, mask, given, {m: torch.ones(batch_size, dtype=torch.bool) for m in MODALITIES}, labels)
    peer = PromptModel(options(cfg))
    freeze_as_transfer_model(peer, MULTModel(options(cfg)))
    model.freeze()
    model.train(), peer.train()
    ours_opt = make_optimizer(stage.optim, model)
    peer_opt = torch.optim.Adam([p for p in peer.parameters() if p.requires_grad], lr=stage.optim.lr)

    def theirs() -> None:
        step(peer, [x[m] for m in MODALITIES], missing, labels, stage.optim.clip)
        peer_opt.step()

    times = side_by_side.alternate(side_by_side.cmarr_step(model, stage, ours_opt, batch), theirs, repeats)
    side_by_side.report(
        "mplmm", "MPLMM: cmarr's training step vs the authors' (zrguo/MPLMM)",
        f"python3 bench/parity/record_mplmm.py <checkout> {commit} --speed",
        f"One training step of the prompt model (stage 2: forward, cross-entropy, backward, clip_grad_norm_ "
        f"0.8, Adam) on the same batch: {batch_size} rows at the fixed lengths "
        f"{cfg.text_len}/{cfg.audio_len}/{cfg.video_len} (text/audio/video) of 768/768/342 features, each row's "
        "missing code drawn as MPLMM draws at drop_rate 0.7; train mode;",
        times,
        "cmarr runs each missing pattern's rows together; the peer loops over rows in Python "
        "(get_complete_data, the missing-type prompts).",
    )  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    commit = subprocess.run(["git", "-C", sys.argv[1], "rev-parse", "HEAD"], capture_output=True, text=True)
    args = [a for a in sys.argv[2:] if not a.startswith("--")]
    commit = args[0] if args else commit.stdout.strip() or "unknown"
    torch.manual_seed(0)
    speed(commit) if "--speed" in sys.argv else parity(commit)


if __name__ == "__main__":
    main()
