"""Watching training: each stage's `curves.png`, and optional TensorBoard and MLflow sinks.

Every sink is fed the per-epoch line a stage appends to its `metrics.jsonl` (epoch, seconds, the
weighted loss and each unweighted term, the validation score, WAR/UAR per validation condition,
and with --selection-gap the test part's), as soon as the epoch ends, so a run can be watched live:

- `tensorboard`: one event folder per job under `<run>/tensorboard/` (`tensorboard --logdir runs/<id>/tensorboard`);
- `mlflow`: one MLflow run per job in the experiment named after the run directory, at the tracking
  URI the environment sets (`MLFLOW_TRACKING_URI`; MLflow's default otherwise).

Both are extras (`pip install "cmarr[tensorboard]"`, `"cmarr[mlflow]"`), off unless `--log` names them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

from cmarr.shared.errors import ConfigError
from cmarr.train.rundir import RunDir

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # --log name -> the module it needs


def check_trackers(names: list[str]) -> list[str]:
    """`--log` values, checked before any training: known names whose package is installed."""
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"--log {name}: unknown; choose from {', '.join(TRACKERS)}")
        if TRACKERS[name] not in sys.modules and importlib.util.find_spec(TRACKERS[name]) is None:
            raise ConfigError(
                f'--log {name}: the {TRACKERS[name]} package is not installed (pip install "cmarr[{name}]")'
            )
    return list(dict.fromkeys(names))


def flat_metrics(line: dict) -> dict[str, float]:
    """A metrics.jsonl line as flat scalar names: loss, <term>, val_score, val/<condition>/uar, ...
    (condition names without braces or commas: {s,v} -> s_v), the epoch and seconds left out."""
    out = {}
    for key, value in line.items():
        if key in ("epoch", "seconds"):
            continue
        if isinstance(value, dict):
            for cond, scores in value.items():
                for metric, v in scores.items():
                    out[f"{key}/{_plain(cond)}/{metric}"] = float(v)
        else:
            out[key] = float(value)
    return out


def _plain(condition: str) -> str:
    return re.sub(r"[{}]", "", condition).replace(",", "_")


class TensorBoardSink:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def epoch(self, stage: str, line: dict) -> None:
        for name, value in flat_metrics(line).items():
            self.writer.add_scalar(f"{stage}/{name}", value, line["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowSink:
    def __init__(self, experiment: str, run_name: str, tags: dict[str, str]):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=run_name, tags=tags)

    def epoch(self, stage: str, line: dict) -> None:
        metrics = {f"{stage}/{k}": v for k, v in flat_metrics(line).items() if v == v}  # NaN: no utterance
        self.mlflow.log_metrics(metrics, step=line["epoch"])

    def close(self) -> None:
        self.mlflow.end_run()


class Trackers:
    """The sinks of one job (a split of one system), called after every epoch of each of its stages."""

    def __init__(self, names: tuple[str, ...], run_dir: RunDir, job: str):
        self.sinks = []
        for name in names:
            if name == "tensorboard":
                self.sinks.append(TensorBoardSink(run_dir.tensorboard(job)))
            elif name == "mlflow":
                self.sinks.append(MLflowSink(run_dir.name, job, {"cmarr.run": run_dir.name, "cmarr.job": job}))

    def epoch(self, stage: str, line: dict) -> None:
        for sink in self.sinks:
            sink.epoch(stage, line)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def write_curves(metrics: Path, out: Path, title: str) -> Path | None:
    """A stage's training curves from its metrics.jsonl: the weighted loss and each term per epoch,
    and the validation score (the test part's Avg. UAR too where it was logged). None if no epoch."""
    lines = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.is_file() else []
    if not lines:
        return None
    from cmarr.shared.plots import pyplot
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

    epochs = [x["epoch"] for x in lines]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    not_terms = ("epoch", "seconds", "val_score", "padded")  # padded: the batches' padding share, not a loss
    for term in [k for k, v in lines[0].items() if k not in not_terms and not isinstance(v, dict)]:
        left.plot(epochs, [x[term] for x in lines], label=term, lw=2 if term == "loss" else 1)
    left.set(xlabel="epoch", ylabel="training loss: weighted sum, unweighted terms", yscale="symlog")
    left.legend(fontsize=7)
    right.plot(epochs, [100 * x["val_score"] for x in lines], label="validation (selection score)")
    if "test" in lines[0]:
        missing = [c for c in lines[0]["test"] if c != "{s,v,t}"]
        test = [100 * sum(x["test"][c]["uar"] for c in missing) / len(missing) for x in lines]
        right.plot(epochs, test, label="test Avg. UAR (logged only)", ls="--")
    best = max(range(len(lines)), key=lambda i: lines[i]["val_score"])
    right.axvline(epochs[best], color="grey", lw=0.8, ls=":", label=f"selected: epoch {epochs[best]}")
    right.set(xlabel="epoch", ylabel="UAR (%)")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
