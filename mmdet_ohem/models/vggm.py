"""VGG_CNN_M_1024 ("VGGM") for two-stage detection, as in Fast R-CNN and the OHEM paper's smaller network.

The trunk is conv1 ... conv5 of Chatfield et al.'s VGG-CNN-M (no pool5), the RoI head fc6 (4096) and
fc7 (1024), each followed by ReLU and dropout 0.5, exactly as Fast R-CNN's
``models/VGG_CNN_M_1024/train.prototxt``::

    conv1 96 7x7/2 - ReLU - LRN(5, 0.0005, 0.75, k=2) - max-pool 3x3/2
    conv2 256 5x5/2 pad 1 - ReLU - LRN - max-pool 3x3/2
    conv3, conv4, conv5 512 3x3 pad 1 - ReLU          (stride 16; RoI pooling 6x6 at scale 1/16)
    fc6 4096 - ReLU - dropout 0.5 - fc7 1024 - ReLU - dropout 0.5 - cls_score / bbox_pred

Caffe's pooling rounds the output size up, so the pools use ``ceil_mode=True`` (a 224 px input gives
13 x 13 conv5 cells, as in Caffe). Fast R-CNN freezes conv1 only (``lr_mult: 0``), hence
``frozen_stages=1``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from .frcn_head import FRCNBBoxHead

__all__ = ['VGGM', 'VGGMBBoxHead', 'VGGM_CHANNELS', 'VGGM_LAYERS']

#: Output channels of conv1 ... conv5 in VGG_CNN_M_1024.
VGGM_CHANNELS: Tuple[int, ...] = (96, 256, 512, 512, 512)
#: Caffe layer names that carry weights, in order (backbone convs, then the head's fcs).
VGGM_LAYERS: Tuple[str, ...] = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7')
# (kernel, stride, padding) of each conv, and whether LRN + max-pool follow it.
_CONVS = ((7, 2, 0, True), (5, 2, 1, True), (3, 1, 1, False), (3, 1, 1, False), (3, 1, 1, False))
# Caffe LRN (across channels): x / (k + alpha / n * sum x^2) ^ beta, which is torch's LocalResponseNorm.
_LRN = dict(size=5, alpha=0.0005, beta=0.75, k=2.0)


def _check_channels(channels: Any) -> Tuple[int, ...]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) != 5 \
            or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in channels):
        raise ValueError(f'VGGM: channels must be 5 positive ints (conv1..conv5), got {channels!r}')
    return tuple(channels)


@MODELS.register_module()
class VGGM(BaseModule):
    """VGG_CNN_M_1024 trunk of Fast R-CNN: conv1 ... conv5 + ReLU (LRN and max-pool after conv1 and
    conv2), **no pool5**.

    Output: a tuple with one feature map, stride 16, ``channels[-1]`` channels (512). ``self.features``
    holds the layers under their Caffe names (``features.conv1`` ... ``features.conv5``), so converted
    Caffe weights load name for name (see :mod:`mmdet_ohem.models.vggm_weights`).

    Args:
        channels: Widths of conv1 ... conv5 (``(96, 256, 512, 512, 512)``); narrower values give the same
            architecture for CPU demos and tests.
        frozen_stages: Number of leading convs (with their LRN/pool) whose weights are frozen; Fast R-CNN
            freezes conv1 (``1``). ``0`` trains everything.
        init_cfg: mmengine init config, e.g. ``dict(type='VGGMPretrained', part='backbone', checkpoint=...)``.

    Raises:
        ValueError: If ``channels`` is not 5 positive ints or ``frozen_stages`` is not in 0..5.
    """

    def __init__(self, channels: Sequence[int] = VGGM_CHANNELS, frozen_stages: int = 1,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.channels = _check_channels(channels)
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not 0 <= frozen_stages <= 5:
            raise ValueError(f'VGGM: frozen_stages must be an int in 0..5, got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.out_channels = self.channels[-1]
        layers: List[Tuple[str, nn.Module]] = []
        in_ch = 3
        for i, ((k, s, p, norm_pool), out_ch) in enumerate(zip(_CONVS, self.channels), 1):
            layers += [(f'conv{i}', nn.Conv2d(in_ch, out_ch, kernel_size=k, stride=s, padding=p)),
                       (f'relu{i}', nn.ReLU(inplace=True))]
            if norm_pool:
                layers += [(f'norm{i}', nn.LocalResponseNorm(**_LRN)),
                           (f'pool{i}', nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))]
            in_ch = out_ch
        self.features = nn.Sequential(OrderedDict(layers))
        for i in range(1, frozen_stages + 1):
            for param in getattr(self.features, f'conv{i}').parameters():
                param.requires_grad = False

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        """Returns ``(conv5,)`` after ReLU, at about 1/16 of the input resolution."""
        return (self.features(x),)


@MODELS.register_module()
class VGGMBBoxHead(FRCNBBoxHead):
    """VGG_CNN_M_1024's RoI head: 6x6 RoI features -> fc6 (4096) -> fc7 (1024) -> cls / box.

    :class:`FRCNBBoxHead` with fc6 and fc7 of different widths: ``shared_fcs.0`` is fc6
    (``in_channels * roi_feat_size**2 -> fc6_channels``), ``shared_fcs.1`` is fc7
    (``fc6_channels -> fc_out_channels``), and ``fc_cls``/``fc_reg`` read the fc7 output. ReLU and dropout
    after each fc, as in the prototxt.

    Args:
        fc6_channels: Width of fc6 (4096).
        fc_out_channels: Width of fc7 (1024).
        roi_feat_size: RoI pooling output size (6 in VGG_CNN_M_1024).
        **kwargs: :class:`FRCNBBoxHead` arguments (``in_channels``, ``dropout``, ``num_classes``, ...).

    Raises:
        ValueError: If ``fc6_channels`` is not a positive int.
    """

    def __init__(self, fc6_channels: int = 4096, fc_out_channels: int = 1024, roi_feat_size: int = 6,
                 **kwargs: Any) -> None:
        if isinstance(fc6_channels, bool) or not isinstance(fc6_channels, int) or fc6_channels <= 0:
            raise ValueError(f'VGGMBBoxHead: fc6_channels must be a positive int, got {fc6_channels!r}')
        super().__init__(fc_out_channels=fc_out_channels, roi_feat_size=roi_feat_size, **kwargs)
        self.fc6_channels = fc6_channels
        flat = self.in_channels * self.roi_feat_area
        self.shared_fcs[0] = nn.Linear(flat, fc6_channels)
        self.shared_fcs[1] = nn.Linear(fc6_channels, fc_out_channels)
