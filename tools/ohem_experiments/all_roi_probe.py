"""The paper's Figure 3 measure: mean loss per RoI over *all* RoIs, the same for every method.

Each method's logged training loss is computed on the RoIs it trained on (random for FRCN, the hardest
for OHEM), so those curves are not comparable. :class:`AllRoILossHook` measures every run the same way:
at each logging step it takes the current batch, runs the current network (eval mode, no grad) on all
RPN proposals plus gt boxes, labels them with one fixed rule (fg IoU >= 0.5, everything else
background: bg_lo = 0) and logs the mean cls + box loss per RoI as ``allroi_mean_rl`` (and the
foreground share of those RoIs as ``allroi_fg_share``). It reuses the read-only pass of
:mod:`mmdet_ohem.readonly_pass`, so it costs one extra no-grad forward every ``interval`` iterations.
"""
from __future__ import annotations

from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import is_model_wrapper
from mmengine.structures import InstanceData

from mmdet_ohem.readonly_pass import RoIHeadAdapter

__all__ = ['AllRoILossHook', 'all_roi_mean_loss']

FIXED_ASSIGNER = dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=(0.0, 0.5), min_pos_iou=0.5,
                      match_low_quality=False, ignore_iof_thr=-1)


@torch.no_grad()
def all_roi_mean_loss(model, data_batch: dict) -> tuple:
    """``(mean loss per RoI, fg share)`` of a two-stage detector over all candidate RoIs of a batch.

    Raises:
        TypeError: If the model has no RPN + RoI head (not a two-stage detector).
    """
    from mmdet.registry import TASK_UTILS
    from mmdet.structures.bbox import get_box_tensor
    if not (hasattr(model, 'rpn_head') and hasattr(model, 'roi_head')):
        raise TypeError(f'AllRoILossHook needs a two-stage detector, got {type(model).__name__}')
    was_training = model.training
    model.eval()
    try:
        data = model.data_preprocessor(data_batch, True)
        samples = data['data_samples']
        feats = model.extract_feat(data['inputs'])
        metas = [s.metainfo for s in samples]
        proposals = model.rpn_head.predict_by_feat(*model.rpn_head(feats), batch_img_metas=metas,
                                                   cfg=model.train_cfg.rpn_proposal, rescale=False)
        assigner = TASK_UTILS.build(FIXED_ASSIGNER)
        adapter = RoIHeadAdapter(model.roi_head, 0 if hasattr(model.roi_head, 'num_stages') else None)
        total, count, fg = 0.0, 0, 0
        for i, (props, sample) in enumerate(zip(proposals, samples)):
            gt = sample.gt_instances
            gt_boxes = get_box_tensor(gt.bboxes)
            priors = torch.cat([gt_boxes, props.bboxes])
            result = assigner.assign(InstanceData(priors=priors), gt)
            pos = result.gt_inds > 0
            neg = result.gt_inds == 0
            losses = adapter.readonly_losses([f[i:i + 1] for f in feats], priors[pos],
                                             gt_boxes[result.gt_inds[pos] - 1], gt.labels[result.gt_inds[pos] - 1],
                                             priors[neg])
            rl = losses.ranking('cls+loc')
            finite = torch.isfinite(rl)
            total += float(rl[finite].sum())
            count += int(finite.sum())
            fg += int(pos.sum())
    finally:
        model.train(was_training)
    return total / max(count, 1), fg / max(count, 1)


class AllRoILossHook(Hook):
    """Logs ``allroi_mean_rl`` and ``allroi_fg_share`` every ``interval`` training iterations.

    Args:
        interval: Iterations between measurements; use the logger's interval so that every log line
            (and json-log record) carries a fresh value.
    """

    priority = 'NORMAL'  # before LoggerHook (BELOW_NORMAL) writes the iteration's log line

    def __init__(self, interval: int = 20) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
            raise ValueError(f'AllRoILossHook: interval must be a positive int, got {interval!r}')
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None, outputs=None) -> None:
        if data_batch is None or not self.every_n_train_iters(runner, self.interval):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        mean_rl, fg_share = all_roi_mean_loss(model, data_batch)
        hub = MessageHub.get_current_instance()
        hub.update_scalar('train/allroi_mean_rl', mean_rl)
        hub.update_scalar('train/allroi_fg_share', fg_share)
