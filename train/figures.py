"""The paper's figures for a user's own runs, each with numbers beside the picture.

- Fig. 4: WAR and UAR (Avg. over the six missing conditions, mean +- std over folds x seeds)
  against a loss weight, from a sweep of runs, with the paper's optimum marked (PNG + CSV).
- Fig. 5: t-SNE of reconstructed vs true representations of one test fold, for every system that
  reconstructs (colour = modality, light = reconstructed, dark = true), and per modality the MMD²
  between the two sets (RBF kernel, bandwidth the median pairwise distance; lower = closer).

A system offers its representations through `reconstruct(batch, m) -> (true, reconstructed)`,
each (B, E): the modality's representation computed from its true features, and the one the
model rebuilds when the condition drops it and gives the other two.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.plots import pyplot
from cmarr.train.rundir import RunDir

COLOURS = {"audio": ("#9ecae1", "#08519c"), "text": ("#fcbba1", "#a50f15"), "video": ("#a1d99b", "#006d2c")}
LABEL = {"audio": "speech", "text": "text", "video": "video"}


# ---------------------------------------------------------------- Fig. 4: loss-weight sweeps


def write_sweep(folder: Path, key: str, points: list[tuple[float, dict]], optimum: float | None) -> Path:
    """`points`: (weight value, the run's Table-2 table). Writes sweep.csv and sweep.png."""
    folder.mkdir(parents=True, exist_ok=True)
    points = sorted(points)
    with open(folder / "sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([key, "war_mean", "war_std", "uar_mean", "uar_std"])
        for value, table in points:
            avg = table["Avg."]
            w.writerow([value, *(f"{avg[k]:.4f}" for k in ("war_mean", "war_std", "uar_mean", "uar_std"))])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    x = [v for v, _ in points]
    for metric, colour in (("war", "#1f77b4"), ("uar", "#ff7f0e")):
        mean = [t["Avg."][f"{metric}_mean"] for _, t in points]
        std = [t["Avg."][f"{metric}_std"] for _, t in points]
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, color=colour, label=metric.upper())
    if optimum is not None:
        ax.axvline(optimum, color="grey", linestyle="--", label=f"paper's optimum ({optimum:g})")
    if min(x) > 0 and max(x) / min(x) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel("Avg. over missing conditions (%)")
    ax.set_title(f"Effect of {key.split('.')[-1]} (mean ± std over folds × seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "sweep.png", dpi=120)
    plt.close(fig)
    return folder / "sweep.png"


# ---------------------------------------------------------------- Fig. 5: reconstructions


@torch.no_grad()
def representation_sets(model, data, rows: np.ndarray, norm, device, batch_size: int = 32) -> dict[str, tuple]:
    """Per modality m: (true (N, E), reconstructed (N, E)) over the utterances of `rows` that have
    all three modalities, m dropped and the other two given."""
    from cmarr.train.missing import FULL, eligible

    model.eval()
    rows = rows[eligible(data.present, rows, FULL)]
    out = {}
    for m in MODALITIES:
        true, rec = [], []
        for lo in range(0, len(rows), batch_size):
            idx = rows[lo : lo + batch_size]
            given = {n: np.full(len(idx), n != m) for n in MODALITIES}
            known = {n: np.ones(len(idx), bool) for n in MODALITIES}
            t, r = model.reconstruct(data.batch(idx, given, norm, device, known), m)
            true.append(t.float().cpu().numpy())
            rec.append(r.float().cpu().numpy())
        if true:
            out[m] = (np.concatenate(true), np.concatenate(rec))
    return out


MIN_POINTS = 5  # complete test utterances a modality needs for its MMD and t-SNE points (fewer: left out)


def mmd2(a: np.ndarray, b: np.ndarray, max_points: int = 2000, seed: int = 0) -> float:
    """Unbiased squared maximum mean discrepancy between the rows of a and b, RBF kernel with the
    bandwidth set to the median pairwise distance of the pooled set (scale-free)."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(seed)
    a = a[rng.permutation(len(a))[:max_points]].astype(np.float64)
    b = b[rng.permutation(len(b))[:max_points]].astype(np.float64)
    pooled = np.concatenate([a, b])
    d = cdist(pooled, pooled, "sqeuclidean")
    med = np.median(d[np.triu_indices(len(pooled), 1)])
    k = np.exp(-d / max(med, 1e-12))
    n, m = len(a), len(b)
    kaa, kbb, kab = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kaa.sum() - n) / (n * (n - 1)) + (kbb.sum() - m) / (m * (m - 1)) - 2 * kab.mean())


def write_tsne(path: Path, sets: dict[str, dict[str, tuple]], title: str, max_points: int = 300, seed: int = 0) -> Path:
    """One t-SNE panel per system over all its true and reconstructed representations."""
    from sklearn.manifold import TSNE

    plt = pyplot()
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 4.4), squeeze=False)
    for ax, (system, per_modality) in zip(axes[0], sets.items()):
        points, kinds = [], []
        for m, (true, rec) in per_modality.items():
            keep = np.random.default_rng(seed).permutation(len(true))[:max_points]
            points += [true[keep], rec[keep]]
            kinds += [(m, "true")] * len(keep) + [(m, "reconstructed")] * len(keep)
        xy = TSNE(2, perplexity=min(30, max(5, len(kinds) // 10)), random_state=seed, init="pca").fit_transform(
            np.concatenate(points)
        )
        kinds_arr = np.array(kinds)
        for m in per_modality:
            for which, shade in (("reconstructed", 0), ("true", 1)):
                sel = (kinds_arr[:, 0] == m) & (kinds_arr[:, 1] == which)
                label = f"{LABEL[m]} ({which})"
                ax.scatter(*xy[sel].T, s=6, c=COLOURS[m][shade], label=label, alpha=0.8, linewidths=0)
        ax.set_title(system)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reconstruction_report(folder: Path, runs: list, data, device) -> dict:
    """For every run whose system reconstructs, the first fold's test representations: a t-SNE PNG
    and the MMD² per modality. Returns {system: {modality: mmd2}}."""
    from cmarr.train.trained import final_checkpoint, load_model

    sets, distances = {}, {}
    for run in runs:
        split = next((s for s in RunDir(run.run_dir).splits("1") if s.path.name == "split0"), None)
        if split is None:
            continue
        model, meta, norm = load_model(final_checkpoint(split.path))
        if not hasattr(model, "reconstruct"):
            continue
        result = split.read_result()
        rows = np.asarray(result["test"]["{s,v,t}"]["ids"], dtype=np.int64)  # the fold's complete test utterances
        found = representation_sets(model.to(device), data, rows, norm, device)
        found = {m: pair for m, pair in found.items() if len(pair[0]) >= MIN_POINTS}  # MMD and t-SNE need a few
        if found:
            sets[run.system] = found
            distances[run.system] = {m: mmd2(t, r) for m, (t, r) in found.items()}
    if sets:
        write_tsne(folder / "reconstructions_tsne.png", sets, "Reconstructed (light) vs true (dark) representations")
    return distances
