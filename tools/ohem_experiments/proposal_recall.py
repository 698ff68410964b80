"""The RPN's proposal recall at ``num`` proposals per image, measured after training (issue 14's ablation).

Used by the ``rpn_ohem`` sweep preset (:mod:`.table1`): the worker calls :func:`proposal_recall` on the
trained model and the test split after ``runner.test()``, and the result's metrics gain
``rpn/recall@300_iou0.5`` and ``rpn/recall@300_iou0.7``.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

__all__ = ['RECALL_KEY', 'proposal_recall']


def RECALL_KEY(num: int, iou: float) -> str:  # noqa: N802  (a key builder, used like a constant)
    """Metric name of the proposal recall, e.g. ``rpn/recall@300_iou0.5``."""
    return f'rpn/recall@{num}_iou{iou:g}'


def proposal_recall(model, dataloader, num: int = 300, ious: Sequence[float] = (0.5, 0.7)) -> Dict[str, float]:
    """Recall of the RPN's top-``num`` proposals per image over ``dataloader`` (as mmdet's ``eval_recalls``).

    The proposals are the RPN's test-time output (its ``test_cfg.rpn``: NMS, then at most
    ``max_per_img``), in original image coordinates; gt boxes are the dataset's (difficult/ignored boxes
    are not in ``gt_instances`` and do not count).

    Returns:
        ``{RECALL_KEY(num, iou): recall}`` for each IoU threshold.
    """
    import torch
    from mmdet.evaluation.functional.bbox_overlaps import bbox_overlaps
    from mmdet.evaluation.functional.recall import _recalls
    model = getattr(model, 'module', model)
    was_training = model.training
    model.eval()
    gts, props = [], []
    with torch.no_grad():
        for data_batch in dataloader:
            data = model.data_preprocessor(data_batch, False)
            feats = model.extract_feat(data['inputs'])
            results = model.rpn_head.predict(feats, data['data_samples'], rescale=True)
            for res, sample in zip(results, data['data_samples']):
                top = res.scores.argsort(descending=True)[:num]
                props.append(res.bboxes[top].float().cpu().numpy())
                gts.append(sample.gt_instances.bboxes.float().cpu().numpy().reshape(-1, 4))
    model.train(was_training)
    # mmdet's eval_recalls builds np.array(list of per-image IoU matrices), which numpy >= 1.24 refuses when
    # images have different numbers of gt boxes; the same per-image matrices in an object array go to its
    # matching (_recalls: greedy one-to-one gt-proposal matching) unchanged.
    all_ious = np.empty(len(gts), dtype=object)
    for i, (g, p) in enumerate(zip(gts, props)):
        all_ious[i] = bbox_overlaps(g, p) if len(g) else np.zeros((0, len(p)), dtype=np.float32)
    rec = _recalls(all_ious, np.array([num]), np.array(list(ious), dtype=float))
    return {RECALL_KEY(num, iou): float(rec[0, j]) for j, iou in enumerate(ious)}
