"""Iterative bounding-box regression with weighted voting at test time (the OHEM paper's "B").

``IterBBoxRegRoIHead`` is mmdet's ``StandardRoIHead`` with a different test-time box step; training is
unchanged, so a config switches B on by changing ``roi_head.type`` alone::

    model = dict(roi_head=dict(type='IterBBoxRegRoIHead', num_iters=2, vote_iou=0.5))

Per image, following the OHEM paper (Sec. 6.1, after Gidaris & Komodakis' MR-CNN):

1. score and regress the proposals: for every class ``c``, score ``s1[i, c]`` and box ``b1[i, c]``;
2. score and regress the regressed boxes again: ``b1[i, c]`` is pooled and passed through the head, giving
   ``s2[i, c]`` (its class-``c`` score) and ``b2[i, c]`` (its class-``c`` regression);
3. pool both sets ``{(b1, s1)} U {(b2, s2)}`` (scores above ``test_cfg.rcnn.score_thr``);
4. per-class NMS at ``test_cfg.rcnn.nms.iou_threshold`` (0.3 in the paper configs);
5. each kept box's coordinates become the score-weighted mean of the pooled boxes of its class that
   overlap it with IoU >= ``vote_iou`` (0.5) - :func:`~mmdet_ohem.models.box_voting.nms_with_box_voting`.

As in MR-CNN, each regressed box is paired with the score of the box it was regressed from.
``num_iters=1`` gives one scoring/regression pass followed by NMS and voting (voting alone).
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi, get_box_tensor
from mmengine.structures import InstanceData
from torch import Tensor

from .box_voting import nms_with_box_voting

__all__ = ['IterBBoxRegRoIHead']


@MODELS.register_module()
class IterBBoxRegRoIHead(StandardRoIHead):
    """``StandardRoIHead`` whose test-time box prediction is iterative regression + box voting.

    Args:
        num_iters: Scoring/regression passes whose detections are pooled (2 in the paper).
        vote_iou: IoU at or above which a pooled box votes for a kept box (0.5 in the paper).
        max_rois_per_pass: RoIs per head forward in the second and later passes (which see
            ``proposals x classes`` boxes); only bounds memory, the result does not depend on it.
        **kwargs: ``StandardRoIHead`` arguments.

    Raises:
        ValueError: On a non-positive ``num_iters``/``max_rois_per_pass`` or ``vote_iou`` outside (0, 1];
            at test time, if ``test_cfg.rcnn.nms`` is not plain ``nms`` with an ``iou_threshold``.
    """

    def __init__(self, num_iters: int = 2, vote_iou: float = 0.5, max_rois_per_pass: int = 8192,
                 **kwargs: Any) -> None:
        for name, v in (('num_iters', num_iters), ('max_rois_per_pass', max_rois_per_pass)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f'IterBBoxRegRoIHead: {name} must be a positive int, got {v!r}')
        if isinstance(vote_iou, bool) or not isinstance(vote_iou, (int, float)) or not 0 < vote_iou <= 1:
            raise ValueError(f'IterBBoxRegRoIHead: vote_iou must be in (0, 1], got {vote_iou!r}')
        super().__init__(**kwargs)
        self.num_iters = num_iters
        self.vote_iou = float(vote_iou)
        self.max_rois_per_pass = max_rois_per_pass

    def _score_and_regress(self, x: Tuple[Tensor, ...], boxes: Tensor, img_meta: dict) -> Tuple[Tensor, Tensor]:
        """One head pass over ``boxes`` ``(n, 4)`` of one image: class scores ``(n, K)`` (background
        dropped) and per-class regressed boxes ``(n, K, 4)``, clipped to the image."""
        num_classes = self.bbox_head.num_classes
        scores, regressed = [], []
        for chunk in boxes.split(self.max_rois_per_pass):
            out = self._bbox_forward(x, bbox2roi([chunk]))
            cls_score, bbox_pred = out['cls_score'], out['bbox_pred']
            if self.bbox_head.custom_cls_channels:
                prob = self.bbox_head.loss_cls.get_activation(cls_score)
            else:
                prob = F.softmax(cls_score, dim=-1)
            scores.append(prob[:, :num_classes])
            if bbox_pred is None:
                reg = chunk[:, None, :].expand(-1, num_classes, 4)
            else:
                dec = get_box_tensor(self.bbox_head.bbox_coder.decode(chunk, bbox_pred,
                                                                       max_shape=img_meta['img_shape']))
                reg = dec.reshape(chunk.shape[0], -1, 4)
                if reg.shape[1] == 1:  # class-agnostic regression
                    reg = reg.expand(-1, num_classes, 4)
            regressed.append(reg)
        return torch.cat(scores), torch.cat(regressed)

    def _predict_single(self, x: Tuple[Tensor, ...], img_meta: dict, proposals: Tensor, rcnn_test_cfg: Any,
                        rescale: bool) -> InstanceData:
        nms_cfg = rcnn_test_cfg.get('nms') or {}
        if nms_cfg.get('type', 'nms') != 'nms' or 'iou_threshold' not in nms_cfg:
            raise ValueError(f"IterBBoxRegRoIHead needs test_cfg.rcnn.nms=dict(type='nms', iou_threshold=...), "
                             f'got {dict(nms_cfg)!r}')
        num_classes = self.bbox_head.num_classes
        n = proposals.shape[0]
        results = InstanceData()
        if n == 0:
            results.bboxes = proposals.new_zeros((0, 4))
            results.scores = proposals.new_zeros((0,))
            results.labels = proposals.new_zeros((0,), dtype=torch.long)
            return results
        grid = torch.arange(num_classes, device=proposals.device).expand(n, num_classes).reshape(-1)
        scores, boxes = self._score_and_regress(x, proposals, img_meta)  # pass 1: proposals
        pool_boxes, pool_scores = [boxes.reshape(-1, 4)], [scores.reshape(-1)]
        for _ in range(1, self.num_iters):  # pass t: the boxes regressed in pass t-1, each for its class
            s_all, b_all = self._score_and_regress(x, boxes.reshape(-1, 4), img_meta)
            rows = torch.arange(n * num_classes, device=proposals.device)
            scores = s_all[rows, grid].view(n, num_classes)
            boxes = b_all[rows, grid].view(n, num_classes, 4)
            pool_boxes.append(boxes.reshape(-1, 4))
            pool_scores.append(scores.reshape(-1))
        all_boxes, all_scores = torch.cat(pool_boxes), torch.cat(pool_scores)
        all_labels = grid.repeat(self.num_iters)
        valid = all_scores > float(rcnn_test_cfg.get('score_thr', 0.0))
        det_boxes, det_scores, det_labels = nms_with_box_voting(
            all_boxes[valid], all_scores[valid], all_labels[valid], nms_iou=float(nms_cfg['iou_threshold']),
            vote_iou=self.vote_iou, max_per_img=int(rcnn_test_cfg.get('max_per_img', -1)))
        if rescale and det_boxes.shape[0] > 0:
            scale = det_boxes.new_tensor(img_meta['scale_factor']).repeat(2)
            det_boxes = det_boxes / scale
        results.bboxes = det_boxes
        results.scores = det_scores
        results.labels = det_labels
        return results

    def predict_bbox(self, x: Tuple[Tensor, ...], batch_img_metas: List[dict], rpn_results_list: List[Any],
                     rcnn_test_cfg: Optional[Any], rescale: bool = False) -> List[InstanceData]:
        """Detections per image by iterative regression + voting (see the module docstring).

        Without a ``rcnn_test_cfg`` (raw outputs requested) this is ``StandardRoIHead.predict_bbox``.
        """
        if rcnn_test_cfg is None:
            return super().predict_bbox(x, batch_img_metas, rpn_results_list, rcnn_test_cfg, rescale)
        return [self._predict_single(tuple(f[i:i + 1] for f in x), meta, res.bboxes, rcnn_test_cfg, rescale)
                for i, (meta, res) in enumerate(zip(batch_img_metas, rpn_results_list))]
