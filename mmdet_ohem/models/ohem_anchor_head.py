"""The head side of RPN hard-anchor mining: a small mixin for mmdet anchor heads, and ``OHEMRPNHead``.

mmdet 3.3's ``AnchorHead.loss_by_feat`` computes targets (``get_targets``, which calls the sampler per
image, without predictions) and only then the loss from the predictions. :class:`AnchorOHEMMixin` hooks
exactly those two methods and nothing else:

* ``loss_by_feat`` keeps a reference to the predictions for the duration of the call and hands over to
  the head's own ``loss_by_feat`` (so ``RPNHead``'s ``loss_rpn_cls``/``loss_rpn_bbox`` naming is kept);
* ``get_targets`` calls ``AnchorHead.get_targets`` (the ``RPNOHEMSampler`` returns every non-ignored
  anchor), computes every anchor's loss with the head's own loss modules (``reduction_override='none'``,
  no graph), lets the sampler mine per image, zeroes the label and box weights of the anchors not mined,
  and replaces ``avg_factor`` by mmdet's sampled-anchor count for the mined sets.

The head's ordinary ``loss_by_feat_single`` then computes the training loss on the mined anchors only, so
the reduced loss is exactly ``sum(per-anchor loss of the mined anchors) / avg_factor``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from mmdet.models.dense_heads import AnchorHead, RPNHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import cat_boxes, get_box_tensor
from torch import Tensor

__all__ = ['AnchorOHEMMixin', 'OHEMRPNHead', 'enable_anchor_ohem', 'ohem_head_class', 'anchor_losses']

# Methods whose AnchorHead semantics the miner relies on; a head overriding one of them is refused.
_SAME_AS_ANCHOR_HEAD = ('get_targets', '_get_targets_single', 'loss_by_feat_single', 'get_anchors')
# loss_by_feat implementations known to reach AnchorHead.loss_by_feat with the predictions unchanged.
_KNOWN_LOSS_BY_FEAT = (AnchorHead.loss_by_feat, RPNHead.loss_by_feat)


class AnchorOHEMMixin:
    """Gives an ``AnchorHead`` subclass per-anchor losses before sampling, for ``RPNOHEMSampler``.

    Put it first in the bases (``class H(AnchorOHEMMixin, RPNHead)``); it does nothing unless the head's
    sampler is an ``RPNOHEMSampler`` and ``get_targets`` runs inside ``loss_by_feat``.
    """

    _ohem_preds: Optional[Tuple[List[Tensor], List[Tensor]]] = None
    last_mining: Optional[Dict[str, Any]] = None

    def loss_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], *args, **kwargs) -> dict:
        """The head's own ``loss_by_feat``, with the predictions visible to :meth:`get_targets`."""
        self._ohem_preds = (cls_scores, bbox_preds)
        try:
            return super().loss_by_feat(cls_scores, bbox_preds, *args, **kwargs)
        finally:
            self._ohem_preds = None

    def get_targets(self, anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
                    batch_gt_instances_ignore=None, unmap_outputs: bool = True,
                    return_sampling_results: bool = False) -> tuple:
        """``AnchorHead.get_targets``, then hard-anchor mining on the label/box weights (see module doc).

        Sampling results (``return_sampling_results=True``, and ``_raw_positive_infos``) stay those of the
        candidate list, i.e. every non-ignored anchor; only the weights and ``avg_factor`` reflect the
        mining. ``last_mining`` keeps the last call's mined indices and per-anchor losses for inspection.
        """
        res = super().get_targets(anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
                                  batch_gt_instances_ignore=batch_gt_instances_ignore,
                                  unmap_outputs=unmap_outputs, return_sampling_results=return_sampling_results)
        from ..samplers.rpn_ohem_sampler import RPNOHEMSampler
        if self._ohem_preds is None or not unmap_outputs or not isinstance(getattr(self, 'sampler', None),
                                                                            RPNOHEMSampler):
            return res
        labels_list, label_weights_list, bbox_targets_list, bbox_weights_list = res[:4]
        num_level_anchors = [a.size(0) for a in anchor_list[0]]
        anchors = torch.stack([get_box_tensor(cat_boxes(a)) for a in anchor_list])  # (N, A, 4)
        labels = torch.cat(labels_list, 1)
        label_weights = torch.cat(label_weights_list, 1)
        bbox_targets = torch.cat(bbox_targets_list, 1)
        bbox_weights = torch.cat(bbox_weights_list, 1)
        cls_scores, bbox_preds = self._ohem_preds
        loss_cls, loss_bbox = anchor_losses(self, cls_scores, bbox_preds, anchors, labels, label_weights,
                                            bbox_targets, bbox_weights)
        rank = {'cls': loss_cls, 'loc': loss_bbox, 'cls+loc': loss_cls + loss_bbox}[self.sampler.ranking_loss]
        keep = torch.zeros_like(label_weights, dtype=torch.bool)
        avg_factor, mined = 0, []
        for i in range(labels.shape[0]):
            cand = torch.nonzero(label_weights[i] > 0, as_tuple=False).flatten()
            is_pos = (labels[i, cand] >= 0) & (labels[i, cand] < self.num_classes)
            sel = self.sampler.mine(rank[i, cand], anchors[i, cand], is_pos)
            chosen = cand[sel.indices]
            keep[i, chosen] = True
            num_pos = int(is_pos[sel.indices].sum())
            # SamplingResult's convention (what mmdet's RPN divides by with RandomSampler)
            avg_factor += max(num_pos, 1) + max(chosen.numel() - num_pos, 1)
            mined.append(chosen)
        label_weights = label_weights * keep
        bbox_weights = bbox_weights * keep[..., None]
        self.last_mining = dict(mined=mined, loss_cls=loss_cls, loss_bbox=loss_bbox, avg_factor=avg_factor)
        return (labels_list, _split_levels(label_weights, num_level_anchors), bbox_targets_list,
                _split_levels(bbox_weights, num_level_anchors), avg_factor) + res[5:]


def _split_levels(t: Tensor, num_level_anchors: List[int]) -> List[Tensor]:
    """``(N, A, ...)`` -> per-level ``(N, A_l, ...)`` (the layout ``AnchorHead.get_targets`` returns)."""
    return list(torch.split(t, num_level_anchors, dim=1))


def anchor_losses(head: AnchorHead, cls_scores: List[Tensor], bbox_preds: List[Tensor], anchors: Tensor,
                  labels: Tensor, label_weights: Tensor, bbox_targets: Tensor,
                  bbox_weights: Tensor) -> Tuple[Tensor, Tensor]:
    """Every anchor's (unnormalised) loss, computed as ``AnchorHead.loss_by_feat_single`` would, no graph.

    Args:
        head: The anchor head (its ``loss_cls``/``loss_bbox``, coder and ``cls_out_channels`` are used).
        cls_scores, bbox_preds: Per-level predictions, ``(N, A_l * C, H, W)`` / ``(N, A_l * 4, H, W)``.
        anchors: ``(N, A, 4)`` all anchors, levels concatenated (``AnchorHead``'s order).
        labels, label_weights: ``(N, A)`` targets from ``get_targets`` (levels concatenated).
        bbox_targets, bbox_weights: ``(N, A, D)``.

    Returns:
        ``(loss_cls, loss_bbox)``, each ``(N, A)``: the weighted objectness loss (zero where the weight
        is zero) and the summed box loss (zero for negatives). Their sum over the anchors that the loss
        covers, divided by ``avg_factor``, is the head's reduced loss.
    """
    n, a = labels.shape
    with torch.no_grad():
        cls = torch.cat([s.detach().permute(0, 2, 3, 1).reshape(n, -1, head.cls_out_channels)
                         for s in cls_scores], 1).reshape(n * a, -1)
        reg = torch.cat([b.detach().permute(0, 2, 3, 1).reshape(n, -1, head.bbox_coder.encode_size)
                         for b in bbox_preds], 1).reshape(n * a, -1)
        lc = head.loss_cls(cls, labels.reshape(-1), label_weights.reshape(-1), reduction_override='none')
        if head.reg_decoded_bbox:
            reg = get_box_tensor(head.bbox_coder.decode(anchors.reshape(n * a, -1), reg))
        d = bbox_targets.shape[-1]
        lb = head.loss_bbox(reg, bbox_targets.reshape(-1, d), bbox_weights.reshape(-1, d),
                            reduction_override='none')
        if lb.dim() == 0:
            # mmdet's box losses (L1, SmoothL1, IoU family) return one 0-dim ``(pred * weight).sum()`` when no
            # weight is positive, i.e. no positive anchor in the batch: every anchor's box loss is zero then.
            lb = reg.new_zeros(n, a)
    return lc.reshape(n, a, -1).sum(-1).float(), lb.reshape(n, a, -1).sum(-1).float()


def _impl(cls: type, name: str) -> Any:
    """The implementation of ``name`` that ``cls`` uses, ignoring :class:`AnchorOHEMMixin`."""
    for k in cls.__mro__:
        if k is not AnchorOHEMMixin and name in k.__dict__:
            return k.__dict__[name]
    return None


def check_head(head: Any) -> None:
    """Raises ``TypeError`` (saying why) if the RPN miner cannot serve ``head``."""
    name = type(head).__name__
    if not isinstance(head, AnchorHead):
        hint = (' For the R-CNN stage use OHEMSampler in train_cfg.rcnn.' if hasattr(head, 'bbox_head') else '')
        raise TypeError(f'RPNOHEMSampler mines anchors of an mmdet AnchorHead (e.g. RPNHead in train_cfg.rpn); '
                        f'it was built for {name}, which is not one.{hint}')
    for method in _SAME_AS_ANCHOR_HEAD:
        if _impl(type(head), method) is not AnchorHead.__dict__[method]:
            raise TypeError(f'RPNOHEMSampler cannot serve {name}: it overrides AnchorHead.{method}, and the miner '
                            f'relies on AnchorHead\'s targets and per-anchor loss layout (supported: RPNHead and '
                            f'other heads that keep AnchorHead\'s {", ".join(_SAME_AS_ANCHOR_HEAD)}).')
    if _impl(type(head), 'loss_by_feat') not in _KNOWN_LOSS_BY_FEAT:
        raise TypeError(f'RPNOHEMSampler cannot serve {name}: its loss_by_feat is its own (not AnchorHead\'s or '
                        f'RPNHead\'s), so the miner cannot know that the predictions reach AnchorHead\'s loss '
                        f'unchanged.')


_CLASSES: Dict[type, type] = {}


def ohem_head_class(cls: type) -> type:
    """``cls`` with :class:`AnchorOHEMMixin` in front (``OHEMRPNHead`` for ``RPNHead``); cached."""
    if issubclass(cls, AnchorOHEMMixin):
        return cls
    if cls is RPNHead:
        return OHEMRPNHead
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f'OHEM{cls.__name__}', (AnchorOHEMMixin, cls),
                             {'__module__': __name__, '__doc__': f'{cls.__name__} with RPN hard-anchor mining.'})
    return _CLASSES[cls]


def enable_anchor_ohem(head: Any) -> None:
    """Checks ``head`` (:func:`check_head`) and, if needed, gives it the mixin by switching its class."""
    check_head(head)
    if not isinstance(head, AnchorOHEMMixin):
        head.__class__ = ohem_head_class(type(head))


@MODELS.register_module()
class OHEMRPNHead(AnchorOHEMMixin, RPNHead):
    """mmdet's ``RPNHead`` with hard-anchor mining (needs ``train_cfg.rpn.sampler.type='RPNOHEMSampler'``).

    Configs need not name it: an ``RPNOHEMSampler`` in ``train_cfg.rpn`` switches a plain ``RPNHead`` to
    this class. Same layers, same state-dict keys and the same inference as ``RPNHead``.

    Raises:
        TypeError: If it is built for training with another sampler (it would silently train on every
            anchor otherwise).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from ..samplers.rpn_ohem_sampler import RPNOHEMSampler
        if self.train_cfg and not isinstance(self.sampler, RPNOHEMSampler):
            raise TypeError(f"OHEMRPNHead needs train_cfg.rpn.sampler=dict(type='RPNOHEMSampler', num=...), "
                            f'got {type(self.sampler).__name__}')
