"""Shared base for samplers that choose jointly among *all* of an image's candidates."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from mmdet.models.task_modules.samplers import BaseSampler, SamplingResult
from torch import Tensor


@dataclass
class Candidates:
    """One image's non-ignored candidates, gathered by mmdet's own ``BaseSampler.sample`` code.

    Attributes:
        priors: The full candidate list (gt boxes first when ``add_gt_as_proposals``, then proposals);
            ``pos_inds``/``neg_inds`` index into it. Note: mmdet's ``SamplingResult.priors`` is *not* this
            (it is ``pos_priors`` then ``neg_priors``, with ignored RoIs dropped).
        gt_flags: ``(len(priors),)`` uint8, 1 for gt boxes added as proposals.
        all: ``SamplingResult`` over every candidate (positives and negatives, quotas ignored).
    """

    priors: Any
    gt_flags: Tensor
    all: SamplingResult

    @property
    def num(self) -> int:
        """Number of candidates (positives + negatives)."""
        return self.all.pos_inds.numel() + self.all.neg_inds.numel()


class CandidateSampler(BaseSampler):
    """``BaseSampler`` whose pos/neg hooks return every candidate, so subclasses can select jointly.

    ``BaseSampler.sample`` adds gt boxes as proposals (converting box types) exactly as mmdet does, then
    calls ``_sample_pos``/``_sample_neg``; here those ignore the quotas and return all positives / all
    negatives. :meth:`collect` wraps that; :meth:`result` builds the final ``SamplingResult`` from chosen
    indices into the candidate list.
    """

    def _sample_pos(self, assign_result, num_expected, bboxes=None, **kwargs) -> Tensor:
        self._collected_priors = bboxes  # BaseSampler passes the full candidate list here
        return torch.nonzero(assign_result.gt_inds > 0, as_tuple=False).flatten()

    def _sample_neg(self, assign_result, num_expected, **kwargs) -> Tensor:
        return torch.nonzero(assign_result.gt_inds == 0, as_tuple=False).flatten()

    def collect(self, assign_result, pred_instances, gt_instances, **kwargs) -> Candidates:
        """Every non-ignored candidate of one image (mutates ``assign_result`` like mmdet: gt added)."""
        self._collected_priors = None
        everything = BaseSampler.sample(self, assign_result, pred_instances, gt_instances, **kwargs)
        priors, self._collected_priors = self._collected_priors, None
        # After add_gt_, assign_result covers every candidate prior.
        gt_flags = torch.zeros(assign_result.gt_inds.numel(), dtype=torch.uint8,
                               device=assign_result.gt_inds.device)
        gt_flags[everything.pos_inds] = everything.pos_is_gt  # added gt boxes are always positives
        return Candidates(priors, gt_flags, everything)

    @staticmethod
    def result(cands: Candidates, pos_inds: Tensor, neg_inds: Tensor, assign_result,
               gt_instances) -> SamplingResult:
        """The ``SamplingResult`` for the chosen candidate indices."""
        return SamplingResult(pos_inds=pos_inds, neg_inds=neg_inds, priors=cands.priors,
                              gt_bboxes=gt_instances.bboxes, assign_result=assign_result,
                              gt_flags=cands.gt_flags)
