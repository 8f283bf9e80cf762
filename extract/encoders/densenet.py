"""DenseNet-BC for 64x64 grey faces: the "Denseface" network whose pooled features are the paper's
342-d video frames (depth 100, growth 12, three dense blocks of 16 bottleneck layers,
compression 0.5, 24 initial features, a 3x3 stem). 24 + 16*12 = 216 -> 108 -> 300 -> 150 -> 342.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class DenseNetArch:
    depth: int = 100
    growth: int = 12
    compression: float = 0.5
    init_features: int = 24
    input_size: int = 64
    n_classes: int = 8  # FER+ head, used only when training the network

    @property
    def layers_per_block(self) -> int:
        return (self.depth - 4) // 6  # bottleneck layers count twice (1x1 + 3x3 conv)

    def to_dict(self) -> dict:
        return asdict(self)


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(4 * growth), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return torch.cat([x, y], dim=1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2))


class DenseNetBC(nn.Module):
    """`features(x)` gives the pooled feature per face; `forward` adds the FER+ head."""

    def __init__(self, arch: DenseNetArch = DenseNetArch()):
        super().__init__()
        self.arch = arch
        channels = arch.init_features
        blocks: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1, bias=False)]
        for b in range(3):
            for _ in range(arch.layers_per_block):
                blocks.append(_DenseLayer(channels, arch.growth))
                channels += arch.growth
            if b < 2:
                out = int(channels * arch.compression)
                blocks.append(_Transition(channels, out))
                channels = out
        blocks += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.body = nn.Sequential(*blocks)
        self.feature_dim = channels
        self.head = nn.Linear(channels, arch.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, S, S) normalised grey faces -> (B, feature_dim)."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
