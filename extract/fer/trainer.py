"""Train and evaluate DenseNet-BC (Denseface) on FER+; the checkpoint is what `cmarr-extract` loads."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from cmarr.extract.encoders.denseface_checkpoint import DensefaceCheckpoint, load_denseface, save_denseface
from cmarr.extract.encoders.densenet import DenseNetArch, DenseNetBC
from cmarr.extract.fer.data import CLASSES, FerData, FerSplit
from cmarr.shared.config import FerConfig, VideoEncoderConfig
from cmarr.shared.devices import autocast
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
    torch.manual_seed(fer.seed)
    gen = torch.Generator().manual_seed(fer.seed)
    arch = DenseNetArch(depth=video.depth, growth=video.growth, input_size=video.face_size, n_classes=len(CLASSES))
    net = DenseNetBC(arch).to(device)
    train, public, private = (data.splits[u] for u in ("Training", "PublicTest", "PrivateTest"))
    if len(train.images) == 0 or len(public.images) == 0:
        from cmarr.shared.errors import InputDataError

        raise InputDataError("FER data has no usable Training or PublicTest images")
    x_train, t_train = to_input(train.images, video), torch.from_numpy(train.targets(fer.target))
    x_pub, x_priv = to_input(public.images, video), to_input(private.images, video)
    opt = torch.optim.SGD(net.parameters(), lr=fer.lr, momentum=0.9, nesterov=True, weight_decay=fer.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / fer.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=fer.epochs * steps_per_epoch)
    best, best_state, stale, seen, t_train_s = -1.0, None, 0, 0, 0.0
    for epoch in range(1, fer.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x_train), generator=gen)
        for k, lo in enumerate(range(0, len(order), fer.batch_size)):
            idx = order[lo : lo + fer.batch_size]
            xb = augment(x_train[idx], fer.rotation_degrees, gen).to(device)
            with autocast(device, fer.amp):
                loss = F.cross_entropy(net(xb).float(), t_train[idx].to(device))  # soft targets
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            if progress:
                progress(f"epoch {epoch}", k + 1, steps_per_epoch)
        t_train_s += time.perf_counter() - t0
        acc = evaluate_split(net, x_pub, public.majority, device)["accuracy"]
        log(f"epoch {epoch}: loss {loss.item():.3f}, PublicTest accuracy {acc:.3f}")
        if acc > best:
            best, best_state, stale = acc, copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
            if stale >= fer.patience:
                break
    net.load_state_dict(best_state)
    metrics = {
        "public": evaluate_split(net, x_pub, public.majority, device),
        "private": evaluate_split(net, x_priv, private.majority, device),
        "train_images_per_second": seen / max(t_train_s, 1e-9),
        "epochs_run": epoch,
        "skipped_rows": data.skipped,
    }
    save_denseface(
        net.cpu(),
        Path(out),
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
        Path(out).with_suffix(".confusion.png"),
        ylabel="majority label",
    )
    return metrics


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
