"""Loss-NMS: greedy de-duplication of RoIs ranked by their loss.

Pure PyTorch, no mmdet import. The rule is the paper's (Shrivastava et al., 2016, Sec. 4.1): take the
highest-loss RoI, drop every lower-loss RoI whose IoU with it exceeds the threshold, repeat.

Because OHEM only ever needs the first ``max_keep`` survivors (the per-image RoI budget, e.g. 64), the
implementation walks the ranked list in blocks and stops as soon as the budget is full. Each block is
checked against the boxes already kept with one vectorised IoU, and within the block the greedy order is
resolved on a precomputed IoU matrix. The result is identical to full greedy NMS truncated to
``max_keep``; the cost is O((kept + block) * block) per block instead of O(n^2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = ['NMSResult', 'box_iou', 'greedy_loss_nms', 'rank_by_loss']


@dataclass(frozen=True)
class NMSResult:
    """Outcome of a loss-NMS pass.

    Attributes:
        keep: Indices into the input, hardest (highest loss) first.
        num_suppressed: How many candidates were examined and removed as duplicates before the budget
            was filled (candidates never examined because the budget was already full are not counted).
    """

    keep: Tensor
    num_suppressed: int


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of axis-aligned boxes in ``(x1, y1, x2, y2)`` format.

    Degenerate boxes (zero or negative width/height) have zero area and an IoU of 0 with everything,
    including themselves, so they never suppress anything.

    Args:
        boxes1: ``(n, 4)`` boxes.
        boxes2: ``(m, 4)`` boxes.

    Returns:
        ``(n, m)`` IoU matrix in the dtype of ``boxes1``.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), inter.new_zeros(()))


def rank_by_loss(losses: Tensor) -> Tensor:
    """Indices that sort ``losses`` from highest to lowest; ties keep input order (stable)."""
    return torch.sort(losses, descending=True, stable=True).indices


def greedy_loss_nms(boxes: Tensor,
                    losses: Tensor,
                    iou_threshold: float,
                    max_keep: Optional[int] = None,
                    labels: Optional[Tensor] = None,
                    block_size: int = 256,
                    max_block: int = 1024) -> NMSResult:
    """Greedy NMS on loss, highest loss first, stopping once ``max_keep`` boxes are kept.

    A box is suppressed when its IoU with an already kept, higher-ranked box is strictly greater than
    ``iou_threshold``. With ``labels`` given, only boxes of the same label suppress each other (the
    authors' Caffe code ran loss-NMS per class).

    Args:
        boxes: ``(n, 4)`` candidate boxes, ``(x1, y1, x2, y2)``.
        losses: ``(n,)`` ranking losses; higher is harder. Must be finite (callers filter first).
        iou_threshold: Suppression threshold in ``(0, 1]``; 1.0 never suppresses.
        max_keep: Stop once this many boxes are kept. ``None`` keeps every survivor.
        labels: Optional ``(n,)`` integer labels for per-class NMS.
        block_size: Minimum number of ranked candidates examined per vectorised step.
        max_block: Upper bound of the step size used to fill a large missing budget (the result does
            not depend on it, only time and memory do).

    Returns:
        :class:`NMSResult` with the kept indices (hardest first) and the suppression count.

    Raises:
        ValueError: On mismatched shapes or a threshold outside ``(0, 1]``.
    """
    n = losses.shape[0]
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or boxes.shape[0] != n or losses.dim() != 1:
        raise ValueError(f'greedy_loss_nms: boxes must be (n, 4) and losses (n,), '
                         f'got boxes {tuple(boxes.shape)} and losses {tuple(losses.shape)}')
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f'greedy_loss_nms: iou_threshold must be in (0, 1], got {iou_threshold!r}')
    if labels is not None and labels.shape != (n, ):
        raise ValueError(f'greedy_loss_nms: labels must be ({n},), got {tuple(labels.shape)}')
    budget = n if max_keep is None else max(0, min(int(max_keep), n))
    order = rank_by_loss(losses)
    if budget == 0 or n == 0:
        return NMSResult(order[:0], 0)

    dev = boxes.device
    sorted_boxes = boxes[order].float()
    sorted_labels = labels[order] if labels is not None else None
    kept: list[int] = []  # positions in the sorted order
    num_suppressed = 0
    pos = 0
    while pos < n and len(kept) < budget:
        # At least block_size, twice the missing budget when that is larger (few blocks for small
        # budgets), but never more than max_block: an (m, m) IoU block with its (m, m, 2) temporaries
        # grows quadratically, and full NMS (max_keep=None) on 10k boxes would otherwise build one
        # 10k x 10k block (GBs of temporaries, seconds on CPU).
        size = min(n - pos, max(block_size, min(2 * (budget - len(kept)), max_block)))
        blk = sorted_boxes[pos:pos + size]
        alive = torch.ones(size, dtype=torch.bool, device=dev)
        if kept:
            kept_idx = torch.as_tensor(kept, device=dev)
            over = box_iou(blk, sorted_boxes[kept_idx]) > iou_threshold
            if sorted_labels is not None:
                over &= sorted_labels[pos:pos + size, None] == sorted_labels[kept_idx][None, :]
            alive &= ~over.any(dim=1)
        over_self = box_iou(blk, blk) > iou_threshold
        if sorted_labels is not None:
            blk_lab = sorted_labels[pos:pos + size]
            over_self &= blk_lab[:, None] == blk_lab[None, :]
        alive_np = alive.cpu().numpy().copy()
        over_np = over_self.cpu().numpy()
        for j in range(size):
            if not alive_np[j]:
                num_suppressed += 1
                continue
            kept.append(pos + j)
            if len(kept) == budget:
                break
            alive_np[j + 1:] &= ~over_np[j, j + 1:]
        pos += size
    return NMSResult(order[torch.as_tensor(kept, dtype=torch.long, device=order.device)], num_suppressed)
