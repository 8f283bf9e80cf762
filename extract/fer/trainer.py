"""Train and evaluate DenseNet-BC (Denseface) on FER+; the checkpoint is what `cmarr-extract` loads."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cmarr.extract.encoders.denseface_checkpoint import DensefaceCheckpoint, load_denseface, save_denseface
from cmarr.extract.encoders.densenet import DenseNetArch, DenseNetBC
from cmarr.extract.fer.data import CLASSES, FerData, FerSplit
from cmarr.shared.config import FerConfig, VideoEncoderConfig
from cmarr.shared.devices import autocast
from cmarr.shared.errors import InputDataError
from cmarr.shared.plots import plot_confusion
from cmarr.shared.provenance import file_sha256
from torch.nn import functional as F


def to_input(images: np.ndarray, video: VideoEncoderConfig) -> torch.Tensor:
    """48x48 uint8 -> (N, 1, S, S) normalised like the extractor's face crops."""
    x = torch.from_numpy(images).float().unsqueeze(1)
    x = F.interpolate(x, size=(video.face_size,) * 2, mode="bilinear", align_corners=False)
    return (x - video.mean) / video.std


def augment(x: torch.Tensor, rotation: float, gen: torch.Generator) -> torch.Tensor:
    """Random crop (reflect-pad 4), horizontal flip and a small rotation, per image."""
    n, _, s, _ = x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2, n), generator=gen)
    x = torch.stack([padded[i, :, dy[i] : dy[i] + s, dx[i] : dx[i] + s] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if rotation > 0:
        a = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(rotation)
        theta = torch.stack(
            [torch.stack([a.cos(), -a.sin(), torch.zeros(n)], 1), torch.stack([a.sin(), a.cos(), torch.zeros(n)], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return x


def evaluate_split(net: DenseNetBC, x: torch.Tensor, y: np.ndarray, device, batch: int = 256) -> dict:
    """Accuracy (against the majority label), per-class recall and the confusion matrix."""
    from sklearn.metrics import confusion_matrix

    net.eval()
    preds = []
    with torch.inference_mode():
        for lo in range(0, len(x), batch):
            preds.append(net(x[lo : lo + batch].to(device)).float().argmax(1).cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, int)
    cm = confusion_matrix(y, pred, labels=list(range(len(CLASSES))))
    recall = {c: (float(cm[k, k] / cm[k].sum()) if cm[k].sum() else None) for k, c in enumerate(CLASSES)}
    return {
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "n": int(len(y)),
        "recall": recall,
        "confusion": cm.tolist(),
    }


def train_fer(
    data: FerData,
    fer: FerConfig,
    video: VideoEncoderConfig,
    out: Path,
    sources: dict[str, Path],
    device: torch.device,
    progress=None,
    log=print,
) -> dict:
    """Train on Training, keep the epoch best on PublicTest accuracy (early stopping) and write it to `out`
    with its metrics and a PrivateTest confusion plot; returns the metrics. InputDataError: no Training or
    PublicTest image."""
    torch.manual_seed(fer.seed)
    gen = torch.Generator().manual_seed(fer.seed)
    net = _network(video, device)
    inputs = _inputs(data, fer, video)
    loop = _Loop.start(net, fer, device, gen, len(inputs.x_train), progress)
    best = _fit(loop, inputs, log)
    net.load_state_dict(best.state)
    metrics = _metrics(loop, inputs, data.skipped)
    _write(net, Path(out), metrics, fer, video, sources)
    return metrics


@dataclass(frozen=True)
class _Inputs:
    """The splits as network inputs (N, 1, S, S), Training's targets (N, classes) and the tests' majority labels."""

    x_train: torch.Tensor
    t_train: torch.Tensor
    x_pub: torch.Tensor
    y_pub: np.ndarray
    x_priv: torch.Tensor
    y_priv: np.ndarray


@dataclass
class _Loop:
    """One training's network, optimiser, schedule and random stream, and what it has done so far."""

    net: DenseNetBC
    fer: FerConfig
    device: torch.device
    gen: torch.Generator
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int
    progress: Callable | None
    seen: int = 0  # training images stepped on
    seconds: float = 0.0  # spent in training epochs (not evaluating)
    epochs_run: int = 0

    @classmethod
    def start(cls, net, fer: FerConfig, device, gen, n_train: int, progress) -> _Loop:
        """SGD with Nesterov momentum, cosine-annealed over all the epochs' steps."""
        opt = torch.optim.SGD(net.parameters(), lr=fer.lr, momentum=0.9, nesterov=True, weight_decay=fer.weight_decay)
        steps_per_epoch = math.ceil(n_train / fer.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=fer.epochs * steps_per_epoch)
        return cls(net, fer, device, gen, opt, sched, steps_per_epoch, progress)

    def step(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a batch (augmented here) against soft `targets`; returns its loss."""
        xb = augment(x, self.fer.rotation_degrees, self.gen).to(self.device)
        with autocast(self.device, self.fer.amp):
            loss = F.cross_entropy(self.net(xb).float(), targets.to(self.device))  # soft targets
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.seen += len(x)
        return loss


@dataclass
class _Best:
    """Early stopping: the best PublicTest accuracy yet, its weights, and the epochs since."""

    accuracy: float = -1.0
    state: dict | None = None
    stale: int = 0

    def stop_after(self, accuracy: float, net: DenseNetBC, patience: int) -> bool:
        """Keep `net`'s weights if `accuracy` is the best yet; True once `patience` epochs in a row were not."""
        if accuracy > self.accuracy:
            self.accuracy, self.state, self.stale = accuracy, copy.deepcopy(net.state_dict()), 0
            return False
        self.stale += 1
        return self.stale >= patience


def _network(video: VideoEncoderConfig, device: torch.device) -> DenseNetBC:
    """A freshly initialised DenseNet-BC of [extract.video]'s architecture (draws from torch's global seed)."""
    arch = DenseNetArch(depth=video.depth, growth=video.growth, input_size=video.face_size, n_classes=len(CLASSES))
    return DenseNetBC(arch).to(device)


def _inputs(data: FerData, fer: FerConfig, video: VideoEncoderConfig) -> _Inputs:
    """The three splits normalised for the network; InputDataError if Training or PublicTest is empty."""
    train, public, private = (data.splits[u] for u in ("Training", "PublicTest", "PrivateTest"))
    if len(train.images) == 0 or len(public.images) == 0:
        raise InputDataError("FER data has no usable Training or PublicTest images")
    x_train, t_train = to_input(train.images, video), torch.from_numpy(train.targets(fer.target))
    x_pub, x_priv = to_input(public.images, video), to_input(private.images, video)
    return _Inputs(x_train, t_train, x_pub, public.majority, x_priv, private.majority)


def _fit(loop: _Loop, inputs: _Inputs, log) -> _Best:
    """Epochs until fer.epochs, or fer.patience epochs without a better PublicTest accuracy; returns the best."""
    best = _Best()
    for epoch in range(1, loop.fer.epochs + 1):
        loop.epochs_run = epoch
        loss = _train_epoch(loop, inputs, f"epoch {epoch}")
        acc = evaluate_split(loop.net, inputs.x_pub, inputs.y_pub, loop.device)["accuracy"]
        log(f"epoch {epoch}: loss {loss.item():.3f}, PublicTest accuracy {acc:.3f}")
        if best.stop_after(acc, loop.net, loop.fer.patience):
            break
    return best


def _train_epoch(loop: _Loop, inputs: _Inputs, label: str) -> torch.Tensor:
    """One pass over Training in a fresh random order, timed; returns the last batch's loss."""
    loop.net.train()
    t0 = time.perf_counter()
    order = torch.randperm(len(inputs.x_train), generator=loop.gen)
    for k, lo in enumerate(range(0, len(order), loop.fer.batch_size)):
        idx = order[lo : lo + loop.fer.batch_size]
        loss = loop.step(inputs.x_train[idx], inputs.t_train[idx])
        if loop.progress:
            loop.progress(label, k + 1, loop.steps_per_epoch)
    loop.seconds += time.perf_counter() - t0
    return loss


def _metrics(loop: _Loop, inputs: _Inputs, skipped: dict) -> dict:
    """The kept network's PublicTest and PrivateTest metrics, training speed (images/s) and the rows left out."""
    return {
        "public": evaluate_split(loop.net, inputs.x_pub, inputs.y_pub, loop.device),
        "private": evaluate_split(loop.net, inputs.x_priv, inputs.y_priv, loop.device),
        "train_images_per_second": loop.seen / max(loop.seconds, 1e-9),
        "epochs_run": loop.epochs_run,
        "skipped_rows": skipped,
    }


def _write(net: DenseNetBC, out: Path, metrics: dict, fer: FerConfig, video: VideoEncoderConfig, sources) -> None:
    """The checkpoint (with its metrics and the data files' sha256) and its PrivateTest confusion plot beside it."""
    save_denseface(
        net.cpu(),
        out,
        list(CLASSES),
        mean=video.mean,
        std=video.std,
        extra={
            "target": fer.target,
            "metrics": _plain(metrics),
            "data_sha256": {name: file_sha256(p) for name, p in sources.items()},
        },
    )
    plot_confusion(
        metrics["private"]["confusion"],
        list(CLASSES),
        "FER+ PrivateTest",
        out.with_suffix(".confusion.png"),
        ylabel="majority label",
    )


def evaluate_checkpoint(checkpoint: Path | DensefaceCheckpoint, data: FerData, device: torch.device) -> dict:
    """PublicTest and PrivateTest metrics of a checkpoint (a path, or one loaded already), its faces
    normalised as it records."""
    if not isinstance(checkpoint, DensefaceCheckpoint):
        checkpoint = load_denseface(checkpoint)
    norm = checkpoint.normalization
    video = VideoEncoderConfig(face_size=int(norm["size"]), mean=float(norm["mean"]), std=float(norm["std"]))
    net = checkpoint.net.to(device)
    return {
        u: evaluate_split(net, to_input(data.splits[s].images, video), data.splits[s].majority, device)
        for u, s in (("public", "PublicTest"), ("private", "PrivateTest"))
    }


def _plain(obj):
    """JSON-like values only (the checkpoint loads with weights_only=True)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


__all__ = ["FerSplit", "evaluate_checkpoint", "train_fer"]
