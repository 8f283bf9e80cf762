"""Video degraders on decoded frames [N, H, W, 3] uint8 (the speaker's pane, before face detection):
an occluding patch, then darkening, then blur (the occluder is in the scene: the camera blurs it too)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cmarr.extract.degrade.spec import VideoSpec, utterance_rng
from PIL import Image, ImageFilter


def occlude(frames: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A black rectangle over `fraction` of each frame's area, with the frame's aspect ratio, at one
    position drawn uniformly for the utterance (a static obstruction in front of the camera, as
    Random Erasing, Zhong et al., AAAI 2020, with a fixed area): it may or may not cover the face."""
    n, h, w = frames.shape[:3]
    ph, pw = round(h * np.sqrt(fraction)), round(w * np.sqrt(fraction))
    if not (n and ph and pw):
        return frames
    top, left = int(rng.integers(h - ph + 1)), int(rng.integers(w - pw + 1))
    out = frames.copy()
    out[:, top : top + ph, left : left + pw] = 0
    return out


def darken(frames: np.ndarray, factor: float) -> np.ndarray:
    """Every pixel value times `factor`, rounded (an exposure cut in the stored, gamma-encoded values;
    no sensor noise is added)."""
    table = np.rint(np.arange(256) * factor).astype(np.uint8)
    return table[frames]


def blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Each frame through a Gaussian blur of standard deviation `sigma` pixels: Pillow's `GaussianBlur`
    (its radius is the standard deviation; three box passes). From sigma 4 up it runs on the frame
    reduced by f (a power of two, at most sigma / 2), whose sigma is what remains of sigma^2 after the
    reduction's f x f box ((f^2 - 1) / 12), then scaled back bilinearly: a Gaussian pyramid step, the
    same width within 2% (tests/test_degrade.py) for a third of the cost at f = 2."""
    if not frames.size or sigma == 0:
        return frames
    f = 2 ** int(np.clip(np.floor(np.log2(sigma / 2)), 0, 3))
    kernel = ImageFilter.GaussianBlur(float(np.sqrt(sigma**2 - (f * f - 1) / 12) / f))
    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        if f == 1:
            out.append(np.asarray(image.filter(kernel)))
            continue
        small = image.reduce(f).filter(kernel)  # ceil(size / f): the box maps the frame's own extent back
        box = (0.0, 0.0, image.width / f, image.height / f)
        out.append(np.asarray(small.resize(image.size, Image.Resampling.BILINEAR, box=box)))
    return np.stack(out)


@dataclass(frozen=True)
class VideoDegrader:
    """The video kinds of a spec (picklable: it runs in decoding workers)."""

    spec: VideoSpec
    seed: int

    def __call__(self, frames: np.ndarray, utterance: str) -> np.ndarray:
        s = self.spec
        if s.occlude_fraction:
            frames = occlude(frames, s.occlude_fraction, utterance_rng(self.seed, utterance, "video", "occlude"))
        if s.dark_factor is not None:
            frames = darken(frames, s.dark_factor)
        if s.blur_sigma:
            frames = blur(frames, s.blur_sigma)
        return frames
