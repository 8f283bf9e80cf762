"""Video: MTCNN faces on frames sampled at about 10 fps, grey crops through DenseNet-FER+ (Denseface).

Frames without a face are dropped from the sequence; an utterance without any face gets the
`no-face` status, a real missing modality.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from cmarr.extract.corpora.record import UtteranceRecord
from cmarr.extract.encoders.base import Encoder, EncodeResult
from cmarr.extract.encoders.denseface_checkpoint import load_denseface
from cmarr.extract.encoders.sizing import (
    CPU_CANDIDATES,
    CPU_FACES,
    CPU_FRAMES,
    SlicedForward,
    channels_last,
    for_device,
)
from cmarr.extract.media.span import Decoded
from cmarr.extract.media.video import read_frames
from cmarr.shared.config import VideoEncoderConfig
from cmarr.shared.provenance import file_sha256
from cmarr.shared.store.schema import ModalitySpec, Status
from torch.nn import functional as F


def load_video(record: UtteranceRecord, fps: float) -> Decoded | None:
    return None if record.video is None else read_frames(record.video, fps)


class VideoEncoder(Encoder):
    modality = "video"

    def __init__(self, cfg: VideoEncoderConfig, device: torch.device, amp: str):
        super().__init__(device, amp)
        from facenet_pytorch import MTCNN

        self.cfg = cfg
        checkpoint = load_denseface(cfg.checkpoint, cfg)
        self.net = channels_last(checkpoint.net.to(device))
        self.arch = checkpoint.arch
        self.weights_sha256 = file_sha256(cfg.checkpoint)
        self.mtcnn = MTCNN(keep_all=True, min_face_size=cfg.min_face_size, device=device)
        candidates = None if device.type == "cuda" else CPU_CANDIDATES  # see sizing.py
        self.mtcnn.pnet = SlicedForward(self.mtcnn.pnet, None)
        self.mtcnn.rnet = SlicedForward(self.mtcnn.rnet, candidates)
        self.mtcnn.onet = SlicedForward(self.mtcnn.onet, candidates)
        self.frame_slice = for_device(device, cfg.frames_per_batch, CPU_FRAMES)
        self.face_slice = for_device(device, cfg.frames_per_batch, CPU_FACES)
        self.budget = 4 * cfg.frames_per_batch  # sampled frames per batch (detection runs on them all)

    @staticmethod
    def check_settings(cfg: VideoEncoderConfig) -> None:
        """The checks loading makes: the checkpoint exists and matches the config."""
        load_denseface(cfg.checkpoint, cfg)

    def spec(self) -> ModalitySpec:
        return ModalitySpec(
            encoder=f"denseface:{Path(self.cfg.checkpoint).name}",
            dim=self.net.feature_dim,
            weights_sha256=self.weights_sha256,
            frame_rate=self.cfg.fps,
            extra={
                "detector": "facenet-pytorch MTCNN",
                "arch": self.arch,
                "face_size": self.cfg.face_size,
                "mean": self.cfg.mean,
                "std": self.cfg.std,
                "select": self.cfg.select,
                "min_face_prob": self.cfg.min_face_prob,
                "min_face_size": self.cfg.min_face_size,
            },
        )

    def cost(self, record: UtteranceRecord) -> int:
        v = record.video
        if v is None:
            return 0
        if v.start is not None and v.end is not None:
            return max(1, int((v.end - v.start) * self.cfg.fps))
        return 10 * int(self.cfg.fps)  # unknown length: a guess, only used for ordering

    def loader(self):
        return partial(load_video, fps=self.cfg.fps)

    @torch.inference_mode()
    def encode(self, inputs: list[np.ndarray | None]) -> list[EncodeResult]:
        faces = self._faces(inputs)
        crops = [f for f in faces if f is not None and len(f)]
        feats = self._features(torch.cat(crops)) if crops else None
        results, row = [], 0
        for f, frames in zip(faces, inputs):
            if f is None:
                results.append(EncodeResult(None, Status.MISSING_INPUT, "no video"))
            elif not len(f):
                results.append(EncodeResult(None, Status.NO_FACE, self._no_face_reason(frames)))
            else:
                results.append(EncodeResult(feats[row : row + len(f)], Status.OK))
                row += len(f)
        return results

    def _no_face_reason(self, frames: np.ndarray) -> str:
        h, w = frames.shape[1:3]
        if min(h, w) < self.cfg.min_face_size:
            return (
                f"no face: frames of {w}x{h} px are smaller than the smallest face searched for "
                f"(extract.video.min_face_size = {self.cfg.min_face_size})"
            )
        return "no face in any sampled frame"

    def _faces(self, inputs: list[np.ndarray | None]) -> list[torch.Tensor | None]:
        """Per item, normalised grey face crops (N_faces, 1, S, S) of the frames where a face is found.
        Detection runs on the batch's frames grouped by frame size (MTCNN stacks them), `frame_slice`
        frames per call. A frame smaller than the smallest face searched for holds no face: MTCNN
        would scan no scale of it at all (and fail)."""
        boxes: dict[tuple[int, int], tuple] = {}
        by_shape: dict[tuple, list[tuple[int, int]]] = {}
        for k, frames in enumerate(inputs):
            for j in range(0 if frames is None else len(frames)):
                by_shape.setdefault(frames[j].shape, []).append((k, j))
        for shape, refs in by_shape.items():
            if min(shape[:2]) < self.cfg.min_face_size:
                boxes.update({ref: (None, None) for ref in refs})
                continue
            for lo in range(0, len(refs), self.frame_slice):
                chunk = refs[lo : lo + self.frame_slice]
                with self.timed():
                    b, p = self.mtcnn.detect(np.stack([inputs[k][j] for k, j in chunk]))
                boxes.update({ref: (bb, pp) for ref, bb, pp in zip(chunk, b, p)})
        out: list[torch.Tensor | None] = []
        size = self.cfg.face_size
        for k, frames in enumerate(inputs):
            if frames is None:
                out.append(None)
                continue
            crops = [c for j in range(len(frames)) if (c := self._best_face(frames[j], *boxes[(k, j)])) is not None]
            out.append(torch.stack(crops) if crops else torch.zeros((0, 1, size, size)))
        return out

    def _best_face(self, frame: np.ndarray, b, p) -> torch.Tensor | None:
        if b is None:
            return None
        b, p = np.asarray(b, float), np.asarray(p, float)  # MTCNN returns object arrays
        ok = p >= self.cfg.min_face_prob
        if not ok.any():
            return None
        b, p = b[ok], p[ok]
        areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return self._crop(frame, *b[np.argmax(areas if self.cfg.select == "largest" else p)])

    def _crop(self, frame: np.ndarray, x0, y0, x1, y1) -> torch.Tensor:
        h, w = frame.shape[:2]
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(w, max(x0 + 1, int(round(x1)))), min(h, max(y0 + 1, int(round(y1))))
        rgb = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1])).float()
        grey = (rgb @ torch.tensor([0.299, 0.587, 0.114]))[None, None]  # (1, 1, h, w), ITU-R 601 luma
        grey = F.interpolate(grey, size=(self.cfg.face_size,) * 2, mode="bilinear", align_corners=False)
        return ((grey - self.cfg.mean) / self.cfg.std)[0]

    def _features(self, crops: torch.Tensor) -> np.ndarray:
        out = []
        with self.timed(), self.autocast():
            for lo in range(0, len(crops), self.face_slice):
                faces = crops[lo : lo + self.face_slice].to(self.device, memory_format=torch.channels_last)
                out.append(self.net.features(faces).float().cpu())
        return torch.cat(out).numpy()
