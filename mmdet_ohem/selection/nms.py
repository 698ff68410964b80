"""Loss-NMS: greedy de-duplication of RoIs ranked by their loss.

Pure PyTorch, no mmdet import. The rule is the paper's (Shrivastava et al., 2016, Sec. 4.1): take the
highest-loss RoI, drop every lower-loss RoI whose IoU with it exceeds the threshold, repeat. OHEM only
needs the first ``max_keep`` survivors (the per-image RoI budget, e.g. 64), and both implementations
return exactly full greedy NMS truncated to ``max_keep``:

* ``'host'`` (the reference, and the CPU default): walks the ranked list in blocks and stops as soon as
  the budget is full. Each block is checked against the boxes already kept with one vectorised IoU, and
  within the block the greedy order is resolved by a Python loop on the block's IoU matrix, read back to
  the host. O((kept + block) * block) per block; on a GPU every block is a host synchronisation.
* ``'device'`` (the GPU default): no host loop and no host read. The suppression matrix of the ranked
  list (``S[i, j]``: ``i`` ranks before ``j`` and their IoU exceeds the threshold) is built on the
  device, and greedy NMS is computed as the fixed point of ``keep = valid & ~any_i(keep[i] & S[i])``
  (the Cluster-NMS iteration, Bolya et al. 2020), computed as one batched matrix product on 0/1 values
  per step (:class:`GreedyFixedPoint`). Its fixed point is unique and equals greedy NMS,
  because ``keep[j]`` depends only on ``keep[i < j]``; after ``t`` iterations every RoI whose chain of
  suppression decisions is shorter than ``t`` is final. The iteration runs a fixed number of steps
  without reading anything back, and :class:`GreedyFixedPoint` reports (as a device flag) whether the
  prefix that decides the first ``max_keep`` survivors has converged; callers read that flag together
  with whatever else they read anyway, and iterate on in the rare case it has not.

  **Ranked prefix.** For the same reason (decisions depend only on higher-ranked boxes) the first
  ``max_keep`` survivors of the whole list are those of any ranked prefix that holds ``max_keep``
  survivors. The matrix therefore covers only the first :func:`device_prefix` candidates (all of them
  for RoI lists; the 256 hardest of ~20,000 RPN anchors need a 4,096-box prefix, not 20,000 x 20,000);
  the rare prefix with too few survivors is reported by a device flag, and the caller then takes the
  host method for that list.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Optional

import torch
from torch import Tensor

__all__ = ['NMSResult', 'GreedyFixedPoint', 'blind_steps', 'box_iou', 'device_prefix', 'greedy_loss_nms',
           'rank_by_loss', 'resolve_method', 'suppression_matrix']

NMS_METHODS = ('auto', 'host', 'device')
# Device method: the (m, m) suppression matrix of a ranked prefix of m = device_prefix(n, budget) boxes
# (at least DEVICE_MIN_PREFIX, or PREFIX_PER_KEPT per box to keep, at most DEVICE_MAX_BOXES: a 64 MB bool
# matrix) is built in row chunks of about IOU_CHUNK_ELEMENTS IoU values (bounds the float temporaries to
# ~16 MB each). None of them changes a result.
IOU_CHUNK_ELEMENTS = 1 << 22
DEVICE_MAX_BOXES = 8192
DEVICE_MIN_PREFIX = 2048
PREFIX_PER_KEPT = 16
# Blind iterations before the one read: greedy NMS over proposal-like boxes at IoU 0.7 (2,000 boxes, 30
# objects) converged within 2 steps at budget 64 and within 3-5 at budget 512 in 30 of 30 trials, so
# SHORT_CHAIN_STEPS for budgets up to SHORT_CHAIN_BUDGET (the paper's 64 RoIs per image), else
# FIXED_POINT_STEPS. A longer chain costs one more read and FIXED_POINT_STEPS more steps.
FIXED_POINT_STEPS = 6
SHORT_CHAIN_STEPS = 4
SHORT_CHAIN_BUDGET = 128


@dataclass(frozen=True)
class NMSResult:
    """Outcome of a loss-NMS pass.

    Attributes:
        keep: Indices into the input, hardest (highest loss) first.
        num_suppressed: How many candidates were examined and removed as duplicates before the budget
            was filled (candidates never examined because the budget was already full are not counted);
            a 0-dim int64 tensor on the boxes' device (reading it is the caller's choice).
    """

    keep: Tensor
    num_suppressed: Tensor


def _areas(boxes: Tensor) -> Tensor:
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(boxes1: Tensor, boxes2: Tensor, areas1: Optional[Tensor] = None,
            areas2: Optional[Tensor] = None) -> Tensor:
    """Pairwise IoU of axis-aligned boxes in ``(x1, y1, x2, y2)`` format.

    Degenerate boxes (zero or negative width/height) have zero area and an IoU of 0 with everything,
    including themselves, so they never suppress anything.

    Written with few kernels (x and y at once; the areas once when ``boxes2 is boxes1``, or not at all
    when the caller has them), since on a GPU each is a launch; each element gets the same float
    operations either way.

    Args:
        boxes1: ``(..., n, 4)`` boxes.
        boxes2: ``(..., m, 4)`` boxes (the same leading batch dimensions, if any).
        areas1, areas2: Optional ``(..., n)`` / ``(..., m)`` areas of the boxes, as this function computes
            them (row chunks of one matrix share the columns' areas).

    Returns:
        ``(..., n, m)`` IoU matrix in the dtype of ``boxes1``.
    """
    area1 = _areas(boxes1) if areas1 is None else areas1
    if areas2 is not None:
        area2 = areas2
    else:
        area2 = area1 if boxes2 is boxes1 else _areas(boxes2)
    inter_wh = (torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
                - torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def rank_by_loss(losses: Tensor) -> Tensor:
    """Indices that sort ``losses`` from highest to lowest; ties keep input order (stable)."""
    return torch.sort(losses, descending=True, stable=True).indices


def suppression_matrix(boxes: Tensor, iou_threshold: float, labels: Optional[Tensor] = None) -> Tensor:
    """``S[i, j]``: box ``i`` comes before box ``j`` and would suppress it (IoU > threshold, same label).

    The IoU values are :func:`box_iou`'s, bit for bit (the same elementwise operations, row chunk by row
    chunk), so both loss-NMS methods make the same decisions.

    Args:
        boxes: ``(..., n, 4)`` boxes in ranked order (a leading batch dimension: one matrix per list).
        iou_threshold: Suppression threshold.
        labels: Optional ``(..., n)`` labels in ranked order; boxes of different labels never suppress.

    Returns:
        ``(..., n, n)`` bool tensor, strictly upper triangular.
    """
    n = boxes.shape[-2]
    lists = boxes[..., 0, 0].numel() if n else 1
    chunk = max(1, IOU_CHUNK_ELEMENTS // max(n * lists, 1))
    if n <= chunk:  # one chunk, the common case: box_iou computes the areas once
        over = box_iou(boxes, boxes) > iou_threshold
    else:  # row chunks; the areas once for all of them
        area = _areas(boxes)
        over = torch.cat([box_iou(boxes[..., r:r + chunk, :], boxes, area[..., r:r + chunk], area) > iou_threshold
                          for r in range(0, n, chunk)], dim=-2)
    if labels is not None:
        over &= labels[..., :, None] == labels[..., None, :]
    return torch.triu(over, diagonal=1)


class GreedyFixedPoint:
    """Greedy NMS over a ranked list as a fixed-point iteration on the device (no host reads).

    ``valid`` marks the ranked candidates that take part (e.g. finite losses); the others are never
    kept, never suppress and are not counted. All attributes are device tensors. Leading batch
    dimensions run independent lists at once (one image each): ``over`` ``(B, n, n)`` and ``valid``
    ``(B, n)``; :attr:`converged` is then one flag for all of them.

    One step is ``keep[j] = valid[j] and no kept i suppresses j``, computed as one batched matrix product
    ``hits = invalid + keep @ over`` on 0/1 values and ``keep = (hits == 0)``: two operators per step (on a
    GPU each operator is a launch). The sums are exact (non-negative integers; a positive one never rounds
    to zero), so this is the boolean rule exactly; the matrix is float16 on CUDA (half the bytes to read)
    and float32 elsewhere.

    Args:
        over: ``(..., n, n)`` suppression matrix from :func:`suppression_matrix`.
        valid: ``(..., n)`` bool.
        budget: Keep at most this many (the first ``budget`` survivors of full greedy NMS).
        steps: Iterations to run now (more with :meth:`advance`); default :func:`blind_steps` of ``budget``.
    """

    def __init__(self, over: Tensor, valid: Tensor, budget: int, steps: Optional[int] = None) -> None:
        self.valid, self.budget = valid, int(budget)
        n, lists = valid.shape[-1], math.prod(valid.shape[:-1])  # (lists explicit: n may be 0)
        dtype = torch.float16 if over.is_cuda else torch.float32
        self._over = over.reshape(lists, n, n).to(dtype)
        keep = valid.reshape(lists, 1, n).to(dtype)
        self._invalid = 1 - keep
        self._prev, self._cur = keep, self._step(keep)
        self._rank: Optional[Tensor] = None
        self._cur_bool: Optional[Tensor] = None
        self._decided_now: Optional[Tensor] = None
        self.advance((blind_steps(budget) if steps is None else steps) - 1)

    def _step(self, keep: Tensor) -> Tensor:
        return torch.baddbmm(self._invalid, keep, self._over).eq_(0)

    def advance(self, steps: int) -> None:
        """Runs ``steps`` more iterations."""
        for _ in range(max(0, steps)):
            self._prev, self._cur = self._cur, self._step(self._cur)
            self._rank = self._cur_bool = self._decided_now = None

    @property
    def size(self) -> int:
        """``n``, the length of the ranked list(s)."""
        return self.valid.shape[-1]

    @property
    def cur(self) -> Tensor:
        """``(..., n)`` bool: the current state (every survivor of the iteration so far)."""
        if self._cur_bool is None:
            self._cur_bool = self._cur.reshape(self.valid.shape) > 0
        return self._cur_bool

    @property
    def _survivor_rank(self) -> Tensor:
        # How many survivors precede each ranked position, inclusive (computed once per state; exact
        # integers in float32).
        if self._rank is None:
            self._rank = torch.cumsum(self._cur.reshape(self.valid.shape), -1, dtype=torch.float32)
        return self._rank

    @property
    def _decided(self) -> Tensor:
        # Ranked positions up to and including the budget-th survivor (all of them with fewer survivors):
        # the prefix whose decisions make up the result. Computed once per state.
        if self._decided_now is None:
            self._decided_now = (self._survivor_rank - self._cur.reshape(self.valid.shape)) < self.budget
        return self._decided_now

    @property
    def unconverged(self) -> Tensor:
        """0-dim bool: the decided prefix is not yet a fixed point (``~converged``, one operator fewer)."""
        return ((self._cur != self._prev).reshape(self.valid.shape) & self._decided).any()

    @property
    def converged(self) -> Tensor:
        """0-dim bool: the decided prefix is a fixed point, hence exactly greedy NMS."""
        return ~self.unconverged

    @property
    def kept(self) -> Tensor:
        """``(..., n)`` bool over the ranked list: the first ``budget`` survivors."""
        return (self._survivor_rank <= self.budget) & self.cur

    @property
    def filled(self) -> Tensor:
        """bool, one per list: the list holds at least ``budget`` survivors (so a ranked prefix's first
        ``budget`` survivors are those of the whole list)."""
        if not self.size:
            return self.valid.sum(-1) >= self.budget
        return self._survivor_rank[..., -1] >= self.budget

    @property
    def num_suppressed(self) -> Tensor:
        """int64, one per list (0-dim for one list): valid candidates removed before the budget was filled."""
        # valid & ~cur in one operator: the survivors are valid rows (an invalid row is never kept)
        return ((self.valid ^ self.cur) & self._decided).sum(-1)

    def resolve(self, steps: int = FIXED_POINT_STEPS) -> 'GreedyFixedPoint':
        """Iterates until :attr:`converged` (reads the flag back once per ``steps`` iterations)."""
        while not bool(self.converged):
            self.advance(steps)
        return self


def _greedy_host(boxes: Tensor, order: Tensor, iou_threshold: float, budget: int, labels: Optional[Tensor],
                 block_size: int, max_block: int) -> NMSResult:
    """The reference: blocks of the ranked list, greedy order resolved by a host loop per block."""
    n = order.shape[0]
    dev = boxes.device
    sorted_boxes = boxes[order].float()
    sorted_labels = labels[order] if labels is not None else None
    kept: list[int] = []  # positions in the sorted order
    num_suppressed = 0
    pos = 0
    while pos < n and len(kept) < budget:
        # At least block_size, twice the missing budget when that is larger (few blocks for small
        # budgets), but never more than max_block: an (m, m) IoU block with its (m, m, 2) temporaries
        # grows quadratically, and full NMS (max_keep=None) on 10k boxes would otherwise build one
        # 10k x 10k block (GBs of temporaries, seconds on CPU).
        size = min(n - pos, max(block_size, min(2 * (budget - len(kept)), max_block)))
        blk = sorted_boxes[pos:pos + size]
        alive = torch.ones(size, dtype=torch.bool, device=dev)
        if kept:
            kept_idx = torch.as_tensor(kept, device=dev)
            over = box_iou(blk, sorted_boxes[kept_idx]) > iou_threshold
            if sorted_labels is not None:
                over &= sorted_labels[pos:pos + size, None] == sorted_labels[kept_idx][None, :]
            alive &= ~over.any(dim=1)
        over_self = box_iou(blk, blk) > iou_threshold
        if sorted_labels is not None:
            blk_lab = sorted_labels[pos:pos + size]
            over_self &= blk_lab[:, None] == blk_lab[None, :]
        alive_np = alive.cpu().numpy().copy()
        over_np = over_self.cpu().numpy()
        for j in range(size):
            if not alive_np[j]:
                num_suppressed += 1
                continue
            kept.append(pos + j)
            if len(kept) == budget:
                break
            alive_np[j + 1:] &= ~over_np[j, j + 1:]
        pos += size
    keep = order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]
    return NMSResult(keep, torch.tensor(num_suppressed, device=dev))


def blind_steps(budget: int) -> int:
    """Fixed-point steps run before the first convergence read, for keeping at most ``budget``."""
    return SHORT_CHAIN_STEPS if budget <= SHORT_CHAIN_BUDGET else FIXED_POINT_STEPS


def device_prefix(n: int, budget: int) -> int:
    """How many of ``n`` ranked candidates the device method's suppression matrix covers, for keeping at
    most ``budget``: all of them up to :data:`DEVICE_MIN_PREFIX`, else ``PREFIX_PER_KEPT * budget``
    (at least :data:`DEVICE_MIN_PREFIX`), at most :data:`DEVICE_MAX_BOXES`."""
    return min(n, max(DEVICE_MIN_PREFIX, PREFIX_PER_KEPT * budget), DEVICE_MAX_BOXES)


def resolve_method(method: str, device: torch.device, n: int) -> str:
    """``'host'`` or ``'device'`` for ``method`` in :data:`NMS_METHODS` (``'auto'``: device on CUDA, for
    any ``n``: beyond :func:`device_prefix` the device method falls back to the host one by itself).

    Raises:
        ValueError: On an unknown method.
    """
    if method not in NMS_METHODS:
        raise ValueError(f'loss-NMS method must be one of {NMS_METHODS}, got {method!r}')
    if method == 'auto':
        return 'device' if device.type == 'cuda' else 'host'
    return method


def greedy_loss_nms(boxes: Tensor,
                    losses: Tensor,
                    iou_threshold: float,
                    max_keep: Optional[int] = None,
                    labels: Optional[Tensor] = None,
                    block_size: int = 256,
                    max_block: int = 1024,
                    method: str = 'auto') -> NMSResult:
    """Greedy NMS on loss, highest loss first, stopping once ``max_keep`` boxes are kept.

    A box is suppressed when its IoU with an already kept, higher-ranked box is strictly greater than
    ``iou_threshold``. With ``labels`` given, only boxes of the same label suppress each other (the
    authors' Caffe code ran loss-NMS per class).

    Args:
        boxes: ``(n, 4)`` candidate boxes, ``(x1, y1, x2, y2)``.
        losses: ``(n,)`` ranking losses; higher is harder. Must be finite (callers filter first).
        iou_threshold: Suppression threshold in ``(0, 1]``; 1.0 never suppresses.
        max_keep: Stop once this many boxes are kept. ``None`` keeps every survivor.
        labels: Optional ``(n,)`` integer labels for per-class NMS.
        block_size: Host method: minimum number of ranked candidates examined per vectorised step.
        max_block: Host method: upper bound of the step size used to fill a large missing budget (the
            result does not depend on it, only time and memory do).
        method: ``'host'``, ``'device'`` or ``'auto'`` (device for CUDA tensors, else host). Both return
            the same result (the device method runs on the ranked prefix of :func:`device_prefix` boxes and
            takes the host method when that prefix holds fewer than ``max_keep`` survivors).

    Returns:
        :class:`NMSResult` with the kept indices (hardest first) and the suppression count.

    Raises:
        ValueError: On mismatched shapes, a threshold outside ``(0, 1]`` or an unknown method.
    """
    n = losses.shape[0]
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or boxes.shape[0] != n or losses.dim() != 1:
        raise ValueError(f'greedy_loss_nms: boxes must be (n, 4) and losses (n,), '
                         f'got boxes {tuple(boxes.shape)} and losses {tuple(losses.shape)}')
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f'greedy_loss_nms: iou_threshold must be in (0, 1], got {iou_threshold!r}')
    if labels is not None and labels.shape != (n, ):
        raise ValueError(f'greedy_loss_nms: labels must be ({n},), got {tuple(labels.shape)}')
    method = resolve_method(method, boxes.device, n)
    budget = n if max_keep is None else max(0, min(int(max_keep), n))
    order = rank_by_loss(losses)
    if budget == 0 or n == 0:
        return NMSResult(order[:0], torch.zeros((), dtype=torch.long, device=boxes.device))
    if method == 'host':
        return _greedy_host(boxes, order, iou_threshold, budget, labels, block_size, max_block)
    m = device_prefix(n, budget)
    head = order[:m]
    valid = torch.ones(m, dtype=torch.bool, device=boxes.device)
    fp = GreedyFixedPoint(suppression_matrix(boxes[head].float(), iou_threshold,
                                             labels[head] if labels is not None else None),
                          valid, budget).resolve()
    if m < n and not bool(fp.filled):  # the prefix holds fewer than `budget` survivors
        return _greedy_host(boxes, order, iou_threshold, budget, labels, block_size, max_block)
    return NMSResult(head[fp.kept], fp.num_suppressed)
