"""``RPNOHEMSampler``: OHEM over the anchors of an RPN (hard-anchor mining), configured in ``train_cfg.rpn``.

mmdet's anchor heads call ``sampler.sample(assign_result, pred_instances, gt_instances)`` once per image
from ``AnchorHead._get_targets_single``, *without* the head's predictions, so a sampler alone cannot rank
anchors by loss (that is why mmdet's own ``OHEMSampler`` fails in ``train_cfg.rpn``, mmdet issue #6039).
The work is therefore split in two:

* this sampler holds the settings (validated at build time), returns *every* non-ignored anchor from
  ``sample()`` (a candidate list, like ``PseudoSampler``), and owns the selection step (:meth:`mine`:
  the same pure rule as the R-CNN ``OHEMSampler``) and the diagnostics (``rpn_ohem_*`` log keys);
* a small head mixin (:class:`mmdet_ohem.models.ohem_anchor_head.AnchorOHEMMixin`) keeps the head's
  predictions during ``loss_by_feat``, computes every anchor's loss from them after ``get_targets``, asks
  :meth:`mine` which anchors to keep, and zeroes the target weights of the rest.

When built by a plain anchor head (``RPNHead`` etc.), the sampler gives that head the mixin (its class
becomes ``OHEMRPNHead`` / ``OHEM<HeadName>``), so changing ``train_cfg.rpn.sampler`` is all a config needs.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import torch
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import TASK_UTILS
from mmengine.logging import MMLogger
from torch import Tensor

from ..selection import Selection
from .candidates import CandidateSampler
from .checks import check_mining_settings
from .loss_nms import LossNMS
from .ohem_sampler import LOGGED_STATS, MinerMixin, MiningStats, _IterationStatsLogger, selection_stats

__all__ = ['RPNOHEMSampler']

LOG_PREFIX = 'rpn_ohem_'


@TASK_UTILS.register_module()
class RPNOHEMSampler(MinerMixin, CandidateSampler):
    """Online hard-anchor mining for anchor-based RPNs: per image, the ``num`` highest-loss anchors.

    Per image: every anchor that the assigner did not ignore (and that lies inside the allowed border) is
    a candidate; its current loss (objectness, plus box regression for positives, exactly the terms the
    RPN's own loss sums) ranks it; loss-NMS on the anchor boxes removes near-duplicates of harder anchors;
    the ``num`` hardest survivors are trained on. There is **no fg:bg ratio** unless ``keep_ratio=True``.

    Config (Faster R-CNN): ``train_cfg.rpn.sampler = dict(type='RPNOHEMSampler', num=256)``; mmdet's
    ``RandomSampler`` keys (``pos_fraction``, ``neg_pos_ub``, ``add_gt_as_proposals=False``) are accepted
    so that inheriting configs can switch ``type`` alone.

    Args:
        num: Anchors mined per image (256 in Faster R-CNN's RPN configs). Required: without it the build
            fails with a message saying so.
        pos_fraction: Foreground quota, used **only** with ``keep_ratio=True`` (otherwise ignored).
        context: The anchor head (mmdet passes it). It must use ``AnchorHead``'s target and loss code.
        neg_pos_ub: Negatives-per-positive cap, only with ``keep_ratio=True``.
        add_gt_as_proposals: Must be ``False``: anchors are a fixed grid, gt boxes cannot join it.
        ranking_loss: ``'cls+loc'`` (default: objectness + box loss of positives), ``'cls'`` or ``'loc'``.
        nms: Loss-NMS config or instance (``dict(type='LossNMS', iou_threshold=0.7)``); ``None`` = off.
            With ``per_class=True`` foreground and background anchors only suppress their own kind.
        keep_ratio: Mine foreground and background pools separately with ``pos_fraction``.
        nonfinite: ``'skip'`` (default): anchors with a NaN/inf loss are never mined and are counted
            (``rpn_ohem_nonfinite``); ``'raise'``: raise ``FloatingPointError``.
        log_stats: Publish per-iteration statistics (``rpn_ohem_cands``, ...) to mmengine's ``MessageHub``.

    Raises:
        ValueError: On a setting outside its range; the message names the setting and the value.
        TypeError: On an unknown setting, or a head whose loss path this miner cannot serve (the message
            says which method differs from ``AnchorHead``'s).
    """

    def __init__(self,
                 num: Optional[int] = None,
                 pos_fraction: float = 0.5,
                 context: Any = None,
                 neg_pos_ub: int = -1,
                 add_gt_as_proposals: bool = False,
                 ranking_loss: str = 'cls+loc',
                 nms: Optional[Union[dict, LossNMS]] = dict(type='LossNMS', iou_threshold=0.7),
                 keep_ratio: bool = False,
                 nonfinite: str = 'skip',
                 log_stats: bool = True,
                 **kwargs: Any) -> None:
        if kwargs:
            hint = " (mmdet's OHEMSampler option; ours is ranking_loss='cls'|'loc'|'cls+loc')" \
                if 'loss_key' in kwargs else ''
            raise TypeError(f'RPNOHEMSampler got unknown setting(s) {sorted(kwargs)}{hint}')
        check_mining_settings('RPNOHEMSampler', 'anchors', num, ranking_loss, pos_fraction, neg_pos_ub, nonfinite,
                              add_gt_as_proposals=add_gt_as_proposals, keep_ratio=keep_ratio, log_stats=log_stats)
        if add_gt_as_proposals:
            raise ValueError(f'RPNOHEMSampler: add_gt_as_proposals must be False (anchors are a fixed grid; '
                             f'gt boxes cannot be added to it), got {add_gt_as_proposals!r}')
        super().__init__(num, pos_fraction, neg_pos_ub, add_gt_as_proposals=False)
        self.ranking_loss = ranking_loss
        self.nms = TASK_UTILS.build(nms) if isinstance(nms, dict) else nms
        if self.nms is not None and not isinstance(self.nms, LossNMS):
            raise TypeError(f'RPNOHEMSampler: nms must be a LossNMS config, instance or None, got {self.nms!r}')
        self.keep_ratio = keep_ratio
        self.nonfinite = nonfinite
        self.last_stats: Optional[MiningStats] = None
        # anchors are a fixed grid: no bad-box filter, so no `badbox` statistic
        stats = {k: v for k, v in LOGGED_STATS.items() if k != 'badbox'}
        self._stats_logger = _IterationStatsLogger(LOG_PREFIX, stats=stats) if log_stats else None
        self.context = None
        if context is not None:
            from ..models.ohem_anchor_head import enable_anchor_ohem
            enable_anchor_ohem(context)  # raises TypeError, saying why, for heads it cannot serve
            self.context = context
        MMLogger.get_current_instance().info(f'[mmdet_ohem] {self.describe()}')

    def describe(self) -> str:
        """One line naming this miner and its settings."""
        head = type(self.context).__name__ if self.context is not None else 'no head yet'
        ratio = (f'fg:bg ratio KEPT (pos_fraction={self.pos_fraction}, neg_pos_ub={self.neg_pos_ub})'
                 if self.keep_ratio else f'no fg:bg ratio (pos_fraction={self.pos_fraction} ignored)')
        return (f'RPN OHEM active: mmdet_ohem.RPNOHEMSampler (hard-anchor mining over all non-ignored anchors) '
                f'for {head}: num={self.num}/image, ranking_loss={self.ranking_loss}, loss-NMS={self.nms!r} '
                f'on anchor boxes, {ratio}, nonfinite={self.nonfinite}')

    def sample(self, assign_result, pred_instances, gt_instances, **kwargs) -> SamplingResult:
        """Every non-ignored anchor of one image (the mining happens later, in :meth:`mine`).

        ``AnchorHead._get_targets_single`` calls this without predictions; the head mixin then computes
        the per-anchor losses and calls :meth:`mine`. Without the mixin this would train on all
        candidates, so the head is checked (and given the mixin) when the sampler is built.
        """
        return super().sample(assign_result, pred_instances, gt_instances, **kwargs)

    def select(self, losses: Tensor, boxes: Tensor, is_pos: Tensor) -> Selection:
        """The pure OHEM rule on one image's candidate anchors (``losses``, ``boxes``, ``is_pos``)."""
        labels = (~is_pos).long() if self.nms is not None and self.nms.per_class else None
        return self._select(losses, boxes, is_pos, labels, positives_first=False)

    def mine(self, losses: Tensor, boxes: Tensor, is_pos: Tensor) -> Selection:
        """:meth:`select`, plus the statistics of this image (``last_stats`` and the log keys).

        Args:
            losses: ``(n,)`` ranking loss of each candidate anchor of one image.
            boxes: ``(n, 4)`` the candidate anchors.
            is_pos: ``(n,)`` bool, True for foreground anchors.

        Returns:
            :class:`~mmdet_ohem.selection.Selection` (indices into the candidates, hardest first).
        """
        if losses.numel() == 0:
            self._record(MiningStats())
            return Selection(losses.new_zeros(0, dtype=torch.long))
        sel = self.select(losses, boxes, is_pos)
        self._record(selection_stats(losses, sel, losses.numel(), is_pos[sel.indices].sum()))
        return sel
