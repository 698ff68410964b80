"""``OHEMSampler``: the paper's Online Hard Example Mining as an mmdet 3.x sampler.

Thin adapter: it gathers one image's candidates as mmdet's ``BaseSampler`` does, asks the
read-only pass (:mod:`mmdet_ohem.readonly_pass`) for their losses, and hands those to the pure selection rule
(:mod:`mmdet_ohem.selection`). The result is a normal ``SamplingResult``, so the RoI head then runs its
usual forward and backward on the mined RoIs alone.

Registered as ``OHEMSampler`` in mmdet's ``TASK_UTILS`` (replacing mmdet's class of that name, which
stays available as ``MMDetOHEMSampler``).

All images of a batch at once: mmdet's RoI heads call ``sample()`` once per image and only then read the
results. For heads on the read-only pass's fast path, ``sample()`` gathers the image's candidates and
returns a :class:`DeferredSamplingResult`; the first read of any pending result mines every pending
image together (one read-only forward, one loss computation, one batched selection with one host read).
The results are those of mining each image alone.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.models.task_modules.samplers import OHEMSampler as _MMDetOHEMSampler
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import get_box_tensor
from mmengine.logging import HistoryBuffer, MessageHub, MMLogger
from torch import Tensor

from ..readonly_pass import READONLY_BATCH_ROIS, READONLY_PRECISIONS, BatchRows, RoIHeadAdapter
from ..selection import (FrontRows, Selection, SelectionGraphs, invalid_boxes, select_hard_examples,
                         select_hard_examples_front, select_hard_examples_padded, select_hard_examples_ratio)
from ..selection.select import NONFINITE_SKIP_LIMIT, pad_rows, runs_on_device
from .candidates import CandidateSampler
from .checks import check_mining_settings
from .loss_nms import LossNMS

AUTOCAST_DTYPES = READONLY_PRECISIONS  # former name


Number = Union[int, float, Tensor]


@dataclass
class MiningStats:
    """What one ``sample()`` call did, for logging and tests.

    Counts known from shapes are Python ints. The others are Python numbers where the selection's device
    method read them back with the result sizes (no read of their own), else 0-dim tensors on the
    candidates' device, never read back by the sampler (no host synchronisation): ``int()``/``float()``
    them outside the training hot path. The logger reads those once per logged iteration.

    Attributes:
        candidates: Candidates considered (positives + negatives; ignored RoIs excluded). int.
        suppressed: Candidates removed by loss-NMS while filling the budget.
        nonfinite: Candidates whose read-only loss was NaN/inf (never mined).
        mined: RoIs returned. int.
        mined_fg: Foreground RoIs among them.
        mined_loss: Sum of the ranking loss over the mined RoIs.
        cand_loss: Sum of the ranking loss over all finite candidates.
        cand_finite: Number of finite candidates (denominator of ``cand_loss``).
        bad_boxes: Candidates dropped before the read-only pass because their box is unusable.
    """

    candidates: int = 0
    suppressed: Number = 0
    nonfinite: Number = 0
    mined: int = 0
    mined_fg: Number = 0
    mined_loss: Number = 0.0
    cand_loss: Number = 0.0
    cand_finite: Number = 0
    bad_boxes: Number = 0

    def __iadd__(self, other: 'MiningStats') -> 'MiningStats':
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


# Logged per iteration, from the iteration's summed MiningStats `t` over `n` images: key suffix -> value.
# Keys have no ``loss`` in their name on purpose: mmengine would otherwise smooth them over its window.
LOGGED_STATS: Dict[str, Callable[[MiningStats, int], float]] = {
    'cands': lambda t, n: t.candidates / n,
    'nms_supp': lambda t, n: t.suppressed / n,
    'fg_share': lambda t, n: t.mined_fg / max(t.mined, 1),
    'mined_rl': lambda t, n: t.mined_loss / max(t.mined, 1),
    'cand_rl': lambda t, n: t.cand_loss / max(t.cand_finite, 1),
    'nonfinite': lambda t, n: t.nonfinite,
    'badbox': lambda t, n: t.bad_boxes,
}
STATS_KEY_PREFIX = 'train/ohem'  # every mining statistic's MessageHub key starts with this


def _drop_restored(hub: MessageHub) -> None:
    """Removes mining statistics that a checkpoint restored into ``hub``.

    The statistics describe one iteration and are not resumable state: the logger writes its buffers
    into ``hub.log_scalars`` without registering them as resumable, so checkpoints do not carry them and
    a run resumed with another sampler logs none. Checkpoints written before that (mmdet_ohem 0.1)
    carry them; they are dropped here, at the logger's first push.
    """
    resumed = getattr(hub, '_resumed_keys', {})  # mmengine has no public way to forget a key
    for key in [k for k in resumed if k.startswith(STATS_KEY_PREFIX)]:
        resumed.pop(key)
        hub.log_scalars.pop(key, None)


class _Flushing:
    """Data descriptor for ``HistoryBuffer``'s arrays: reading one first flushes the owner's pending values."""

    def __init__(self, slot: str) -> None:
        self.slot = slot

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        obj._owner.flush()
        return obj.__dict__[self.slot]

    def __set__(self, obj: Any, value: np.ndarray) -> None:
        obj.__dict__[self.slot] = value


class _DeviceHistory(HistoryBuffer):
    """An mmengine ``HistoryBuffer`` whose newest values may still be on the device.

    Every read of the history (``current()``, ``mean()``, ``data``, statistics, pickling) first asks the
    owning :class:`_IterationStatsLogger` to read back its pending iterations, in one transfer. Copies
    (``MessageHub.state_dict``) are plain ``HistoryBuffer`` objects.
    """

    def __init__(self, owner: '_IterationStatsLogger', base: Optional[HistoryBuffer] = None) -> None:
        self._owner = owner
        log, count = base.data if base is not None else ([], [])
        super().__init__(list(log), list(count), base.max_length if base is not None else 1000000)

    _log_history = _Flushing('_log')
    _count_history = _Flushing('_count')

    def put(self, value: float, replace_last: bool) -> None:
        """Appends ``value`` (or replaces the newest one) without triggering a flush."""
        log, count = self.__dict__['_log'], self.__dict__['_count']
        if replace_last and len(log):
            log, count = log.copy(), count
            log[-1] = value
        else:
            log, count = np.append(log, value)[-self.max_length:], np.append(count, 1)[-self.max_length:]
        self.__dict__['_log'], self.__dict__['_count'] = log, count

    def plain(self) -> HistoryBuffer:
        """A plain ``HistoryBuffer`` with the same (read-back) history."""
        return HistoryBuffer(list(self._log_history), list(self._count_history), self.max_length)

    def __deepcopy__(self, memo: dict) -> HistoryBuffer:
        return self.plain()

    def __reduce__(self):
        return HistoryBuffer, (list(self._log_history), list(self._count_history), self.max_length)


@dataclass
class _IterationRecord:
    it: Any
    images: int = 0
    total: MiningStats = field(default_factory=MiningStats)
    published: bool = False  # already in the history (a later flush replaces that entry)
    dirty: bool = True


class _IterationStatsLogger:
    """Publishes per-iteration mining statistics to mmengine's ``MessageHub``, read back lazily.

    ``sample()`` runs once per image. Within one training iteration (read from the hub's ``iter`` info,
    which mmengine's ``RuntimeInfoHook`` sets) the images' :class:`MiningStats` are summed, on the device
    where they live. The hub holds a :class:`_DeviceHistory` per key, so nothing is read back until
    someone reads a key (mmengine's ``LogProcessor`` at each logging interval); then every pending
    iteration is read back in one transfer, each becoming one history entry. At most ``max_pending``
    iterations wait (bounds the memory without a reader).
    """

    def __init__(self, prefix: str, max_pending: int = 100,
                 stats: Optional[Dict[str, Callable[[MiningStats, int], float]]] = None) -> None:
        self.prefix = prefix
        self.stats = LOGGED_STATS if stats is None else stats
        self.max_pending = max_pending
        self._records: List[_IterationRecord] = []
        self._hub: Any = None
        self._buffers: Dict[str, _DeviceHistory] = {}

    def _install(self, hub: MessageHub) -> None:
        scalars = hub.log_scalars
        for name in self.stats:
            key = f'train/{self.prefix}{name}'
            if scalars.get(key) is not self._buffers.get(key) or key not in self._buffers:
                self._buffers[key] = _DeviceHistory(self, scalars.get(key))  # keeps a resumed history
                scalars[key] = self._buffers[key]
        self._hub = hub

    def push(self, stats: MiningStats) -> None:
        hub = MessageHub.get_current_instance()
        if hub is not self._hub:
            _drop_restored(hub)
        if hub is not self._hub or any(hub.log_scalars.get(k) is not b for k, b in self._buffers.items()) \
                or not self._buffers:
            self._install(hub)
        it = hub.get_info('iter')
        if not self._records or self._records[-1].it != it or it is None:
            self._records.append(_IterationRecord(it))
        rec = self._records[-1]
        rec.images += 1
        rec.total += stats
        rec.dirty = True
        if sum(not r.published for r in self._records) > self.max_pending:
            self.flush()

    def flush(self) -> None:
        """Reads back every pending iteration (one transfer per device) and appends it to the history."""
        todo = [r for r in self._records if r.dirty]
        if not todo:
            return
        for r in todo:
            r.dirty = False  # before reading: the buffers' reads below must not flush again
        leaves = [(r, f.name) for r in todo for f in fields(r.total) if isinstance(getattr(r.total, f.name), Tensor)]
        by_device: Dict[torch.device, list] = {}
        for leaf in leaves:
            by_device.setdefault(getattr(leaf[0].total, leaf[1]).device, []).append(leaf)
        for group in by_device.values():
            values = torch.stack([getattr(r.total, name).detach().double().reshape(())
                                  for r, name in group]).tolist()
            for (r, name), v in zip(group, values):
                setattr(r.total, name, v)
        for r in todo:
            for name, metric in self.stats.items():
                buf = self._buffers.get(f'train/{self.prefix}{name}')
                if buf is not None:
                    buf.put(float(metric(r.total, r.images)), replace_last=r.published)
            r.published = True
        self._records = self._records[-1:]  # only the newest iteration can still grow


def selection_stats(losses: Tensor, sel: Selection, num_cands: int, mined_fg: Number,
                    bad_boxes: Number = 0, valid: Optional[Tensor] = None) -> MiningStats:
    """The statistics of one image's selection, with no host read: the numbers the device method read
    back with the result sizes (:class:`~mmdet_ohem.selection.Selection`'s loss sums), else 0-dim tensors
    computed on the losses' device (over the ``valid`` rows only, when given)."""
    if sel.mined_loss is not None:
        mined_loss, cand_loss, cand_finite = sel.mined_loss, sel.candidate_loss, sel.num_finite
    else:
        finite = torch.isfinite(losses) if valid is None else torch.isfinite(losses) & valid
        mined_loss = losses[sel.indices].sum()
        cand_loss, cand_finite = torch.where(finite, losses, 0.0).sum(), finite.sum()
    return MiningStats(
        candidates=num_cands, suppressed=sel.num_suppressed, nonfinite=sel.num_nonfinite,
        mined=sel.indices.numel(), mined_fg=mined_fg, mined_loss=mined_loss, cand_loss=cand_loss,
        cand_finite=cand_finite, bad_boxes=bad_boxes)


class MinerMixin:
    """What the RoI miner (:class:`OHEMSampler`) and the anchor miner (``RPNOHEMSampler``) share: the
    dispatch to the pure selection rule and the per-image statistics. Expects ``num``, ``nms``,
    ``keep_ratio``, ``pos_fraction``, ``neg_pos_ub``, ``nonfinite`` and ``_stats_logger`` on the sampler."""

    def _select(self, losses: Tensor, boxes: Tensor, is_pos: Tensor, labels: Optional[Tensor],
                positives_first: bool = True) -> Selection:
        """The pure rule; ``positives_first=False`` keeps paper mode's indices hardest first overall."""
        iou = self.nms.iou_threshold if self.nms is not None else None
        if self.keep_ratio:
            return select_hard_examples_ratio(losses, boxes, is_pos, self.num, self.pos_fraction,
                                              self.neg_pos_ub, iou, labels, self.nonfinite)
        return select_hard_examples(losses, boxes, self.num, iou, labels, self.nonfinite,
                                    is_pos if positives_first else None)

    def _record(self, stats: MiningStats) -> None:
        self.last_stats = stats
        if self._stats_logger is not None:
            self._stats_logger.push(stats)


class DeferredSamplingResult(SamplingResult):
    """A ``SamplingResult`` whose RoIs are mined on first read, together with the other pending images.

    Returned by :meth:`OHEMSampler.sample` when images are mined in batches. Reading any attribute (as the
    RoI head does after sampling every image: ``res.priors``, ``res.pos_inds``, ...) mines all pending
    images of its sampler at once and turns every one of them into a complete ``SamplingResult`` (the
    same attributes, set by ``SamplingResult.__init__``). Until then it holds only its sampler.
    """

    def __init__(self, sampler: 'OHEMSampler') -> None:  # noqa: D107 (filled in by the sampler)
        self.__dict__['_ohem_sampler'] = sampler

    @property
    def materialized(self) -> bool:
        """Whether this image's RoIs have been mined."""
        return '_ohem_sampler' not in self.__dict__ and '_ohem_error' not in self.__dict__

    def _materialize(self) -> None:
        sampler = self.__dict__.get('_ohem_sampler')
        if sampler is not None:
            sampler.mine_pending()  # raises if mining failed
        if '_ohem_error' in self.__dict__:  # its batch failed earlier (the error was raised then)
            raise RuntimeError(self.__dict__['_ohem_error'])

    def __getattr__(self, name: str) -> Any:  # only for attributes not set yet
        if name.startswith('__') or name in ('_ohem_sampler', '_ohem_error'):
            raise AttributeError(name)
        self._materialize()
        return object.__getattribute__(self, name)

    def to(self, device):  # SamplingResult.to walks __dict__: mine first
        self._materialize()
        return super().to(device)

    def __getstate__(self) -> dict:
        self._materialize()
        return dict(self.__dict__)


@dataclass
class _PendingImage:
    """One image waiting to be mined: its whole candidate list (gt boxes added), nothing gathered yet."""

    result: DeferredSamplingResult
    priors: Any
    gt_flags: Tensor
    feats: Any
    assign_result: Any
    gt_instances: Any
    extent: Optional[float]


@TASK_UTILS.register_module(name='OHEMSampler', force=True)
class OHEMSampler(MinerMixin, CandidateSampler):
    """Online Hard Example Mining (Shrivastava, Gupta & Girshick, CVPR 2016) for mmdet RoI heads.

    Per image: every candidate RoI (proposals, plus gt boxes if ``add_gt_as_proposals``) that the
    assigner did not ignore goes through a read-only pass of the RoI head (current weights, no graph);
    each RoI's loss (classification, plus box regression for foreground) ranks it; loss-NMS removes
    near-duplicates of harder RoIs; the ``num`` hardest survivors are returned. There is **no fg:bg
    ratio** unless ``keep_ratio=True``: a mined batch may be all background or all foreground.

    ``bg_lo`` (which low-overlap RoIs are ignored) stays the assigner's job, e.g.
    ``MaxIoUAssigner(neg_iou_thr=(0.1, 0.5))``; ignored RoIs are never mined.

    Args:
        num: RoIs mined per image (B/N; 64 in the paper, 512 in mmdet's R-CNN configs). Required: without it
            the build fails with a message saying so (after naming an unsupported RoI head, if that is one).
        pos_fraction: Foreground quota, used **only** with ``keep_ratio=True``. Accepted otherwise so
            that configs inheriting ``RandomSampler`` settings can switch ``type`` alone; it is then
            ignored, and the build log says so.
        context: The RoI head (mmdet passes it).
        neg_pos_ub: Negatives-per-positive cap, only with ``keep_ratio=True``.
        add_gt_as_proposals: Add gt boxes to the candidates (mmdet default True).
        ranking_loss: ``'cls+loc'`` (paper), ``'cls'`` or ``'loc'``.
        nms: Loss-NMS config or instance (``dict(type='LossNMS', iou_threshold=0.7)``); ``None`` = off.
        keep_ratio: Mine foreground and background pools separately with ``pos_fraction`` (mmdet's
            flavour, for ablations).
        nonfinite: ``'skip'`` (default): RoIs with a NaN/inf read-only loss are never mined, counted and
            logged as ``ohem_nonfinite``, while they are at most half of an image's candidates
            (:data:`~mmdet_ohem.selection.select.NONFINITE_SKIP_LIMIT`); above that the head itself is
            broken, they are mined first and the training loss turns NaN as with ``RandomSampler``
            (logged once as a warning). ``'raise'``: raise ``FloatingPointError`` on any.
        readonly_dtype: Precision of the read-only forward only (the training pass is unchanged; any
            combination with ``--amp`` works). ``'tf32'`` (default): at least TF32's precision (a 10-bit
            mantissa), measured to mine >= 99% of an exact float32 pass's RoIs: in float32 training
            float32 with its matmuls (fc6/fc7) in TF32 on CUDA, as PyTorch runs float32 convolutions by
            default (exact float32 on the CPU); under fp16 autocast (``--amp``) fp16; under bf16 autocast
            float32 (TF32 matmuls on CUDA), since bf16 mined only 97.3-99.4%. ``None``: exactly the
            training pass's precision (bf16 under bf16 autocast). ``'fp32'``: float32 whatever the
            training precision. ``'bf16'``/``'fp16'``: autocast to it.
        log_stats: Publish per-iteration mining statistics to mmengine's ``MessageHub`` (kept on the
            device and read back only when a logger reads them).
        batch_images: Mine all images of a batch together (default): ``sample()`` returns a
            :class:`DeferredSamplingResult` and the first read of a result mines every pending image in
            one read-only forward and one batched selection (the same RoIs as one image at a time, fewer
            kernel launches and host reads). Used in paper mode for heads on the read-only pass's fast
            path (:attr:`~mmdet_ohem.readonly_pass.RoIHeadAdapter.batchable`: mmdet's ``BBoxHead``
            losses and box coder); other heads and ``keep_ratio=True`` mine each image in ``sample()``.
            ``False``: always one image at a time.
        readonly_batch_rois: At most this many RoIs per read-only forward when images are mined together
            (bounds the pass's transient memory; default
            :data:`~mmdet_ohem.readonly_pass.READONLY_BATCH_ROIS`).
        cuda_graph: On a GPU (default ``True``), with images mined together and loss-NMS on, run the
            read-only pass's box targets, per-row losses and the selection (ranking, loss-NMS, counts:
            about 120 small kernels) as a captured CUDA graph, one launch plus the input copies
            (:mod:`~mmdet_ohem.selection.graph`); the same RoIs. On an H100 it was as fast or faster in
            every setting timed (docs/benchmark.md). A capture that fails logs a warning and the selection
            runs eagerly. On the CPU it changes nothing (the selection runs on the host there). ``False``:
            the eager selection on the GPU too.
        fast_roi_pool: On a GPU with Triton (default ``True``), the read-only pass's mmcv ``RoIPool``
            layers (VGG16, VGG_CNN_M_1024) take each bin's maximum with a Triton kernel over channels-last
            features, the bins' pixel ranges still computed by mmcv's own kernel
            (:mod:`mmdet_ohem.kernels.roi_pool`): mmcv's values bit for bit, so the same RoIs. The training
            forward keeps mmcv's layer. No effect on the CPU, on RoIAlign, or without Triton. ``False``:
            mmcv's layer in the read-only pass too.
        fast_roi_align: On a GPU with Triton (default ``True``), the read-only pass's mmcv ``RoIAlign``
            layers (average mode: R50-FPN and most mmdet heads) run a Triton kernel over channels-last
            features that computes mmcv's float32 arithmetic whatever the features' dtype, on float32 RoIs
            (:mod:`mmdet_ohem.kernels.roi_align`); mmdet's ``SingleRoIExtractor`` then also maps the RoIs to
            FPN levels in float32. Under fp16 ``--amp`` this takes out the half-precision rounding of the
            RoIs, of their level mapping (whose area overflows float16 above ~256x256 px) and of the
            samples' sum, which the read-only pass otherwise shares with mmdet's training forward. On the
            H200 (2026-11-27) it equals mmcv's float32 CPU kernel bit for bit, runs 1.8-4.1x faster than
            mmcv's fp16 layer, and the default read-only pass with it mines 99.9-100% of an exact float32
            pass's RoIs under fp16 ``--amp`` (98.5% without). The training forward keeps mmdet's and mmcv's
            code. No effect on the CPU or without Triton. ``False``: mmcv's layer, on RoIs in the features'
            dtype, in the read-only pass too.
        one_launch_levels: With ``fast_roi_align`` on a GPU, mmdet's multi-level ``SingleRoIExtractor`` (FPN)
            aligns every RoI on its level in **one** launch of the same kernel (per RoI the same arithmetic, so
            the same values bit for bit), with no sort, split or scatter by level and no host read of the level
            counts: 16 fewer operators (``count_ops --gpu-kernels``, R50-FPN 800x1333) and one synchronisation less
            per iteration (:func:`~mmdet_ohem.readonly_pass.extract_levels_one_read`). The default since
            2026-11-28: on an H200 it equals the per-level kernel bit for bit at R50-FPN's scale, and R50-FPN
            800x1333 iterations took 0.992x the per-level path's time under fp16 ``--amp`` (0.999x in fp32).
            A launch that fails logs a warning and the per-level path runs. No effect on the CPU. ``False``:
            the per-level path (sort, split and one host read of the level counts).
        pos_sampler, neg_sampler: Libra R-CNN's ``CombinedSampler`` settings; accepted so that its
            config can switch ``type`` alone, and ignored (the build log says so).

    Candidates whose box is unusable (NaN/inf, ``x2 < x1`` or ``y2 < y1``, or more than one image size
    outside the image) are dropped before the read-only pass, never mined, and counted as
    ``ohem_badbox``.

    Raises:
        ValueError: On a setting outside its range; the message names the setting and the value.
        TypeError: If built for a head without an RoI box branch (RPN, one-stage heads).
    """

    def __init__(self,
                 num: Optional[int] = None,
                 pos_fraction: float = 0.25,
                 context: Any = None,
                 neg_pos_ub: int = -1,
                 add_gt_as_proposals: bool = True,
                 ranking_loss: str = 'cls+loc',
                 nms: Optional[Union[dict, LossNMS]] = dict(type='LossNMS', iou_threshold=0.7),
                 keep_ratio: bool = False,
                 nonfinite: str = 'skip',
                 readonly_dtype: Optional[str] = 'tf32',
                 log_stats: bool = True,
                 batch_images: bool = True,
                 readonly_batch_rois: int = READONLY_BATCH_ROIS,
                 cuda_graph: bool = True,
                 fast_roi_pool: bool = True,
                 fast_roi_align: bool = True,
                 one_launch_levels: bool = True,
                 **kwargs: Any) -> None:
        stage = getattr(context, 'current_stage', None) if hasattr(context, 'num_stages') else None
        if num is None and context is not None:  # no setting fixes an unsupported head: say that first
            RoIHeadAdapter(context, stage)
        check_mining_settings('OHEMSampler', 'RoIs', num, ranking_loss, pos_fraction, neg_pos_ub, nonfinite,
                              add_gt_as_proposals=add_gt_as_proposals, keep_ratio=keep_ratio, log_stats=log_stats)
        if readonly_dtype not in READONLY_PRECISIONS:
            raise ValueError(f"OHEMSampler: readonly_dtype must be 'tf32', None, 'fp32', 'bf16' or 'fp16', "
                             f'got {readonly_dtype!r}')
        if not isinstance(batch_images, bool):
            raise TypeError(f'OHEMSampler: batch_images must be True or False, got {batch_images!r}')
        if not isinstance(cuda_graph, bool):
            raise TypeError(f'OHEMSampler: cuda_graph must be True or False, got {cuda_graph!r}')
        if not isinstance(fast_roi_pool, bool):
            raise TypeError(f'OHEMSampler: fast_roi_pool must be True or False, got {fast_roi_pool!r}')
        if not isinstance(fast_roi_align, bool):
            raise TypeError(f'OHEMSampler: fast_roi_align must be True or False, got {fast_roi_align!r}')
        if not isinstance(one_launch_levels, bool):
            raise TypeError(f'OHEMSampler: one_launch_levels must be True or False, got {one_launch_levels!r}')
        if isinstance(readonly_batch_rois, bool) or not isinstance(readonly_batch_rois, int) \
                or readonly_batch_rois <= 0:
            raise ValueError(f'OHEMSampler: readonly_batch_rois must be a positive int, got {readonly_batch_rois!r}')
        nms = TASK_UTILS.build(nms) if isinstance(nms, dict) else nms
        if nms is not None and not isinstance(nms, LossNMS):
            raise TypeError(f'OHEMSampler: nms must be a LossNMS config, instance or None, got {nms!r}')
        head = RoIHeadAdapter(context, stage)  # refuses unsupported heads, naming them
        # Libra R-CNN's CombinedSampler sub-samplers: accepted so that its config can switch type alone.
        ignored = {k: kwargs.pop(k) for k in ('pos_sampler', 'neg_sampler') if k in kwargs}
        if kwargs:
            hint = " (mmdet's built-in sampler option; ours is ranking_loss='cls'|'loc'|'cls+loc')" \
                if 'loss_key' in kwargs else ''
            raise TypeError(f'OHEMSampler got unknown setting(s) {sorted(kwargs)}{hint}')
        super().__init__(num, pos_fraction, neg_pos_ub, add_gt_as_proposals)
        self.head = head
        head.fast_roi_pool = fast_roi_pool
        head.fast_roi_align = fast_roi_align
        head.one_launch_levels = one_launch_levels
        self.ignored_settings = ignored
        self.context = context
        self.ranking_loss = ranking_loss
        self.nms = nms
        self.keep_ratio = keep_ratio
        self.nonfinite = nonfinite
        self.readonly_dtype = readonly_dtype
        self.batch_images = batch_images
        self.readonly_batch_rois = readonly_batch_rois
        self.cuda_graph = cuda_graph
        self._graphs = SelectionGraphs(on_failure=self._graph_failed) if cuda_graph else None
        self._batched: Optional[bool] = None  # decided at the first sample() (the head is complete then)
        self._pending: List[_PendingImage] = []
        self._pending_key: Any = None
        self._last_stats: Optional[MiningStats] = None
        self._stats_logger = (_IterationStatsLogger('ohem_' if stage is None else f'ohem_s{stage}_')
                              if log_stats else None)
        self._warned_nonfinite = False
        MMLogger.get_current_instance().info(f'[mmdet_ohem] {self.describe()}')

    def describe(self) -> str:
        """One line naming this OHEM implementation and its settings."""
        stage = f' stage {self.head.stage},' if self.head.stage is not None else ''
        if self.keep_ratio:
            ratio = f'fg:bg ratio KEPT (pos_fraction={self.pos_fraction}, neg_pos_ub={self.neg_pos_ub})'
        else:
            ratio = f'no fg:bg ratio (pos_fraction={self.pos_fraction} ignored)'
        ignored = f', ignored: {sorted(self.ignored_settings)}' if self.ignored_settings else ''
        return (f'OHEM active: mmdet_ohem.OHEMSampler (paper OHEM, read-only pass over all candidates) for '
                f'{type(self.context).__name__}{stage} num={self.num}/image, ranking_loss={self.ranking_loss}, '
                f'loss-NMS={self.nms!r}, {ratio}, add_gt_as_proposals={self.add_gt_as_proposals}, '
                f'readonly_dtype={self.readonly_dtype or "None (training precision)"}, nonfinite={self.nonfinite}, '
                f'batch_images={self.batch_images}, cuda_graph={self.cuda_graph}, '
                f'fast_roi_pool={self.head.fast_roi_pool}, fast_roi_align={self.head.fast_roi_align}'
                f', one_launch_levels={self.head.one_launch_levels}{ignored}')

    @property
    def last_stats(self) -> Optional[MiningStats]:
        """The statistics of the last image mined (pending images are mined first)."""
        if self._pending:
            self.mine_pending()
        return self._last_stats

    @last_stats.setter
    def last_stats(self, stats: Optional[MiningStats]) -> None:
        self._last_stats = stats

    @property
    def batched(self) -> bool:
        """Whether ``sample()`` defers and mines images together (see ``batch_images``)."""
        if self._batched is None:
            self._batched = bool(self.batch_images and not self.keep_ratio and self.head.batchable)
        return self._batched

    def _batch_key(self, feats: Sequence[Tensor]) -> tuple:
        """Images mined together must come from one forward (feature storage) and one precision context."""
        f0 = feats[0]
        dev = f0.device.type
        amp = torch.is_autocast_enabled(dev)
        return (f0.untyped_storage().data_ptr(), f0.device, amp, torch.get_autocast_dtype(dev) if amp else None)

    def sample(self, assign_result, pred_instances, gt_instances, feats=None, **kwargs) -> SamplingResult:
        """Mines one image's hardest RoIs.

        Args:
            assign_result: The assigner's result for this image's proposals.
            pred_instances: ``InstanceData`` with ``priors`` (the proposals).
            gt_instances: ``InstanceData`` with ``bboxes`` and ``labels``.
            feats: This image's feature maps, each ``(1, C, H, W)`` (mmdet's RoI heads pass them).

        Returns:
            ``SamplingResult`` holding the mined foreground and background RoIs; with images mined together
            (:attr:`batched`) a :class:`DeferredSamplingResult`, mined with the other pending images at its
            first read.

        Host synchronisation, on a GPU: with images mined together, exactly one small read for all of them
        sizes the results and carries the statistics along (no ``nonzero`` gathers the candidates: every
        row of the candidate lists goes through the read-only pass and the selection, the rows that are no
        candidates masked out; ``RandomSampler`` makes two per image), besides one for the read-only pass's
        multi-level RoI extraction (its level counts; mmdet's extractor makes one ``nonzero`` per level). One
        image at a time: the candidates' two ``nonzero`` per image, and one read per image (paper mode).
        Other statistics stay on the device.
        """
        if feats is None:
            raise ValueError('OHEMSampler.sample needs feats=[per-level (1, C, H, W) features of this image] '
                             'for the read-only pass; mmdet RoI heads pass them')
        # Unusable boxes (inf/NaN, x2 < x1, far outside the image) would crash RoIAlign: they are left out
        # of the candidates (no extra host read) and counted.
        extent = self.head.image_extent(feats)
        if self.batched:
            key = self._batch_key(feats)
            if self._pending and key != self._pending_key:
                self.mine_pending()  # left over from another forward: mine it before starting anew
            self._pending_key = key
            priors, gt_flags = self.with_gt(assign_result, pred_instances, gt_instances)
            res = DeferredSamplingResult(self)
            self._pending.append(_PendingImage(res, priors, gt_flags, feats, assign_result, gt_instances, extent))
            return res
        cands = self.collect(assign_result, pred_instances, gt_instances,
                             box_filter=lambda boxes: invalid_boxes(boxes, extent), **kwargs)
        everything = cands.all
        pos_inds, neg_inds = everything.pos_inds, everything.neg_inds
        num_pos, num_cands = pos_inds.numel(), cands.num
        if num_cands == 0:
            self._record(MiningStats(bad_boxes=cands.num_filtered))
            return everything
        losses = self.head.readonly_losses(
            feats, everything.pos_priors, everything.pos_gt_bboxes, everything.pos_gt_labels,
            everything.neg_priors, READONLY_PRECISIONS[self.readonly_dtype]).ranking(self.ranking_loss)
        cand_inds = torch.cat([pos_inds, neg_inds])  # the read-only pass's row order
        boxes = get_box_tensor(cands.priors)[cand_inds]
        is_pos = torch.arange(num_cands, device=cand_inds.device) < num_pos
        labels = None
        if self.nms is not None and self.nms.per_class:
            labels = torch.cat([everything.pos_gt_labels, everything.pos_gt_labels.new_full(
                (num_cands - num_pos, ), self.head.bbox_head.num_classes)])
        sel = self._select(losses, boxes, is_pos, labels)
        if sel.nonfinite_kept:
            self._warn_nonfinite(sel.num_nonfinite, num_cands)
        chosen = cand_inds[sel.indices]  # positives first: sel.num_pos of them
        self._record(selection_stats(losses, sel, num_cands, sel.num_pos, cands.num_filtered))
        return self.result(cands, chosen[:sel.num_pos], chosen[sel.num_pos:], assign_result, gt_instances)

    def mine_pending(self) -> None:
        """Mines every pending image (see ``batch_images``) and completes their results.

        One read-only forward over all their candidates (:meth:`RoIHeadAdapter.readonly_losses_batch`),
        then :func:`~mmdet_ohem.selection.select_hard_examples_batch` (on a GPU one host read for all
        images). Runs under the precision context the images were sampled in.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        key, self._pending_key = self._pending_key, None
        try:
            self._mine_batch(pending, key)
        except BaseException as e:
            for item in pending:
                if not item.result.materialized:
                    item.result.__dict__['_ohem_error'] = f'OHEMSampler: mining this batch failed: {e!r}'
                    item.result.__dict__.pop('_ohem_sampler', None)
            raise

    def _mine_batch(self, pending: List[_PendingImage], key: tuple) -> None:
        device_type = key[1].type
        amp, amp_dtype = key[2], key[3]
        now = torch.is_autocast_enabled(device_type)
        same_context = now == amp and (not amp or torch.get_autocast_dtype(device_type) == amp_dtype)
        context = torch.autocast(device_type=device_type, dtype=amp_dtype, enabled=amp) if not same_context \
            else contextlib.nullcontext()
        num_classes = self.head.bbox_head.num_classes
        # Every row of every image's candidate list, each image's rows padded to the longest list's length
        # (ignored rows: gt_inds = -1), so that they are one (B, n) problem without a padding step: the
        # candidates (positives: gt_inds > 0, negatives: 0) are the rows that are neither ignored (-1) nor
        # unusable boxes, masked, not gathered.
        image_boxes = [get_box_tensor(item.priors) for item in pending]
        count, n = len(pending), max(b.shape[0] for b in image_boxes)
        boxes = pad_rows(image_boxes, 0.0, n)
        extents = {item.extent for item in pending}
        bad = invalid_boxes(boxes, extents.pop()) if len(extents) == 1 else \
            torch.cat([invalid_boxes(b, item.extent) for b, item in zip(boxes.split(n), pending)])
        gt_inds = pad_rows([item.assign_result.gt_inds for item in pending], -1, n)
        is_pos = gt_inds > 0
        valid = (gt_inds >= 0) > bad  # booleans: not ignored and not bad
        labels = torch.where(is_pos, pad_rows([item.assign_result.labels for item in pending], -1, n), num_classes)
        gt_boxes = torch.cat([get_box_tensor(item.gt_instances.bboxes)[(g - 1).clamp(min=0)]
                              if len(item.gt_instances.bboxes) else b
                              for b, g, item in zip(boxes.split(n), gt_inds.split(n), pending)])
        rows = BatchRows([item.feats for item in pending], [n] * count, boxes.masked_fill(bad[:, None], 0.0),
                         gt_boxes, labels, is_pos)
        per_class = self.nms is not None and self.nms.per_class
        iou = self.nms.iou_threshold if self.nms is not None else None
        grid = (count, n)
        valid_grid = valid.view(grid)
        dtype = READONLY_PRECISIONS[self.readonly_dtype]
        if self._graphs is not None and iou is not None and runs_on_device(boxes.device, n):
            # The forward here; the targets, losses, ranking and selection in one CUDA graph.
            with context:
                outputs = self.head.readonly_forward_batch(rows, dtype, self.readonly_batch_rois)
            front = self.head.row_ranking(self.ranking_loss)
            front_rows = FrontRows(front, {k: v.view(grid + tuple(v.shape[1:]))
                                           for k, v in front.rows(*outputs, rows).items()})
            sels = select_hard_examples_front(front_rows, self.num, iou, per_class, self.nonfinite, True,
                                              valid=valid_grid, graphs=self._graphs)
            # the losses themselves only where a statistic needs them (the selection's host fallback)
            ranking = front_rows.losses() if any(sel.mined_loss is None for sel in sels) else None
        else:
            with context:
                ranking = self.head.readonly_losses_batch(rows, dtype, self.readonly_batch_rois).ranking(
                    self.ranking_loss).view(grid)
            sels = select_hard_examples_padded(ranking, rows.boxes.float().view(grid + (4, )), self.num, iou,
                                               labels.view(grid) if per_class else None, self.nonfinite,
                                               is_pos.view(grid), valid=valid_grid)
        # per image on the device, with one reduction: the bad boxes' counts; the valid rows only where a
        # statistic is computed from the losses here (the graph's read carries the loss sums)
        bad_counts = bad.view(grid).sum(1).unbind()
        valid_rows = valid_grid.unbind() if ranking is not None else (None, ) * count
        for b, (item, sel, b_valid, b_bad) in enumerate(zip(pending, sels, valid_rows, bad_counts)):
            image_losses = ranking[b] if ranking is not None else None
            num_cands = int(sel.num_candidates)
            if sel.nonfinite_kept:
                self._warn_nonfinite(sel.num_nonfinite, num_cands)
            self._record(selection_stats(image_losses, sel, num_cands, sel.num_pos, b_bad, b_valid))
            res = item.result
            del res.__dict__['_ohem_sampler']
            chosen = sel.indices  # rows of the candidate list, positives first: sel.num_pos of them
            SamplingResult.__init__(res, pos_inds=chosen[:sel.num_pos], neg_inds=chosen[sel.num_pos:],
                                    priors=item.priors, gt_bboxes=item.gt_instances.bboxes,
                                    assign_result=item.assign_result, gt_flags=item.gt_flags)

    @staticmethod
    def _graph_failed(e: BaseException) -> None:
        MMLogger.get_current_instance().warning(
            f'[mmdet_ohem] capturing the OHEM selection as a CUDA graph failed ({type(e).__name__}: {e}); it runs '
            f'eagerly from now on (the same RoIs, more kernel launches)')

    def _warn_nonfinite(self, num_bad: Union[int, Tensor], num_cands: int) -> None:
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            MMLogger.get_current_instance().warning(
                f'[mmdet_ohem] {int(num_bad)} of {num_cands} read-only losses are NaN/inf (more than '
                f'{NONFINITE_SKIP_LIMIT:.0%}): the RoI head itself is broken, so they are mined instead of '
                f'skipped and the training loss shows it, as with RandomSampler (warned once)')



@TASK_UTILS.register_module(name='MMDetOHEMSampler')
class MMDetOHEMSampler(_MMDetOHEMSampler):
    """mmdet 3.3's built-in ``OHEMSampler`` (cls-loss ranking, fg:bg ratio kept, no loss-NMS), unchanged.

    Registered under this explicit name because ``mmdet_ohem`` takes over ``OHEMSampler``. The only
    addition is the build log line saying which OHEM is active.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        MMLogger.get_current_instance().info(
            f'[mmdet_ohem] OHEM active: mmdet built-in OHEMSampler (MMDetOHEMSampler) for '
            f'{type(self.context).__name__}: num={self.num}, pos_fraction={self.pos_fraction}, '
            f'neg_pos_ub={self.neg_pos_ub}, loss_key={self.loss_key}, no loss-NMS')
