"""``UniformSampler``: Fast R-CNN sampling *without* the fg:bg ratio heuristic (the paper's ablations)."""
from __future__ import annotations

from typing import Any

import torch
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import TASK_UTILS

from .candidates import CandidateSampler
from .checks import check_bool, check_neg_pos_ub, check_number


@TASK_UTILS.register_module()
class UniformSampler(CandidateSampler):
    """Samples ``num`` RoIs uniformly at random from all non-ignored candidates, with no fg quota.

    mmdet's ``RandomSampler`` always fills a foreground quota first, so it cannot express the paper's
    "no 1:3 ratio" rows (Table 1) or the "all RoIs" baseline (``num`` >= #candidates takes them all).

    Args:
        num: RoIs per image.
        pos_fraction: Ignored (accepted so configs inheriting ``RandomSampler`` settings can switch type).
        neg_pos_ub: Ignored.
        add_gt_as_proposals: Add gt boxes to the candidates.

    Raises:
        ValueError: If ``num`` is not a positive int, or a setting is out of range.
        TypeError: If a setting has the wrong type (e.g. ``add_gt_as_proposals='False'``).
    """

    def __init__(self, num: int, pos_fraction: float = 0.25, neg_pos_ub: int = -1,
                 add_gt_as_proposals: bool = True, **kwargs: Any) -> None:
        if isinstance(num, bool) or not isinstance(num, int) or num <= 0:
            raise ValueError(f'UniformSampler: num must be a positive int, got {num!r}')
        check_number('UniformSampler', 'pos_fraction', pos_fraction, 0.0, 1.0)
        check_neg_pos_ub('UniformSampler', neg_pos_ub)
        check_bool('UniformSampler', 'add_gt_as_proposals', add_gt_as_proposals)
        kwargs.pop('context', None)
        if kwargs:
            raise TypeError(f'UniformSampler got unknown setting(s) {sorted(kwargs)}')
        super().__init__(num, pos_fraction, neg_pos_ub, add_gt_as_proposals)

    def sample(self, assign_result, pred_instances, gt_instances, **kwargs) -> SamplingResult:
        """Draws ``num`` candidates uniformly (all of them when there are fewer)."""
        cands = self.collect(assign_result, pred_instances, gt_instances, **kwargs)
        pool = torch.cat([cands.all.pos_inds, cands.all.neg_inds])
        pick = pool[torch.randperm(pool.numel(), device=pool.device)[:self.num]]
        is_pos = assign_result.gt_inds[pick] > 0
        return self.result(cands, pick[is_pos], pick[~is_pos], assign_result, gt_instances)
