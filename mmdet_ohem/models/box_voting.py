"""Per-class NMS followed by score-weighted box voting (the "B" of the OHEM paper, after MR-CNN).

Pure PyTorch, no mmdet import. Given a pool of scored, labelled boxes (the detections of every
regression iteration together):

1. per class, greedy NMS at ``nms_iou`` (a box is dropped when its IoU with a kept, higher-scored box of
   the same class is strictly greater than ``nms_iou``);
2. each kept box's coordinates become the score-weighted mean of the pooled boxes of its class whose IoU
   with it is at least ``vote_iou`` (the kept box itself included); its score stays its own.

Gidaris & Komodakis (MR-CNN, ICCV 2015) call step 2 "bounding box voting"; the OHEM paper uses it with
NMS 0.3 and voting IoU 0.5.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ..selection.nms import box_iou, greedy_loss_nms

__all__ = ['box_voting', 'nms_with_box_voting']


def _check(boxes: Tensor, scores: Tensor, labels: Tensor, what: str) -> None:
    n = boxes.shape[0]
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or scores.shape != (n,) or labels.shape != (n,):
        raise ValueError(f'{what}: boxes must be (n, 4), scores and labels (n,); got boxes '
                         f'{tuple(boxes.shape)}, scores {tuple(scores.shape)}, labels {tuple(labels.shape)}')


def _check_iou(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f'{name} must be an IoU threshold in (0, 1], got {value!r}')


def box_voting(kept_boxes: Tensor, kept_labels: Tensor, pool_boxes: Tensor, pool_scores: Tensor,
               pool_labels: Tensor, vote_iou: float = 0.5) -> Tensor:
    """Score-weighted mean of the pooled boxes (same label, IoU >= ``vote_iou``) around each kept box.

    Args:
        kept_boxes: ``(k, 4)`` boxes that survived NMS, ``(x1, y1, x2, y2)``.
        kept_labels: ``(k,)`` their labels.
        pool_boxes: ``(m, 4)`` all candidate boxes (normally including the kept ones).
        pool_scores: ``(m,)`` their scores, used as weights (negative scores count as 0).
        pool_labels: ``(m,)`` their labels.
        vote_iou: Least IoU with the kept box for a pooled box to vote.

    Returns:
        ``(k, 4)`` voted boxes. A kept box with no voter of positive weight (e.g. every overlapping score
        is 0) is returned unchanged.

    Raises:
        ValueError: On mismatched shapes or ``vote_iou`` outside ``(0, 1]``.
    """
    _check(pool_boxes, pool_scores, pool_labels, 'box_voting pool')
    if kept_boxes.dim() != 2 or kept_boxes.shape[-1] != 4 or kept_labels.shape != kept_boxes.shape[:1]:
        raise ValueError(f'box_voting: kept boxes must be (k, 4) and labels (k,); got '
                         f'{tuple(kept_boxes.shape)} and {tuple(kept_labels.shape)}')
    _check_iou(vote_iou, 'vote_iou')
    if kept_boxes.shape[0] == 0 or pool_boxes.shape[0] == 0:
        return kept_boxes.clone()
    iou = box_iou(kept_boxes.float(), pool_boxes.float())  # (k, m)
    voters = (iou >= float(vote_iou)) & (kept_labels[:, None] == pool_labels[None, :])
    weights = voters.float() * pool_scores.float().clamp(min=0)[None, :]
    total = weights.sum(dim=1, keepdim=True)
    voted = weights @ pool_boxes.float() / total.clamp(min=torch.finfo(torch.float32).tiny)
    return torch.where(total > 0, voted, kept_boxes.float()).to(kept_boxes.dtype)


def nms_with_box_voting(boxes: Tensor, scores: Tensor, labels: Tensor, nms_iou: float = 0.3,
                        vote_iou: float = 0.5, max_per_img: int = -1) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-class NMS at ``nms_iou``, then :func:`box_voting` of the survivors over the whole pool.

    Args:
        boxes: ``(m, 4)`` pooled candidate boxes.
        scores: ``(m,)`` their scores (filter low scores before calling, as detectors do).
        labels: ``(m,)`` their class labels.
        nms_iou: Per-class NMS threshold (0.3 in the paper).
        vote_iou: Voting threshold (0.5 in the paper).
        max_per_img: Keep at most this many detections, highest score first (``-1``: all).

    Returns:
        ``(boxes, scores, labels)`` of the kept detections, highest score first; boxes voted.

    Raises:
        ValueError: On mismatched shapes or a threshold outside ``(0, 1]``.
    """
    _check(boxes, scores, labels, 'nms_with_box_voting')
    _check_iou(nms_iou, 'nms_iou')
    _check_iou(vote_iou, 'vote_iou')
    if boxes.shape[0] == 0:
        return boxes.clone(), scores.clone(), labels.clone()
    max_keep = None if max_per_img is None or max_per_img < 0 else int(max_per_img)
    keep = greedy_loss_nms(boxes, scores.float(), float(nms_iou), max_keep=max_keep, labels=labels).keep
    voted = box_voting(boxes[keep], labels[keep], boxes, scores, labels, vote_iou)
    return voted, scores[keep], labels[keep]
