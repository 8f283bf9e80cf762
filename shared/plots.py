"""Figures both stages write (confusion matrices), rendered off-screen with matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the off-screen Agg backend (no display on clusters and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    cm, labels: list[str], title: str, path: Path, xlabel: str = "predicted", ylabel: str = "true"
) -> None:
    plt = pyplot()
    cm = np.asarray(cm)
    size = 1.6 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 0.4, size))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(labels)):
        for j in range(len(labels)):
            dark = cm[i, j] > cm.max() / 2
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(
        range(len(labels)), labels, rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center"
    )
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
