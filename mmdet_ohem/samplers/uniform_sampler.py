"""``UniformSampler``: Fast R-CNN sampling *without* the fg:bg ratio heuristic (the paper's ablations)."""
from __future__ import annotations

from typing import Any

import torch
from mmdet.models.task_modules.samplers import BaseSampler, SamplingResult
from mmdet.registry import TASK_UTILS
from torch import Tensor


@TASK_UTILS.register_module()
class UniformSampler(BaseSampler):
    """Samples ``num`` RoIs uniformly at random from all non-ignored candidates, with no fg quota.

    mmdet's ``RandomSampler`` always fills a foreground quota first, so it cannot express the paper's
    "no 1:3 ratio" rows (Table 1) or the "all RoIs" baseline (``num`` >= #candidates takes them all).

    Args:
        num: RoIs per image.
        pos_fraction: Ignored (accepted so configs inheriting ``RandomSampler`` settings can switch type).
        neg_pos_ub: Ignored.
        add_gt_as_proposals: Add gt boxes to the candidates.

    Raises:
        ValueError: If ``num`` is not a positive int.
    """

    def __init__(self, num: int, pos_fraction: float = 0.25, neg_pos_ub: int = -1,
                 add_gt_as_proposals: bool = True, **kwargs: Any) -> None:
        if isinstance(num, bool) or not isinstance(num, int) or num <= 0:
            raise ValueError(f'UniformSampler: num must be a positive int, got {num!r}')
        kwargs.pop('context', None)
        if kwargs:
            raise TypeError(f'UniformSampler got unknown setting(s) {sorted(kwargs)}')
        super().__init__(num, pos_fraction, neg_pos_ub, add_gt_as_proposals)

    def _sample_pos(self, assign_result, num_expected, **kwargs) -> Tensor:
        return torch.nonzero(assign_result.gt_inds > 0, as_tuple=False).flatten()

    def _sample_neg(self, assign_result, num_expected, **kwargs) -> Tensor:
        return torch.nonzero(assign_result.gt_inds == 0, as_tuple=False).flatten()

    def sample(self, assign_result, pred_instances, gt_instances, **kwargs) -> SamplingResult:
        """Draws ``num`` candidates uniformly (all of them when there are fewer)."""
        cands = super().sample(assign_result, pred_instances, gt_instances, **kwargs)
        pool = torch.cat([cands.pos_inds, cands.neg_inds])
        pick = pool[torch.randperm(pool.numel(), device=pool.device)[:self.num]]
        is_pos = assign_result.gt_inds[pick] > 0
        gt_flags = torch.zeros(cands.priors.shape[0], dtype=torch.uint8, device=pool.device)
        gt_flags[cands.pos_inds] = cands.pos_is_gt
        return SamplingResult(pos_inds=pick[is_pos], neg_inds=pick[~is_pos], priors=cands.priors,
                              gt_bboxes=gt_instances.bboxes, assign_result=assign_result, gt_flags=gt_flags)
