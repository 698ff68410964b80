"""Fast R-CNN box head of the paper: fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> cls / box."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import torch.nn as nn
from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
from mmdet.registry import MODELS
from torch import Tensor

__all__ = ['FRCNBBoxHead']


@MODELS.register_module()
class FRCNBBoxHead(ConvFCBBoxHead):
    """VGG16's fc6/fc7 as the RoI head (Fast R-CNN, and the OHEM paper's RoI network).

    Same parameters as mmdet's ``Shared2FCBBoxHead`` (``shared_fcs.0`` = fc6, ``shared_fcs.1`` = fc7,
    then ``fc_cls`` and ``fc_reg``) plus dropout after each fc, as in VGG16 and the authors' prototxt.
    With ``fc_out_channels=4096``, ``in_channels=512`` and ``roi_feat_size=7`` the two fcs have exactly
    the shapes of torchvision's ``vgg16().classifier[0]`` and ``[3]``, so ImageNet weights load into them.

    Args:
        fc_out_channels: Width of fc6 and fc7 (4096 in VGG16; smaller for CPU demos).
        dropout: Dropout probability after fc6 and fc7 (0.5 in VGG16). Active in training mode only,
            including OHEM's read-only pass (the authors' read-only network keeps its dropout layers).
        init_cfg: Init configs applied **after** the head's defaults (Normal fc_cls/fc_reg, Xavier fcs)
            instead of replacing them, so ``init_cfg=dict(type='VGG16Pretrained', part='fc67')`` only
            has to name the checkpoint (and ``--cfg-options ...bbox_head.init_cfg.checkpoint=PATH`` works).
        **kwargs: ``BBoxHead`` arguments (``in_channels``, ``roi_feat_size``, ``num_classes``, losses...).

    Raises:
        ValueError: If ``dropout`` is not in [0, 1).
    """

    def __init__(self, fc_out_channels: int = 4096, dropout: float = 0.5,
                 init_cfg: Optional[Union[dict, List[dict]]] = None, **kwargs: Any) -> None:
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f'FRCNBBoxHead: dropout must be a float in [0, 1), got {dropout!r}')
        super().__init__(num_shared_convs=0, num_shared_fcs=2, num_cls_convs=0, num_cls_fcs=0,
                         num_reg_convs=0, num_reg_fcs=0, fc_out_channels=fc_out_channels, init_cfg=None,
                         **kwargs)
        if init_cfg is not None:
            self.init_cfg = list(self.init_cfg) + (list(init_cfg) if isinstance(init_cfg, list) else [init_cfg])
        self.dropout = nn.Dropout(p=float(dropout))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """RoI features ``(n, C, 7, 7)`` -> ``(cls_score, bbox_pred)``."""
        if self.with_avg_pool:
            x = self.avg_pool(x)
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = self.dropout(self.relu(fc(x)))
        cls_score = self.fc_cls(x) if self.with_cls else None
        bbox_pred = self.fc_reg(x) if self.with_reg else None
        return cls_score, bbox_pred
