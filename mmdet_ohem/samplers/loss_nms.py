"""``LossNMS``: the loss-NMS de-duplication step as a registered, configurable component."""
from __future__ import annotations

from typing import Optional

from mmdet.registry import TASK_UTILS
from torch import Tensor

from ..selection import NMSResult, greedy_loss_nms
from .checks import check_bool


@TASK_UTILS.register_module()
class LossNMS:
    """Greedy NMS on per-RoI loss (highest loss first), as in the OHEM paper.

    Config: ``nms=dict(type='LossNMS', iou_threshold=0.7, per_class=False)`` inside an
    ``OHEMSampler``; ``nms=None`` turns de-duplication off.

    Args:
        iou_threshold: Suppress a RoI whose IoU with a kept, higher-loss RoI is greater than this.
            Must be in ``(0, 1]``; the paper uses 0.7.
        per_class: Suppress only between RoIs of the same target label (the authors' Caffe code);
            the paper's text describes class-agnostic NMS, the default.

    Raises:
        ValueError: If ``iou_threshold`` is outside ``(0, 1]``.
        TypeError: If ``per_class`` is not a bool (e.g. the string ``'False'``).
    """

    def __init__(self, iou_threshold: float = 0.7, per_class: bool = False) -> None:
        if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)) \
                or not 0.0 < float(iou_threshold) <= 1.0:
            raise ValueError(f'LossNMS: iou_threshold must be a number in (0, 1], got {iou_threshold!r}')
        self.iou_threshold = float(iou_threshold)
        self.per_class = check_bool('LossNMS', 'per_class', per_class)

    def __call__(self, boxes: Tensor, losses: Tensor, max_keep: Optional[int] = None,
                 labels: Optional[Tensor] = None) -> NMSResult:
        """Runs loss-NMS; ``labels`` are used only when ``per_class`` is set."""
        return greedy_loss_nms(boxes, losses, self.iou_threshold, max_keep,
                               labels if self.per_class else None)

    def __repr__(self) -> str:
        return f'LossNMS(iou_threshold={self.iou_threshold}, per_class={self.per_class})'
