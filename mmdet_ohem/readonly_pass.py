"""The read-only RoI network: per-RoI losses for every candidate, with no autograd graph.

This is the only place that touches an mmdet RoI head's internals. It runs the head's *current* weights
(the paper's read-only copy shares weights with the trained network) on all candidates under
``torch.no_grad()``, builds targets with the head's own ``_get_targets_single`` and evaluates the head's
own configured losses with ``reduction_override='none'``. Nothing it computes keeps activations alive:
after it returns, only two ``(n,)`` float tensors remain.

It reads nothing back to the host: for heads that use mmdet's own ``BBoxHead.loss`` the losses are
evaluated with the head's loss modules directly (the same calls, minus the ``.item()`` of the average
factor and the ``pos_inds.any()`` test that ``BBoxHead.loss`` makes, neither of which changes a
per-RoI loss); other heads go through their own ``loss``. mmdet code called on the way (a multi-level
RoI extractor's per-level ``nonzero``) may still synchronise.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['RoILosses', 'RoIHeadAdapter', 'frozen_norm_stats', 'readonly_autocast']


@dataclass(frozen=True)
class RoILosses:
    """Per-candidate losses from the read-only pass (float32, no grad).

    Attributes:
        cls: ``(n,)`` classification loss of each candidate.
        loc: ``(n,)`` box-regression loss; zero for background candidates.
    """

    cls: Tensor
    loc: Tensor

    def ranking(self, mode: str) -> Tensor:
        """The ranking loss for ``mode`` in ``{'cls', 'loc', 'cls+loc'}``."""
        if mode == 'cls':
            return self.cls
        if mode == 'loc':
            return self.loc
        if mode == 'cls+loc':
            return self.cls + self.loc
        raise ValueError(f"ranking_loss must be one of 'cls', 'loc', 'cls+loc', got {mode!r}")


@contextlib.contextmanager
def frozen_norm_stats(module: nn.Module) -> Iterator[None]:
    """Restores BatchNorm running statistics after the block.

    A no-grad forward in training mode still updates BatchNorm running mean/var. The read-only pass must
    not change the model, so any BN layer in training mode gets its buffers saved and restored.
    """
    saved = []
    for m in module.modules():
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats:
            saved.append((m, [b.detach().clone() if b is not None else None
                              for b in (m.running_mean, m.running_var, m.num_batches_tracked)]))
    try:
        yield
    finally:
        for m, (mean, var, count) in saved:
            if mean is not None:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
            if count is not None:
                m.num_batches_tracked.copy_(count)


def readonly_autocast(device_type: str, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """The autocast context of the read-only forward.

    ``dtype=None`` inherits the ambient precision: float32 outside autocast, the training pass's autocast
    dtype under ``--amp``. An explicit dtype autocasts to it. Inside an outer autocast of *another*
    dtype (``readonly_dtype='bf16'`` in fp16 ``--amp`` training) the weight-cast cache is disabled: torch
    caches the casts of the weights by weight, not by dtype, until the outermost autocast exits, so a
    nested bf16 region would leave bf16 copies of fc6/fc7 for the fp16 training pass that follows
    (``RuntimeError: mat1 and mat2 must have the same dtype, but got Half and BFloat16``). Without the
    cache the inner region neither stores nor reads cached casts, and the outer one is untouched.
    """
    if dtype is None:
        return contextlib.nullcontext()
    outer = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    return torch.autocast(device_type=device_type, dtype=dtype, cache_enabled=outer in (None, dtype))


def _uses_mmdet_bbox_loss(head: nn.Module) -> bool:
    """Whether ``head.loss`` and ``head._get_targets_single`` are mmdet's ``BBoxHead`` methods."""
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    return (isinstance(head, BBoxHead) and type(head).loss is BBoxHead.loss
            and type(head)._get_targets_single is BBoxHead._get_targets_single)


def _bbox_head_losses_no_sync(head: nn.Module, cls_score: Optional[Tensor], bbox_pred: Optional[Tensor],
                              rois: Tensor, labels: Tensor, label_weights: Tensor, bbox_targets: Tensor,
                              bbox_weights: Tensor, num_pos: int) -> dict:
    """``BBoxHead.loss(..., reduction_override='none')`` for rows ordered positives first, without syncs.

    The same loss-module calls as mmdet's ``BBoxHead.loss`` with the same inputs, so the same per-RoI
    values, but it needs no host read: the positives are the first ``num_pos`` rows (known from shapes),
    and the average factors, which ``reduction='none'`` ignores, are not computed (mmdet reads one with
    ``.item()``). The accuracy that ``BBoxHead.loss`` adds is not computed either (not a loss). The box
    loss gets no ``weight``: ``BBoxHead._get_targets_single`` sets every positive's box weights to 1, so
    weighting multiplies by 1.0 (exact), and mmdet's regression losses test ``torch.any(weight > 0)`` on
    the host when given weights.
    """
    losses = {}
    if cls_score is not None and cls_score.numel() > 0:
        out = head.loss_cls(cls_score, labels, label_weights, avg_factor=1.0, reduction_override='none')
        losses.update(out if isinstance(out, dict) else {'loss_cls': out})
    if bbox_pred is not None and num_pos > 0:
        if head.reg_decoded_bbox:
            from mmdet.structures.bbox import get_box_tensor
            bbox_pred = get_box_tensor(head.bbox_coder.decode(rois[:, 1:], bbox_pred))
        pos_pred = bbox_pred[:num_pos]
        if head.reg_class_agnostic:
            pos_pred = pos_pred.view(num_pos, -1)
        else:
            pos_pred = pos_pred.view(num_pos, head.num_classes, -1)[
                torch.arange(num_pos, device=pos_pred.device), labels[:num_pos]]
        losses['loss_bbox'] = head.loss_bbox(pos_pred, bbox_targets[:num_pos], None,
                                             avg_factor=bbox_targets.size(0), reduction_override='none')
    return losses


def _per_row(value: Tensor, n: int) -> Tensor:
    """Sums any trailing dims of an elementwise loss so that there is one value per row."""
    return value.reshape(n, -1).sum(dim=1) if value.numel() else value.new_zeros(n)


class RoIHeadAdapter:
    """Uniform access to the box branch of an mmdet RoI head (standard, shared-head, cascade stage).

    Args:
        roi_head: The RoI head the sampler was built for (mmdet passes it as ``context``).
        stage: Cascade stage index, or ``None`` for single-stage RoI heads.

    Raises:
        TypeError: If ``roi_head`` has no box branch (e.g. an RPN or one-stage head).
    """

    def __init__(self, roi_head: nn.Module, stage: Optional[int] = None) -> None:
        missing = [a for a in ('bbox_head', '_bbox_forward') if not hasattr(roi_head, a)]
        if roi_head is None or missing:
            name = type(roi_head).__name__ if roi_head is not None else 'None'
            raise TypeError(
                f'OHEMSampler mines RoIs for the box branch of a two-stage RoI head, but it was built for '
                f'{name}, which has no {" / ".join(missing) or "RoI head"}. Put it under '
                f'train_cfg.rcnn.sampler of a two-stage detector (an RPN or one-stage head has no RoI '
                f'network to run a read-only pass with); for hard-anchor mining in an RPN use '
                f"train_cfg.rpn.sampler=dict(type='RPNOHEMSampler').")
        self.roi_head = roi_head
        self.stage = stage

    @property
    def bbox_head(self) -> nn.Module:
        """The box head of this stage."""
        head = self.roi_head.bbox_head
        return head[self.stage] if self.stage is not None else head

    @property
    def train_cfg(self):
        """The R-CNN train config of this stage (has ``pos_weight``)."""
        cfg = self.roi_head.train_cfg
        return cfg[self.stage] if self.stage is not None else cfg

    def bbox_forward(self, feats: Sequence[Tensor], rois: Tensor) -> dict:
        """The head's own ``_bbox_forward`` (with the stage for cascades)."""
        if self.stage is not None:
            return self.roi_head._bbox_forward(self.stage, feats, rois)
        return self.roi_head._bbox_forward(feats, rois)

    def readonly_losses(self,
                        feats: Sequence[Tensor],
                        pos_priors: Tensor,
                        pos_gt_bboxes: Tensor,
                        pos_gt_labels: Tensor,
                        neg_priors: Tensor,
                        autocast_dtype: Optional[torch.dtype] = None) -> RoILosses:
        """Per-RoI losses of one image's candidates, positives first then negatives.

        Args:
            feats: The image's feature maps, each ``(1, C, H, W)``.
            pos_priors: ``(p, 4)`` foreground candidate boxes.
            pos_gt_bboxes: ``(p, 4)`` their assigned gt boxes.
            pos_gt_labels: ``(p,)`` their gt labels.
            neg_priors: ``(q, 4)`` background candidate boxes.
            autocast_dtype: Optional reduced precision (``torch.bfloat16``/``torch.float16``) for the
                forward (see :func:`readonly_autocast`; ``None`` inherits the ambient autocast, i.e. the
                training pass's precision); the losses are still computed and returned in float32.

        Returns:
            :class:`RoILosses` with ``p + q`` rows.
        """
        from mmdet.structures.bbox import bbox2roi, get_box_tensor

        head = self.bbox_head
        pos_priors, neg_priors = get_box_tensor(pos_priors), get_box_tensor(neg_priors)
        num_pos = pos_priors.shape[0]
        n = num_pos + neg_priors.shape[0]
        rois = bbox2roi([torch.cat([pos_priors, neg_priors])])
        device_type = rois.device.type
        with torch.no_grad(), frozen_norm_stats(self.roi_head):
            with readonly_autocast(device_type, autocast_dtype):
                out = self.bbox_forward(feats, rois)
            cls_score = out['cls_score'].float() if out['cls_score'] is not None else None
            bbox_pred = out['bbox_pred'].float() if out['bbox_pred'] is not None else None
            del out  # drop RoI features now: nothing of the read-only pass outlives this block
            labels, label_weights, bbox_targets, bbox_weights = head._get_targets_single(
                pos_priors, neg_priors, pos_gt_bboxes, pos_gt_labels, self.train_cfg)
            with torch.autocast(device_type=device_type, enabled=False):
                if _uses_mmdet_bbox_loss(head):
                    losses = _bbox_head_losses_no_sync(head, cls_score, bbox_pred, rois, labels, label_weights,
                                                       bbox_targets, bbox_weights, num_pos)
                else:
                    losses = head.loss(cls_score, bbox_pred, rois, labels, label_weights, bbox_targets,
                                       bbox_weights, reduction_override='none')
        cls = torch.zeros(n, device=rois.device)
        loc = torch.zeros(n, device=rois.device)
        for key, value in losses.items():
            if not isinstance(value, Tensor) or 'loss' not in key or value.dim() == 0:
                continue  # accuracies, and the scalar 0 mmdet returns for loss_bbox when there is no fg
            if key.startswith('loss_bbox'):
                num_pos = value.shape[0]
                loc[:num_pos] += _per_row(value.float(), num_pos)
            else:
                cls += _per_row(value.float(), n)
        return RoILosses(cls=cls, loc=loc)
