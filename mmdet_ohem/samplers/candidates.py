"""Shared base for samplers that choose jointly among *all* of an image's candidates."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

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
        num_filtered: Candidate boxes (ignored ones included) flagged by :meth:`CandidateSampler.collect`'s
            ``box_filter`` (a 0-dim tensor on the candidates' device, or 0 without a filter).
    """

    priors: Any
    gt_flags: Tensor
    all: SamplingResult
    num_filtered: Union[int, Tensor] = 0

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

    _box_filter: Optional[Callable[[Tensor], Tensor]] = None
    _kept: Optional[Tensor] = None

    def _sample_pos(self, assign_result, num_expected, bboxes=None, **kwargs) -> Tensor:
        self._collected_priors = bboxes  # BaseSampler passes the full candidate list here
        keep = assign_result.gt_inds > 0
        if self._box_filter is not None:
            from mmdet.structures.bbox import get_box_tensor
            self._kept = ~self._box_filter(get_box_tensor(bboxes))
            keep = keep & self._kept
        return torch.nonzero(keep, as_tuple=False).flatten()

    def _sample_neg(self, assign_result, num_expected, **kwargs) -> Tensor:
        keep = assign_result.gt_inds == 0
        if self._kept is not None:
            keep = keep & self._kept
        return torch.nonzero(keep, as_tuple=False).flatten()

    def collect(self, assign_result, pred_instances, gt_instances,
                box_filter: Optional[Callable[[Tensor], Tensor]] = None, **kwargs) -> Candidates:
        """Every non-ignored candidate of one image (mutates ``assign_result`` like mmdet: gt added).

        Args:
            box_filter: Optional ``(n, 4) boxes -> (n,) bool`` flagging candidates to leave out (applied
                inside mmdet's gathering, on the full candidate list with gt boxes added, so it costs no
                extra host read); how many boxes it flagged is ``Candidates.num_filtered``.
        """
        self._collected_priors, self._box_filter, self._kept = None, box_filter, None
        try:
            everything = BaseSampler.sample(self, assign_result, pred_instances, gt_instances, **kwargs)
            priors, kept = self._collected_priors, self._kept
        finally:
            self._collected_priors, self._box_filter, self._kept = None, None, None
        # After add_gt_, assign_result covers every candidate prior.
        gt_flags = torch.zeros(assign_result.gt_inds.numel(), dtype=torch.uint8,
                               device=assign_result.gt_inds.device)
        gt_flags[everything.pos_inds] = everything.pos_is_gt  # added gt boxes are always positives
        num_filtered: Union[int, Tensor] = 0
        if kept is not None:
            num_filtered = (~kept).sum()
        return Candidates(priors, gt_flags, everything, num_filtered)

    @staticmethod
    def result(cands: Candidates, pos_inds: Tensor, neg_inds: Tensor, assign_result,
               gt_instances) -> SamplingResult:
        """The ``SamplingResult`` for the chosen candidate indices."""
        return SamplingResult(pos_inds=pos_inds, neg_inds=neg_inds, priors=cands.priors,
                              gt_bboxes=gt_instances.bboxes, assign_result=assign_result,
                              gt_flags=cands.gt_flags)
