"""Where a CM-ARR training step's time goes, part by part, against the matmul rate at its shapes.

One process, one length-bucketed training batch of the paper's sizes (the epoch's median by padded
size, from a synthetic IEMOCAP-shaped store), CPU fp32. Each part runs forward and backward on
inputs captured from a real forward of that batch, the parts alternating over `--repeats` rounds
(median): the UMC alignment and projections of the three modalities, the flows Z_m = F_m(X_m) on
every known row (`stacked.flows_forward`), the inverse flows and RCAN on the missing rows
(`stacked.flows_inverse` + `stacked.reconstruct`), the whole forward + losses + backward, and the
full step with AdamW. Beside them: the batched matmul rate at the shapes those parts multiply
(forward layouts), and the fp32 2048^3 roof, best of 5, before and after. With `--compile`, the
flows and the inverse + RCAN once more through `torch.compile` (compile seconds reported apart).
Writes its section into bench/results/train.md.

    python bench/cmarr_step.py                 # about 2 minutes on a 2-core CPU
    python bench/cmarr_step.py --compile       # plus torch.compile (about 6 more minutes)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table  # noqa: E402
from train_cpu import _model_step, _setup, flop_counter, matmul_roof, splice  # noqa: E402

MARKS = ("<!-- cm-arr step section: bench/cmarr_step.py -->", "<!-- end of cm-arr step section -->")
# (A, n, k) @ (A, k, m): the flows' couplings and 1x1 mixing (3 modalities x 16 rows x 50 steps),
# the RCAN's k=3 convolutions at 128 channels (3 x 9 missing rows x 50), the UMC's input map
SHAPES = {
    "flow coupling conv 32->64, k=3": (3, 800, 96, 64),
    "flow 1x1 mixing 64->64": (3, 800, 64, 64),
    "flow coupling conv 64->64, k=3": (3, 800, 192, 64),
    "RCAN conv 128->128, k=3": (3, 450, 384, 128),
    "UMC input 768->128 (speech frames)": (1, 3024, 768, 128),
}


def bmm_rate(a: int, n: int, k: int, m: int, repeats: int = 30) -> float:
    x, w = torch.randn(a, n, k), torch.randn(a, k, m)
    for _ in range(3):
        torch.bmm(x, w)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.bmm(x, w)
    return 2 * a * n * k * m * repeats / (time.perf_counter() - t0) / 1e9


def median_batch(store: Path):
    """The paper-size model, its stage and optimizer, and the median bucketed training batch."""
    from cmarr.train.batching import Batching
    from train_batches import _timed_step, quantile_batches

    stage, data, rows, model, opt, ctx, sampler = _setup(str(store), True, batching=Batching())
    epoch = data.epoch_batches(rows, stage.optim.batch_size, np.random.default_rng(0), Batching())
    picked = quantile_batches(data, epoch, 3)[1:2]
    given = sampler.draw(data.present, picked, np.random.default_rng(1))
    model.train()
    _, _, batch = _timed_step(model, stage, opt, ctx, picked[0], given[0], "none", lambda: None)
    return stage, model, opt, batch


def parts(stage, model, opt, batch, compiled: bool) -> dict[str, tuple]:
    """name -> (callable running forward + backward, note)."""
    import cmarr.train.model.cmarr as cm
    from cmarr.train.model import stacked

    captured = {}
    wrapped = {name: getattr(cm, name) for name in ("flows_on_rows", "reconstruct_on_rows")}

    def capture(name):
        def call(*args):
            captured[name] = args
            return wrapped[name](*args)

        return call

    for name in wrapped:
        setattr(cm, name, capture(name))
    try:
        model(batch)
    finally:
        for name, fn in wrapped.items():
            setattr(cm, name, fn)
    flows, rows, x = captured["flows_on_rows"]
    x = {m: v.detach().requires_grad_(True) for m, v in x.items()}
    inv_flows, recs, missing, z = captured["reconstruct_on_rows"]
    z = z.detach().requires_grad_(True)

    def backward(values):
        model.zero_grad(set_to_none=True)
        sum(v.float().sum() for v in values).backward()

    def umc():
        out = []
        for m in model.modalities:
            g, projected, _ = model._encode(m, batch.x[m], batch.mask[m], batch.known[m])
            out += [projected, g.mu]
        backward(out)

    def whole():
        out = model(batch)
        terms = model.losses(batch, out)
        backward([sum(stage.weights[k] * v for k, v in terms.items())])

    def flows_part(fwd=stacked.flows_forward):
        stack = stacked.RowStack([rows[m] for m in flows])
        z_, logdet = fwd(stack.pick(list(flows.values())), stack.gather([x[m] for m in flows]))
        backward([z_, logdet])

    def inverse_part(inv=stacked.flows_inverse, rec=stacked.reconstruct):
        stack = stacked.RowStack([missing[m] for m in inv_flows])
        x_tilde = inv(stack.pick(list(inv_flows.values())), stack.gather([z] * len(inv_flows)))
        backward([rec(stack.pick([recs[m] for m in inv_flows]), x_tilde)])

    out = {
        "UMC + projections (3 modalities)": (umc, ""),
        "flows on the known rows": (flows_part, ""),
        "inverse flows + RCAN on the missing rows": (inverse_part, ""),
        "whole forward + losses + backward": (whole, ""),
        "full step (+ AdamW)": (lambda: _model_step(model, stage, opt, batch), ""),
    }
    if compiled:
        t0 = time.perf_counter()
        fwd = torch.compile(stacked.flows_forward, dynamic=True)
        flows_part(fwd)
        t_flows = time.perf_counter() - t0
        t0 = time.perf_counter()
        inv, rec = torch.compile(stacked.flows_inverse, dynamic=True), torch.compile(stacked.reconstruct, dynamic=True)
        inverse_part(inv, rec)
        t_inv = time.perf_counter() - t0
        out["flows, torch.compile"] = (lambda: flows_part(fwd), f"compiled in {t_flows:.0f} s")
        out["inverse + RCAN, torch.compile"] = (lambda: inverse_part(inv, rec), f"compiled in {t_inv:.0f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.md")
    args = ap.parse_args()
    from cmarr.shared.store.synthetic import IEMOCAP_TIMED, write_synthetic_store

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "timed.zarr"
        write_synthetic_store(store, 800, IEMOCAP_TIMED, "float16", seed=11)
        stage, model, opt, batch = median_batch(store)
        roof_before = matmul_roof()
        todo = parts(stage, model, opt, batch, args.compile)
        flops = {}
        for name, (fn, _) in todo.items():
            fn()  # warm-up
            with flop_counter() as counter:
                fn()
            flops[name] = counter.get_total_flops() / 1e9
        times: dict[str, list[float]] = {name: [] for name in todo}
        for _ in range(args.repeats):  # alternate the parts: a slow moment of the machine hits all
            for name, (fn, _) in todo.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        rates = {name: bmm_rate(*shape) for name, shape in SHAPES.items()}
        roof = max(roof_before, matmul_roof())
    shapes = ", ".join(f"{m} {tuple(v.shape[1:])}" for m, v in batch.x.items())
    rows = []
    for name, (_, note) in todo.items():
        t = float(np.median(times[name]))
        rate = flops[name] / t
        rows.append([name, f"{1e3 * t:.0f}", f"{flops[name]:.2f}", f"{rate:.0f}", f"{100 * rate / roof:.0f}%", note])
    command = "python bench/cmarr_step.py" + (" --compile" if args.compile else "")
    section = (
        "## CM-ARR's step, part by part\n\n"
        f"Command: `{command}`\n\n"
        f"The median length-bucketed batch of 16 ({shapes} frames x features; missing rows per modality "
        f"{ {m: int((~g).sum()) for m, g in batch.given.items()} }), CPU fp32, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} alternating rounds; roof {roof:.0f} GFLOP/s (fp32 2048^3, best of 5, the higher of "
        "before and after).\n\n"
        + md_table(["part (forward + backward)", "ms", "GFLOP", "GFLOP/s", "of the roof", "note"], rows)
        + "\n"
        + md_table(
            ["the part's matmul, alone (forward layout)", "(A, n, k, m)", "GFLOP/s", "of the roof"],
            [[n, str(SHAPES[n]), f"{r:.0f}", f"{100 * r / roof:.0f}%"] for n, r in rates.items()],
        )
    )
    report = args.out.read_text() if args.out.exists() else "# Training benchmark\n\n"
    args.out.write_text(splice(report, section, MARKS))
    print(section)


if __name__ == "__main__":
    main()
