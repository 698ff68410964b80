"""VGG16 backbone for two-stage detection, as in Fast R-CNN (conv1_1 ... conv5_3, no pool5)."""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

__all__ = ['VGG16', 'VGG16_STAGES', 'vgg16_conv_indices']

#: Convs per stage of VGG16 (configuration "D" of Simonyan & Zisserman).
VGG16_STAGES: Tuple[int, ...] = (2, 2, 3, 3, 3)
_WIDTH_MULT: Tuple[int, ...] = (1, 2, 4, 8, 8)


def vgg16_conv_indices() -> List[int]:
    """Indices of the 13 convs inside ``VGG16.features`` (identical to torchvision's ``vgg16().features``)."""
    indices, i = [], 0
    for stage, n in enumerate(VGG16_STAGES):
        for _ in range(n):
            indices.append(i)
            i += 2  # conv, relu
        if stage < len(VGG16_STAGES) - 1:
            i += 1  # max pool
    return indices


@MODELS.register_module()
class VGG16(BaseModule):
    """VGG16 trunk of Fast/Faster R-CNN: conv1_1 ... conv5_3 + ReLU, four max pools, **no pool5**.

    Output: a tuple with one feature map, stride 16, ``8 * base_channels`` channels (512 for the
    real network). ``self.features`` is laid out exactly like torchvision's ``vgg16().features[:30]``,
    so torchvision's ImageNet weights load index for index (see :mod:`mmdet_ohem.models.vgg_weights`).

    Args:
        base_channels: Width of conv1 (64 in VGG16); every stage scales with it (64-128-256-512-512).
            Smaller values give the same architecture, narrower, for CPU demos and tests.
        frozen_stages: Number of leading conv stages whose weights are frozen (Fast R-CNN freezes
            conv1 and conv2: ``2``). ``0`` trains everything.
        init_cfg: mmengine init config, e.g. ``dict(type='VGG16Pretrained', part='backbone', checkpoint=...)``.

    Raises:
        ValueError: If ``base_channels`` is not a positive int or ``frozen_stages`` is not in 0..5.
    """

    def __init__(self, base_channels: int = 64, frozen_stages: int = 2,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(base_channels, bool) or not isinstance(base_channels, int) or base_channels <= 0:
            raise ValueError(f'VGG16: base_channels must be a positive int, got {base_channels!r}')
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) \
                or not 0 <= frozen_stages <= len(VGG16_STAGES):
            raise ValueError(f'VGG16: frozen_stages must be an int in 0..{len(VGG16_STAGES)}, '
                             f'got {frozen_stages!r}')
        self.base_channels = base_channels
        self.frozen_stages = frozen_stages
        self.out_channels = base_channels * _WIDTH_MULT[-1]
        self.features = nn.Sequential(*self._make_layers())
        self._freeze()

    def _make_layers(self) -> List[nn.Module]:
        layers: List[nn.Module] = []
        in_ch = 3
        for stage, (n, mult) in enumerate(zip(VGG16_STAGES, _WIDTH_MULT)):
            out_ch = self.base_channels * mult
            for _ in range(n):
                layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out_ch
            if stage < len(VGG16_STAGES) - 1:  # no pool5: stride 16 for the RoI layer
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        return layers

    def stage_slices(self) -> List[slice]:
        """The ``features`` index range of each stage (its convs, ReLUs and the pool that follows)."""
        slices, start = [], 0
        for stage, n in enumerate(VGG16_STAGES):
            end = start + 2 * n + (1 if stage < len(VGG16_STAGES) - 1 else 0)
            slices.append(slice(start, end))
            start = end
        return slices

    def _freeze(self) -> None:
        for s in self.stage_slices()[:self.frozen_stages]:
            for p in self.features[s].parameters():
                p.requires_grad = False

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        """Returns ``(conv5_3,)`` after ReLU, at 1/16 of the input resolution."""
        return (self.features(x),)
