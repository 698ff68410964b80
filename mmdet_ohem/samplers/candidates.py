"""Shared base for samplers that choose jointly among *all* of an image's candidates."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from mmdet.models.task_modules.samplers import BaseSampler, SamplingResult
from torch import Tensor


@dataclass
class Candidates:
    """One image's non-ignored candidates, gathered as mmdet's ``BaseSampler.sample`` does.

    Attributes:
        priors: The full candidate list (gt boxes first when ``add_gt_as_proposals``, then proposals);
            ``pos_inds``/``neg_inds`` index into it. Note: mmdet's ``SamplingResult.priors`` is *not* this
            (it is ``pos_priors`` then ``neg_priors``, with ignored RoIs dropped).
        gt_flags: ``(len(priors),)`` uint8, 1 for gt boxes added as proposals (mmdet's own flags).
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
    """``BaseSampler`` that gathers every candidate, so that subclasses can select jointly.

    :meth:`collect` takes ``BaseSampler.sample``'s steps (gt boxes added as proposals, converting box
    types, exactly as mmdet does) but keeps every positive and every negative, ignoring the quotas, and
    skips ``BaseSampler``'s ``unique()`` of the indices: they come straight from ``nonzero`` and are
    unique already, and on a GPU each ``unique()`` is a host synchronisation. :meth:`result` builds the
    final ``SamplingResult`` from chosen indices into the candidate list. ``_sample_pos``/``_sample_neg``
    (``BaseSampler``'s hooks) return all positives / all negatives, should ``BaseSampler.sample`` be
    called directly.
    """

    def _sample_pos(self, assign_result, num_expected, **kwargs) -> Tensor:
        return torch.nonzero(assign_result.gt_inds > 0, as_tuple=False).flatten()

    def _sample_neg(self, assign_result, num_expected, **kwargs) -> Tensor:
        return torch.nonzero(assign_result.gt_inds == 0, as_tuple=False).flatten()

    def with_gt(self, assign_result, pred_instances, gt_instances) -> tuple:
        """The image's candidate list and mmdet's gt flags: ``BaseSampler.sample``'s first steps (gt boxes
        added as proposals when ``add_gt_as_proposals``, ``assign_result`` extended like mmdet's).

        Returns:
            ``(priors, gt_flags)``: the priors (gt boxes first, then proposals) and ``(len(priors),)``
            uint8 flags, 1 for the gt boxes.
        """
        from mmdet.structures.bbox import BaseBoxes, cat_boxes

        gt_bboxes, priors, gt_labels = gt_instances.bboxes, pred_instances.priors, gt_instances.labels
        if len(priors.shape) < 2:
            priors = priors[None, :]
        gt_flags = priors.new_zeros((priors.shape[0], ), dtype=torch.uint8)
        if self.add_gt_as_proposals and len(gt_bboxes) > 0:
            gt_as_priors = gt_bboxes.convert_to(type(priors)) \
                if isinstance(gt_bboxes, BaseBoxes) and isinstance(priors, BaseBoxes) else gt_bboxes
            priors = cat_boxes([gt_as_priors, priors], dim=0)
            assign_result.add_gt_(gt_labels)
            gt_flags = torch.cat([priors.new_ones(gt_as_priors.shape[0], dtype=torch.uint8), gt_flags])
        return priors, gt_flags

    def collect(self, assign_result, pred_instances, gt_instances,
                box_filter: Optional[Callable[[Tensor], Tensor]] = None, **kwargs) -> Candidates:
        """Every non-ignored candidate of one image (mutates ``assign_result`` like mmdet: gt added).

        Args:
            box_filter: Optional ``(n, 4) boxes -> (n,) bool`` flagging candidates to leave out (applied
                on the full candidate list with gt boxes added, before the indices are gathered, so it
                costs no extra host read); how many boxes it flagged is ``Candidates.num_filtered``.
        """
        from mmdet.structures.bbox import get_box_tensor

        gt_bboxes = gt_instances.bboxes
        priors, gt_flags = self.with_gt(assign_result, pred_instances, gt_instances)
        pos, neg = assign_result.gt_inds > 0, assign_result.gt_inds == 0
        num_filtered: Union[int, Tensor] = 0
        if box_filter is not None:
            bad = box_filter(get_box_tensor(priors))
            ok = ~bad
            pos, neg, num_filtered = pos & ok, neg & ok, bad.sum()
        everything = SamplingResult(pos_inds=torch.nonzero(pos, as_tuple=False).flatten(),
                                    neg_inds=torch.nonzero(neg, as_tuple=False).flatten(), priors=priors,
                                    gt_bboxes=gt_bboxes, assign_result=assign_result, gt_flags=gt_flags)
        return Candidates(priors, gt_flags, everything, num_filtered)

    @staticmethod
    def result(cands: Candidates, pos_inds: Tensor, neg_inds: Tensor, assign_result,
               gt_instances) -> SamplingResult:
        """The ``SamplingResult`` for the chosen candidate indices."""
        return SamplingResult(pos_inds=pos_inds, neg_inds=neg_inds, priors=cands.priors,
                              gt_bboxes=gt_instances.bboxes, assign_result=assign_result,
                              gt_flags=cands.gt_flags)
