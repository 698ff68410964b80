"""The OHEM selection rule as a pure function of (losses, boxes, budget, nms).

Everything here is plain PyTorch and testable without a detector. The mmdet adapter
(:mod:`mmdet_ohem.samplers`) computes the per-RoI losses and calls these functions.

Paper mode (:func:`select_hard_examples`) on a GPU reads back exactly one small tensor (the number of
mined positives and negatives, the loss-NMS convergence flag, the non-finite count): a result whose
size depends on the data cannot be built without it, and nothing else is read. Its counts stay on the
device. On the CPU the same rule runs with the host loss-NMS (faster there); both give the same result.
Ratio mode (an ablation) reads back pool sizes as it goes.

:func:`select_hard_examples_batch` applies paper mode to several images at once (padded to one
``(B, n)`` problem on a GPU, with one read for all of them): the same result as one call per image.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import TYPE_CHECKING, Callable, Dict, Hashable, List, Literal, Optional, Protocol, Sequence, Tuple, Union

import torch
from torch import Tensor

from .nms import GreedyFixedPoint, device_prefix, greedy_loss_nms, rank_by_loss, resolve_method, suppression_matrix

if TYPE_CHECKING:
    from .graph import SelectionGraphs

__all__ = ['Selection', 'NonFinitePolicy', 'NONFINITE_SKIP_LIMIT', 'DeviceRule', 'FrontRows', 'GivenLosses',
           'RankingFront', 'select_hard_examples', 'select_hard_examples_batch', 'select_hard_examples_front',
           'select_hard_examples_padded', 'select_hard_examples_ratio', 'runs_on_device']

NonFinitePolicy = Literal['skip', 'raise']

#: With ``nonfinite='skip'``, candidates with a NaN/inf ranking loss are skipped while they are at most
#: this share of an image's candidates (a few RoIs over broken features or boxes). Above it the read-only
#: network itself is broken (e.g. a NaN weight): skipping would hide it behind a finite loss, so the
#: candidates are then mined anyway, non-finite ones first, and the training loss turns NaN exactly as
#: it does with a random sampler.
NONFINITE_SKIP_LIMIT = 0.5


Count = Union[int, Tensor]


@dataclass(frozen=True)
class Selection:
    """Which candidates were mined.

    Attributes:
        indices: Indices into the candidate list. Paper mode: hardest first, or, with ``is_pos`` given,
            the mined positives (hardest first) followed by the mined negatives (hardest first). Ratio
            mode: positives then negatives, as well.
        num_suppressed: Candidates removed by loss-NMS while the budget was being filled: a 0-dim int64
            tensor on the candidates' device, or an int where the device method read it back together
            with the result sizes (no extra read).
        num_nonfinite: Candidates whose ranking loss was NaN or infinite (as ``num_suppressed``: tensor
            or int); they are never mined unless ``nonfinite_kept``.
        num_pos: How many of ``indices`` (the first ones) are positives; ``None`` in paper mode without
            ``is_pos``.
        nonfinite_kept: True when the non-finite candidates were more than :data:`NONFINITE_SKIP_LIMIT`
            of the candidates and were therefore mined first instead of skipped.
        mined_loss: Sum of the losses of the mined candidates, ``candidate_loss`` the sum over the finite
            candidates and ``num_finite`` their number: Python numbers read back with the result sizes
            by the device method (statistics at no extra read or operator per image); ``None`` elsewhere.
        num_candidates: How many rows took part (with ``valid``: the valid ones; else all), an int;
            ``None`` where the caller knows it from the shapes (no ``valid`` given, device method).
    """

    indices: Tensor
    num_suppressed: Count
    num_nonfinite: Count
    num_pos: Optional[int] = None
    nonfinite_kept: bool = False
    mined_loss: Optional[float] = None
    candidate_loss: Optional[float] = None
    num_finite: Optional[int] = None
    num_candidates: Optional[int] = None


def _check_inputs(losses: Tensor, boxes: Tensor, num: int, iou_threshold: Optional[float]) -> None:
    if isinstance(num, bool) or not isinstance(num, int) or num <= 0:
        raise ValueError(f'num (RoIs to mine per image) must be a positive int, got {num!r}')
    if iou_threshold is not None and not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f'iou_threshold must be in (0, 1] or None (no loss-NMS), got {iou_threshold!r}')
    if losses.dim() != 1:
        raise ValueError(f'losses must be 1-D (one ranking loss per candidate), got shape {tuple(losses.shape)}')
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or boxes.shape[0] != losses.shape[0]:
        raise ValueError(f'boxes must be ({losses.shape[0]}, 4) to match losses, got {tuple(boxes.shape)}')


def _raise_nonfinite(losses: Tensor, finite: Tensor) -> None:
    num_bad = int((~finite).sum())
    raise FloatingPointError(
        f'OHEM read-only pass produced {num_bad} non-finite ranking losses out of {losses.numel()} '
        f'candidates (first: {losses[~finite][0].item()}); set nonfinite="skip" to mine the rest')


def _check_policy(policy: NonFinitePolicy, skip_limit: float) -> None:
    if policy not in ('skip', 'raise'):
        raise ValueError(f'nonfinite must be "skip" or "raise", got {policy!r}')
    if isinstance(skip_limit, bool) or not isinstance(skip_limit, (int, float)) or not 0.0 <= skip_limit <= 1.0:
        raise ValueError(f'nonfinite_skip_limit must be a number in [0, 1], got {skip_limit!r}')


def _nonfinite_plan(losses: Tensor, policy: NonFinitePolicy, skip_limit: float) -> tuple[Tensor, Tensor, bool]:
    """How non-finite losses are handled (host path): ``(ranking losses, finite mask, keep_nonfinite)``.

    ``'raise'`` raises on any; ``'skip'`` drops them while they are at most ``skip_limit`` of the
    candidates, else keeps them, ranked first (as ``+inf``), so that the training loss shows the failure.
    """
    _check_policy(policy, skip_limit)
    finite = torch.isfinite(losses)
    num_bad = int((~finite).sum())
    if num_bad and policy == 'raise':
        _raise_nonfinite(losses, finite)
    keep = num_bad > skip_limit * losses.numel()
    ranking = torch.where(finite, losses, losses.new_tensor(float('inf'))) if keep else losses
    return ranking, finite, keep


def _mine_pool(losses: Tensor, boxes: Tensor, pool: Tensor, budget: int, iou_threshold: Optional[float],
               labels: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Hardest ``budget`` members of ``pool`` (after optional loss-NMS), hardest first, and the number
    of candidates loss-NMS suppressed on the way."""
    if budget <= 0 or pool.numel() == 0 or iou_threshold is None:
        return pool[rank_by_loss(losses[pool])[:max(budget, 0)]], _count(0, losses)
    pool_losses = losses[pool]
    res = greedy_loss_nms(boxes[pool], pool_losses, iou_threshold, max_keep=budget,
                          labels=labels[pool] if labels is not None else None)
    return pool[res.keep], res.num_suppressed


def select_hard_examples(losses: Tensor,
                         boxes: Tensor,
                         num: int,
                         iou_threshold: Optional[float] = 0.7,
                         labels: Optional[Tensor] = None,
                         nonfinite: NonFinitePolicy = 'skip',
                         is_pos: Optional[Tensor] = None,
                         method: str = 'auto',
                         nonfinite_skip_limit: float = NONFINITE_SKIP_LIMIT,
                         valid: Optional[Tensor] = None) -> Selection:
    """Paper OHEM: the ``num`` highest-loss candidates that survive loss-NMS, with no fg:bg ratio.

    Args:
        losses: ``(n,)`` ranking loss of each candidate (cls, loc or cls+loc).
        boxes: ``(n, 4)`` candidate boxes, ``(x1, y1, x2, y2)``.
        num: Budget: how many candidates to mine (B/N in the paper). Fewer are returned when fewer
            candidates survive.
        iou_threshold: Loss-NMS IoU threshold; ``None`` disables loss-NMS.
        labels: Optional ``(n,)`` labels; when given, loss-NMS suppresses only within a label.
        nonfinite: ``'skip'`` never mines candidates whose loss is NaN/inf (and counts them) while they
            are at most ``nonfinite_skip_limit`` of the candidates, and mines them first above it;
            ``'raise'`` raises :class:`FloatingPointError`.
        is_pos: Optional ``(n,)`` bool: return the mined positives first (``Selection.num_pos`` of
            them), then the mined negatives; the same set, each part hardest first.
        method: Loss-NMS implementation (``'auto'``, ``'host'``, ``'device'``, see
            :func:`~mmdet_ohem.selection.nms.greedy_loss_nms`); the result does not depend on it.
        nonfinite_skip_limit: See :data:`NONFINITE_SKIP_LIMIT`.
        valid: Optional ``(n,)`` bool: only these rows are candidates (the others, e.g. ignored RoIs or
            unusable boxes, take no part: never mined, never suppress, not counted, whatever their loss
            or box). The result is that of the call on the valid rows alone, with its indices mapped back
            to all rows; ``Selection.num_candidates`` is their number.

    Returns:
        :class:`Selection`.

    Raises:
        ValueError: On a bad budget, threshold, shape or method; the message names the value.
    """
    _check_inputs(losses, boxes, num, iou_threshold)
    for name, mask in (('is_pos', is_pos), ('valid', valid)):
        if mask is not None and mask.shape != losses.shape:
            raise ValueError(f'{name} must have shape {tuple(losses.shape)}, got {tuple(mask.shape)}')
    _check_policy(nonfinite, nonfinite_skip_limit)
    if losses.shape[0] > 0 and resolve_method(method, losses.device, losses.shape[0]) == 'device':
        # one host read (see the module docstring): the batched device rule on a batch of one image
        return _select_batch_on_device([losses], [boxes], num, iou_threshold,
                                       [labels] if labels is not None else None, nonfinite,
                                       [is_pos] if is_pos is not None else None, nonfinite_skip_limit,
                                       [valid] if valid is not None else None)[0]
    if valid is not None:  # the reference: the rule on the valid rows alone
        rows = torch.nonzero(valid.bool()).flatten()
        sel = select_hard_examples(losses[rows], boxes[rows], num, iou_threshold,
                                   labels[rows] if labels is not None else None, nonfinite,
                                   is_pos[rows] if is_pos is not None else None, method, nonfinite_skip_limit)
        return Selection(rows[sel.indices], sel.num_suppressed, sel.num_nonfinite, sel.num_pos, sel.nonfinite_kept,
                         sel.mined_loss, sel.candidate_loss, sel.num_finite, rows.numel())
    ranking, finite, keep_bad = _nonfinite_plan(losses, nonfinite, nonfinite_skip_limit)
    pool = torch.arange(losses.shape[0], device=losses.device)
    if not keep_bad:
        pool = pool[finite]
    keep, supp = _mine_pool(ranking, boxes, pool, num, iou_threshold, labels)
    num_pos = None
    if is_pos is not None:
        mined_pos = is_pos[keep].bool()
        keep = torch.cat([keep[mined_pos], keep[~mined_pos]])
        num_pos = int(mined_pos.sum())
    return Selection(keep, _count(supp, losses), _count((~finite).sum(), losses), num_pos, keep_bad)


def _full_length(kept: Tensor, n: int) -> Tensor:
    """``kept`` over a ranked prefix, extended with ``False`` to the whole ranked list of ``n``."""
    missing = n - kept.shape[-1]
    return kept if missing == 0 else torch.cat([kept, kept.new_zeros(kept.shape[:-1] + (missing, ))], dim=-1)


def _count(value, like: Tensor) -> Tensor:
    """A count as a 0-dim int64 tensor on ``like``'s device (tensors pass through)."""
    if isinstance(value, Tensor):
        return value.to(torch.long).reshape(())
    return torch.tensor(int(value), dtype=torch.long, device=like.device)


def pad_rows(rows: Sequence[Tensor], value: float | bool, length: Optional[int] = None) -> Tensor:
    """``(B * n, ...)``: the rows concatenated, each padded at its end with ``value`` to ``n`` rows (``length``,
    default the longest row's), so that a view as ``(B, n, ...)`` gives one row per image.

    One concatenation of the rows and their padding: one operator plus one fill per padded row
    (``pad_sequence`` dispatches three per row); nothing at all for a single row of full length.
    """
    n = max(r.shape[0] for r in rows) if length is None else length
    pieces = []
    for r in rows:
        pieces.append(r)
        if r.shape[0] < n:
            pieces.append(r.new_full((n - r.shape[0], ) + tuple(r.shape[1:]), value))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _pad(rows: Sequence[Tensor], value: float | bool) -> Tensor:
    """``(B, n_max, ...)``: :func:`pad_rows` viewed with one row per image (one row: a view)."""
    if len(rows) == 1:
        return rows[0][None]
    n = max(r.shape[0] for r in rows)
    return pad_rows(rows, value, n).view((len(rows), n) + tuple(rows[0].shape[1:]))


def select_hard_examples_batch(losses: Sequence[Tensor],
                               boxes: Sequence[Tensor],
                               num: int,
                               iou_threshold: Optional[float] = 0.7,
                               labels: Optional[Sequence[Tensor]] = None,
                               nonfinite: NonFinitePolicy = 'skip',
                               is_pos: Optional[Sequence[Tensor]] = None,
                               method: str = 'auto',
                               nonfinite_skip_limit: float = NONFINITE_SKIP_LIMIT,
                               valid: Optional[Sequence[Tensor]] = None) -> List[Selection]:
    """:func:`select_hard_examples` for several images (lists) at once: one :class:`Selection` per image.

    Each image keeps its own budget ``num``, its own loss-NMS (boxes of different images never
    suppress each other) and its own non-finite policy decision; the result is exactly that of one
    :func:`select_hard_examples` call per image. With the device method (the CUDA default) the images are
    padded into one ``(B, n)`` problem: one ranking, one batched suppression matrix (over the ranked
    prefix of :func:`~.nms.device_prefix`) and fixed point, and **one** host read for all images instead
    of one each. Otherwise (the host method, the CPU default) it loops over the images.

    Args:
        losses: Per image ``(n_b,)`` ranking losses (the same device for all).
        boxes: Per image ``(n_b, 4)`` boxes.
        num, iou_threshold, nonfinite, method, nonfinite_skip_limit: As in :func:`select_hard_examples`.
        labels: Optional per image ``(n_b,)`` labels (per-class loss-NMS).
        is_pos: Optional per image ``(n_b,)`` bool (positives first in each result).
        valid: Optional per image ``(n_b,)`` bool: the rows that are candidates (see
            :func:`select_hard_examples`).

    Raises:
        ValueError: On a bad budget, threshold, shape, method, or lists of different lengths.
    """
    count = len(losses)
    masks = {'labels': labels, 'is_pos': is_pos, 'valid': valid}
    if len(boxes) != count or any(m is not None and len(m) != count for m in masks.values()):
        raise ValueError(f'select_hard_examples_batch: one entry per image in every list, got {count} losses, '
                         f'{len(boxes)} boxes' + ''.join(f', {len(m)} {k}' for k, m in masks.items() if m is not None))
    for b in range(count):
        _check_inputs(losses[b], boxes[b], num, iou_threshold)
        for name in ('is_pos', 'valid'):
            m = masks[name]
            if m is not None and m[b].shape != losses[b].shape:
                raise ValueError(f'{name}[{b}] must have shape {tuple(losses[b].shape)}, got {tuple(m[b].shape)}')
    _check_policy(nonfinite, nonfinite_skip_limit)
    if count == 0:
        return []
    n = max(int(x.shape[0]) for x in losses)
    if count == 1 or n == 0 or resolve_method(method, losses[0].device, n) != 'device':
        return [select_hard_examples(losses[b], boxes[b], num, iou_threshold,
                                     labels[b] if labels is not None else None, nonfinite,
                                     is_pos[b] if is_pos is not None else None, method, nonfinite_skip_limit,
                                     valid[b] if valid is not None else None)
                for b in range(count)]
    return _select_batch_on_device(losses, boxes, num, iou_threshold, labels, nonfinite, is_pos,
                                   nonfinite_skip_limit, valid)


def _select_batch_on_device(losses: Sequence[Tensor], boxes: Sequence[Tensor], num: int,
                            iou_threshold: Optional[float], labels: Optional[Sequence[Tensor]],
                            nonfinite: NonFinitePolicy, is_pos: Optional[Sequence[Tensor]],
                            skip_limit: float, valid: Optional[Sequence[Tensor]] = None) -> List[Selection]:
    """Paper mode for ``B`` images with one host read: the lists padded to ``(B, n)`` for
    :func:`_select_padded_on_device` (padding is never valid)."""
    sizes = [int(x.shape[0]) for x in losses]
    if valid is None and len(set(sizes)) > 1:
        valid = [x.new_ones(x.shape, dtype=torch.bool) for x in losses]
    return _select_padded_on_device(
        _pad(losses, 0.0), _pad(boxes, 0.0), num, iou_threshold,
        _pad(labels, -1) if labels is not None else None, nonfinite,
        _pad([p.bool() for p in is_pos], False) if is_pos is not None else None, skip_limit,
        _pad([v.bool() for v in valid], False) if valid is not None else None, sizes)


def select_hard_examples_padded(losses: Tensor,
                                boxes: Tensor,
                                num: int,
                                iou_threshold: Optional[float] = 0.7,
                                labels: Optional[Tensor] = None,
                                nonfinite: NonFinitePolicy = 'skip',
                                is_pos: Optional[Tensor] = None,
                                method: str = 'auto',
                                nonfinite_skip_limit: float = NONFINITE_SKIP_LIMIT,
                                valid: Optional[Tensor] = None,
                                graphs: Optional['SelectionGraphs'] = None) -> List[Selection]:
    """:func:`select_hard_examples_batch` on rows that are already one ``(B, n)`` problem: row ``b`` of every
    tensor holds image ``b``'s rows (an image with fewer rows pads its row with rows that ``valid`` leaves
    out). The result is that of :func:`select_hard_examples` on each row with its ``valid`` mask; on the
    device method no padding step is needed (the callers that build their rows padded save its operators).

    Args:
        losses: ``(B, n)`` ranking losses.
        boxes: ``(B, n, 4)`` boxes.
        labels, is_pos, valid: Optional ``(B, n)`` tensors (per-class loss-NMS labels, positives, the rows
            that take part).
        graphs: Optional :class:`~mmdet_ohem.selection.graph.SelectionGraphs`: on a GPU, run the rule as a
            captured CUDA graph (one launch instead of about a hundred; the same result).
        Others: As in :func:`select_hard_examples`.

    Raises:
        ValueError: On a bad budget, threshold, shape or method.
    """
    if losses.dim() != 2 or boxes.shape != losses.shape + (4, ):
        raise ValueError(f'select_hard_examples_padded: losses must be (B, n) and boxes (B, n, 4), '
                         f'got {tuple(losses.shape)} and {tuple(boxes.shape)}')
    for name, mask in (('labels', labels), ('is_pos', is_pos), ('valid', valid)):
        if mask is not None and mask.shape != losses.shape:
            raise ValueError(f'{name} must have shape {tuple(losses.shape)}, got {tuple(mask.shape)}')
    count, n = losses.shape
    if count:
        _check_inputs(losses[0], boxes[0], num, iou_threshold)
    _check_policy(nonfinite, nonfinite_skip_limit)
    if count == 0:
        return []
    if n == 0 or resolve_method(method, losses.device, n) != 'device':
        return [select_hard_examples(losses[b], boxes[b], num, iou_threshold,
                                     labels[b] if labels is not None else None, nonfinite,
                                     is_pos[b] if is_pos is not None else None, method, nonfinite_skip_limit,
                                     valid[b] if valid is not None else None)
                for b in range(count)]
    if graphs is not None and iou_threshold is not None:  # the rule in a graph, on the given losses
        inputs = {'values': losses.float(), 'boxes': boxes.float()}
        if is_pos is not None:
            inputs['is_pos'] = is_pos
        if labels is not None:
            inputs['labels'] = labels
        return select_hard_examples_front(FrontRows(GIVEN_LOSSES, inputs), num, iou_threshold, labels is not None,
                                          nonfinite, is_pos is not None, nonfinite_skip_limit, valid, graphs, method)
    return _select_padded_on_device(losses, boxes, num, iou_threshold, labels, nonfinite,
                                    is_pos.bool() if is_pos is not None else None, nonfinite_skip_limit,
                                    valid.bool() if valid is not None else None, [n] * count)


#: Values per image in the device method's one read: mined positives, mined, non-finite, non-finite kept,
#: prefix filled, suppressed, finite, candidates, candidates' loss sum, mined loss sum, not converged.
_READ_PER_IMAGE = 11


class DeviceRule:
    """The device method's tensors for padded ``(B, n)`` rows (see :func:`_select_padded_on_device`).

    Nothing here reads the device, and every shape follows from the inputs' shapes and the settings, so
    the whole rule can be captured as a CUDA graph (:mod:`~mmdet_ohem.selection.graph`). Padding (rows
    outside ``valid``) is never mined, never suppresses, is not counted, and ranks after every real
    candidate (stable sort, -inf); what the padding rows hold does not matter.

    Skipped non-finite losses rank last (-inf) in the stable sort, so the finite ones keep the order that
    ranking the finite pool alone gives; they are then excluded through ``valid``. Above the skip limit
    they rank first (+inf) and stay valid, as on the host path; decided on the device, read back with the
    counts.

    Attributes:
        prefix_cut: Whether the suppression matrices cover only a ranked prefix (then ``filled`` says,
            per image, whether it held ``num`` survivors).
        fp: The loss-NMS fixed point (``None`` without loss-NMS).
    """

    def __init__(self, values: Tensor, boxes: Tensor, num: int, iou_threshold: Optional[float],
                 labels: Optional[Tensor], is_pos: Optional[Tensor], skip_limit: float,
                 valid: Optional[Tensor]) -> None:
        self.num, n = num, values.shape[-1]
        finite = values.abs() < math.inf  # isfinite in two operators (NaN compares False)
        if valid is None:  # every row real (no padding): fewer operators
            num_finite = finite.sum(-1)
            self.num_real = num_finite  # (a placeholder in the read: the caller knows the size)
            num_bad = n - num_finite
            keep_bad = num_bad > skip_limit * n
            keep_bad_real = keep_bad[:, None]
        else:  # the rows that take part: valid (padding is not)
            finite = finite & valid
            self.num_real, num_finite = valid.sum(-1), finite.sum(-1)
            num_bad = self.num_real - num_finite
            keep_bad = num_bad > skip_limit * self.num_real
            keep_bad_real = keep_bad[:, None] & valid
        self.num_finite, self.num_bad, self.keep_bad = num_finite, num_bad, keep_bad
        self.order = rank_by_loss(torch.where(finite, values, torch.where(keep_bad_real, math.inf, -math.inf)))
        # gather, not take_along_dim: one operator where take_along_dim dispatches four (indices are >= 0)
        ranked_valid = (finite | keep_bad_real).gather(-1, self.order)
        self.fp: Optional[GreedyFixedPoint] = None
        self.prefix_cut = False
        self.covered = n  # ranked positions the suppression matrices cover (an image's real ones come first)
        if iou_threshold is None:
            self.kept = ranked_valid & (torch.cumsum(ranked_valid, -1) <= num)
            self.supp = self.num_finite  # (a placeholder: nothing is suppressed)
            self.unconverged = None
        else:
            self.covered = device_prefix(n, num)
            self.prefix_cut = self.covered < n
            head = self.order[:, :self.covered]  # the ranked prefix the suppression matrices cover
            ranked_boxes = boxes.float().gather(1, head[..., None].expand(-1, -1, 4))
            ranked_labels = labels.gather(-1, head) if labels is not None else None
            self.fp = GreedyFixedPoint(suppression_matrix(ranked_boxes, iou_threshold, ranked_labels),
                                       ranked_valid[:, :self.covered], num)
            self.from_fixed_point()
        self.ranked_pos = is_pos.gather(-1, self.order) if is_pos is not None else None
        self.loss_sum = torch.where(finite, values, 0.0).sum(-1, dtype=torch.float64)  # padding is not finite
        self.ranked_values = values.gather(-1, self.order)

    def from_fixed_point(self) -> None:
        """Takes the result of :attr:`fp`'s current state."""
        fp = self.fp
        self.kept, self.supp, self.unconverged = _full_length(fp.kept, self.order.shape[-1]), fp.num_suppressed, \
            fp.unconverged

    def readout(self) -> Tuple[Tensor, Tensor]:
        """``(chosen, counts)``: per image the ranked candidates, mined positives first then the other mined
        ones, each part hardest first (``(B, n)`` indices: the first ``num_kept`` of a row are its
        selection); and the one read, :data:`_READ_PER_IMAGE` float64 values per image."""
        kept = self.kept
        num_kept = kept.sum(-1)
        count = num_kept.shape[0]
        if self.ranked_pos is not None:
            mined_pos = kept & self.ranked_pos
            # 2: mined positive, 1: mined negative, 0: not mined
            group, num_mined_pos = torch.where(mined_pos, 2, kept), mined_pos.sum(-1)
        else:  # no split: the positives' count is not used
            group, num_mined_pos = kept, num_kept
        filled = self.fp.filled if self.prefix_cut else num_kept  # (a placeholder: no prefix, nothing to fill)
        unconverged = self.unconverged.expand(count) if self.unconverged is not None else num_kept
        # Per image, in one float64 tensor (the loss sums set its dtype; counts are exact there, whatever
        # the losses' dtype): see _READ_PER_IMAGE.
        counts = torch.stack([num_mined_pos, num_kept, self.num_bad, self.keep_bad, filled, self.supp,
                              self.num_finite, self.num_real, self.loss_sum,
                              torch.where(kept, self.ranked_values, 0.0).sum(-1, dtype=torch.float64),
                              unconverged], dim=1).flatten()
        chosen = self.order.gather(-1, torch.sort(group, dim=-1, descending=True, stable=True).indices)
        return chosen, counts


class RankingFront(Protocol):
    """Computes per-row ranking losses from named per-row tensors (each ``(R, ...)``), with no host read and
    shapes fixed by the inputs' (so that a CUDA graph can capture it together with the rule); ``key`` names
    what it bakes in beyond the inputs (a graph is captured per key)."""

    key: Hashable

    def __call__(self, rows: Dict[str, Tensor]) -> Tensor:
        ...


class FrontRows:
    """``(B, n)`` rows whose ranking losses are computed from ``inputs`` by ``front`` (e.g. a RoI head's
    targets and losses from its read-only outputs): :func:`select_hard_examples_front` runs both in one CUDA
    graph, and computes the losses eagerly only where it needs them outside it.

    Args:
        front: See :class:`RankingFront`.
        inputs: Named ``(B, n, ...)`` tensors for ``front``; ``boxes`` ``(B, n, 4)`` are also the rule's boxes,
            and ``is_pos`` / ``labels`` its positives / per-class labels where it takes them.
    """

    def __init__(self, front: RankingFront, inputs: Dict[str, Tensor]) -> None:
        if 'boxes' not in inputs:
            raise ValueError(f'FrontRows: inputs must hold boxes, got {sorted(inputs)}')
        self.front, self.inputs = front, inputs
        self._losses: Optional[Tensor] = None

    @property
    def shape(self) -> torch.Size:
        return self.inputs['boxes'].shape[:2]

    @staticmethod
    def evaluate(front: RankingFront, inputs: Dict[str, Tensor]) -> Tensor:
        """``(B, n)``: ``front`` on ``(B, n, ...)`` inputs (flattened to rows and back)."""
        count, n = inputs['boxes'].shape[:2]
        return front({k: t.flatten(0, 1) for k, t in inputs.items()}).view(count, n)

    def losses(self) -> Tensor:
        """``(B, n)`` ranking losses, computed eagerly (once)."""
        if self._losses is None:
            self._losses = self.evaluate(self.front, self.inputs)
        return self._losses


class GivenLosses:
    """The :class:`RankingFront` of rows whose ranking losses are given (input ``values``): how
    :func:`select_hard_examples_padded` runs on a CUDA graph."""

    key = 'GivenLosses'

    def __call__(self, rows: Dict[str, Tensor]) -> Tensor:
        return rows['values']


GIVEN_LOSSES = GivenLosses()


def runs_on_device(device: torch.device, n: int, method: str = 'auto') -> bool:
    """Whether rows of ``n`` candidates on ``device`` are selected by the device rule (CUDA, for ``'auto'``),
    the only path :class:`~mmdet_ohem.selection.graph.SelectionGraphs` can serve."""
    return resolve_method(method, device, n) == 'device'


def select_hard_examples_front(rows: FrontRows,
                               num: int,
                               iou_threshold: Optional[float] = 0.7,
                               per_class: bool = False,
                               nonfinite: NonFinitePolicy = 'skip',
                               with_pos: bool = True,
                               nonfinite_skip_limit: float = NONFINITE_SKIP_LIMIT,
                               valid: Optional[Tensor] = None,
                               graphs: Optional['SelectionGraphs'] = None,
                               method: str = 'auto') -> List[Selection]:
    """:func:`select_hard_examples_padded` on :class:`FrontRows`: with ``graphs`` (CUDA, loss-NMS on), the
    ranking losses and the rule run in one captured CUDA graph; else, and where the graph cannot serve, the
    losses are computed eagerly and the rows selected by :func:`select_hard_examples_padded`. The same result
    either way.

    Args:
        per_class: Per-class loss-NMS on ``rows.inputs['labels']``.
        with_pos: Positives (``rows.inputs['is_pos']``) first in each result.
        Others: As in :func:`select_hard_examples_padded`.
    """
    labels = rows.inputs['labels'] if per_class else None
    is_pos = rows.inputs['is_pos'].bool() if with_pos else None
    if valid is not None:
        valid = valid.bool()
    count, n = rows.shape
    if graphs is not None and iou_threshold is not None and count and n \
            and runs_on_device(rows.inputs['boxes'].device, n, method):
        _check_policy(nonfinite, nonfinite_skip_limit)
        read = graphs.run(rows, num, iou_threshold, per_class, with_pos, nonfinite_skip_limit, valid)
        if read is not None:
            return _selections_from_read(read[0], read[1], device_prefix(n, num), [n] * count, num, iou_threshold,
                                         nonfinite, nonfinite_skip_limit, valid is None, with_pos,
                                         lambda: (rows.losses(), rows.inputs['boxes'], labels, is_pos, valid))
    return select_hard_examples_padded(rows.losses(), rows.inputs['boxes'], num, iou_threshold, labels, nonfinite,
                                       is_pos, method, nonfinite_skip_limit, valid)


def _select_padded_on_device(values: Tensor, boxes: Tensor, num: int, iou_threshold: Optional[float],
                             labels: Optional[Tensor], nonfinite: NonFinitePolicy, is_pos: Optional[Tensor],
                             skip_limit: float, valid: Optional[Tensor], sizes: Sequence[int]) -> List[Selection]:
    """Paper mode for ``B`` images padded to ``(B, n)`` (image ``b``'s rows are the first ``sizes[b]`` of
    row ``b``) with one host read, the same result as the host path per image (see the module docstring
    and :class:`DeviceRule`); the rule iterates on where the blind fixed-point steps did not converge."""
    rule = DeviceRule(values, boxes, num, iou_threshold, labels, is_pos, skip_limit, valid)
    while True:
        chosen, counts = rule.readout()
        values_read = counts.tolist()  # the one host read, for all images
        if rule.fp is None or not values_read[-1]:
            break
        rule.fp.resolve()  # rare: a suppression chain longer than the blind steps
        rule.from_fixed_point()
    return _selections_from_read(chosen, values_read, rule.covered, sizes, num, iou_threshold, nonfinite, skip_limit,
                                 valid is None, is_pos is not None, lambda: (values, boxes, labels, is_pos, valid))


def _selections_from_read(chosen: Tensor, values_read: List[float], covered: int, sizes: Sequence[int], num: int,
                          iou_threshold: Optional[float], nonfinite: NonFinitePolicy, skip_limit: float,
                          known_size: bool, with_pos: bool, rows: Callable[[], tuple]) -> List[Selection]:
    """One :class:`Selection` per image from the device rule's ``chosen`` and read values. ``rows()`` gives
    ``(values, boxes, labels, is_pos, valid)`` (``(B, n)``) for the rare image that needs them: non-finite
    losses under ``nonfinite='raise'``, or a ranked prefix with too few survivors (host method)."""
    out = []
    for b, row in enumerate(chosen.unbind(0)):
        num_p, num_kept, bad, kept_bad, enough, num_supp, num_finite, num_cands, cand_loss, mined_loss, _ = \
            values_read[_READ_PER_IMAGE * b:_READ_PER_IMAGE * (b + 1)]
        size = sizes[b]
        if bad and nonfinite == 'raise':
            values, _, _, _, valid = rows()
            bad_rows = values[b, :size] if valid is None else values[b, :size][valid[b, :size]]
            _raise_nonfinite(bad_rows, torch.isfinite(bad_rows))
        if size > covered and not enough:
            # rare: this image's ranked prefix holds fewer survivors than the budget
            values, boxes, labels, is_pos, valid = rows()
            out.append(select_hard_examples(values[b, :size], boxes[b, :size], num, iou_threshold,
                                            labels[b, :size] if labels is not None else None, nonfinite,
                                            is_pos[b, :size] if is_pos is not None else None, 'host', skip_limit,
                                            valid[b, :size] if valid is not None else None))
            continue
        num_p = int(num_p)
        out.append(Selection(row[:int(num_kept)], int(num_supp) if iou_threshold is not None else 0, int(bad),
                             num_p if with_pos else None, bool(kept_bad), mined_loss, cand_loss,
                             int(num_finite), size if known_size else int(num_cands)))
    return out


def select_hard_examples_ratio(losses: Tensor,
                               boxes: Tensor,
                               is_pos: Tensor,
                               num: int,
                               pos_fraction: float,
                               neg_pos_ub: int = -1,
                               iou_threshold: Optional[float] = None,
                               labels: Optional[Tensor] = None,
                               nonfinite: NonFinitePolicy = 'skip',
                               nonfinite_skip_limit: float = NONFINITE_SKIP_LIMIT) -> Selection:
    """Ratio-keeping OHEM (mmdet's flavour), for ablations.

    Positives and negatives are mined from separate pools: at most ``int(num * pos_fraction)``
    positives, then ``num - #pos`` negatives (capped at ``neg_pos_ub * max(1, #pos)`` when
    ``neg_pos_ub >= 0``). As in mmdet's ``BaseSampler``/``OHEMSampler``, a pool no larger than its
    quota is taken whole; a larger one is ranked by loss (after loss-NMS, if enabled).

    Args:
        losses: ``(n,)`` ranking losses.
        boxes: ``(n, 4)`` boxes.
        is_pos: ``(n,)`` bool, True for foreground candidates.
        num: Total budget.
        pos_fraction: Foreground quota as a fraction of ``num``, in ``[0, 1]``.
        neg_pos_ub: Upper bound of negatives per positive; ``-1`` means no bound.
        iou_threshold: Loss-NMS threshold applied within each pool; ``None`` disables it.
        labels: Optional labels for per-class loss-NMS.
        nonfinite: See :func:`select_hard_examples`.
        nonfinite_skip_limit: See :data:`NONFINITE_SKIP_LIMIT` (the share is over all candidates).

    Returns:
        :class:`Selection` with positives first, then negatives.
    """
    _check_inputs(losses, boxes, num, iou_threshold)
    if not 0.0 <= float(pos_fraction) <= 1.0:
        raise ValueError(f'pos_fraction must be in [0, 1], got {pos_fraction!r}')
    if is_pos.shape != losses.shape:
        raise ValueError(f'is_pos must have shape {tuple(losses.shape)}, got {tuple(is_pos.shape)}')
    is_pos = is_pos.bool()
    ranking, finite, keep_bad = _nonfinite_plan(losses, nonfinite, nonfinite_skip_limit)
    usable = is_pos.new_ones(is_pos.shape) if keep_bad else finite
    pos_pool = torch.nonzero(is_pos & usable).flatten()
    neg_pool = torch.nonzero(~is_pos & usable).flatten()

    def take(pool: Tensor, quota: int) -> tuple[Tensor, int]:
        if iou_threshold is None and pool.numel() <= quota:
            return pool, 0
        return _mine_pool(ranking, boxes, pool, quota, iou_threshold, labels)

    pos, supp_pos = take(pos_pool, int(num * pos_fraction))
    num_neg = num - pos.numel()
    if neg_pos_ub >= 0:
        num_neg = min(num_neg, int(neg_pos_ub * max(1, pos.numel())))
    neg, supp_neg = take(neg_pool, num_neg)
    return Selection(torch.cat([pos, neg]), _count(supp_pos + supp_neg, losses), _count((~finite).sum(), losses),
                     pos.numel(), keep_bad)
