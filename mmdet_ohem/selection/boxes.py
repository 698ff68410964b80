"""Which candidate boxes are unusable: the check that runs before the read-only pass (pure PyTorch)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ['invalid_boxes']


def invalid_boxes(boxes: Tensor, extent: Optional[float] = None) -> Tensor:
    """Flags boxes that must never reach an RoI layer.

    A box ``(x1, y1, x2, y2)`` is invalid when a coordinate is NaN or infinite, when ``x2 < x1`` or
    ``y2 < y1``, or, with ``extent`` given, when a coordinate lies more than one ``extent`` outside the
    image, i.e. outside ``[-extent, 2 * extent]``. Such boxes come from broken proposal files or fp16
    overflow; mmcv's RoIAlign crashes on them (segfault, ``std::vector`` size errors, internal asserts).
    Zero-width or zero-height boxes are valid (RPN emits them).

    Args:
        boxes: ``(n, 4)`` boxes.
        extent: The image's longer side in pixels (the padded input), or ``None`` to skip the range check.

    Returns:
        ``(n,)`` bool, True for invalid boxes.

    Raises:
        ValueError: If ``boxes`` is not ``(n, 4)`` or ``extent`` is not a positive finite number.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f'invalid_boxes: boxes must be (n, 4), got {tuple(boxes.shape)}')
    if extent is not None and not (isinstance(extent, (int, float)) and 0 < extent < float('inf')):
        raise ValueError(f'invalid_boxes: extent must be a positive finite number, got {extent!r}')
    # Written as "not every test passes", the tests side by side and reduced once, with few kernels (on a GPU
    # each is a launch): a NaN fails every comparison, and with an extent +-inf fails the range test, so no
    # separate finiteness test is needed.
    ordered = boxes[:, 2:] >= boxes[:, :2]
    if extent is None:
        return ~torch.cat([ordered, torch.isfinite(boxes)], dim=1).all(dim=1)
    return ~torch.cat([ordered, boxes >= -extent, boxes <= 2 * extent], dim=1).all(dim=1)
