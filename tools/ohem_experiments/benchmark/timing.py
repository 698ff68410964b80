"""Interleaved timing of full training iterations, one sampler variant after another.

Every timed iteration starts from the same weights, optimiser state (and loss scale), RNG state and
inputs: the model state and the SGD momentum buffers are restored in place (untimed) before each one.
Variants run round-robin (the order rotates every round) after untimed warm-up rounds, so that drifts of
a shared, noisy machine hit every variant alike.

Nothing inside a timed iteration waits for the device: on CUDA, events recorded on the stream before and
after the iteration give its time, read after the iteration (the one synchronisation per timed block);
the CUDA peak memory is reset before each iteration. Where the time goes (the RoI head, the sampler, the
read-only pass, loss-NMS, each of which needs a synchronised clock around it) and how many host
synchronisations an iteration makes (CUDA's sync debug mode) come from a separate profiled pass per
variant after the timed rounds (:func:`profile_variants`).
"""
from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from math import comb
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .detectors import Prepared, swap_sampler, train_step

__all__ = ['VariantTiming', 'time_variants', 'profile_variants', 'breakdown_timers', 'instrumented_parts',
           'count_syncs', 'Progress', 'ratio', 'paired_ratios', 'paired_ratio', 'median_ci']

BREAKDOWN_KEYS = ('roi_head', 'sampler', 'readonly', 'loss_nms')


@dataclass
class VariantTiming:
    """Measurements of one variant.

    Attributes:
        times: Seconds per timed iteration (forward + backward + optimiser step).
        parts: Per-iteration seconds spent in ``roi_head`` (RoI head loss incl. sampling), ``sampler``
            (all ``sample()`` calls), ``readonly`` (read-only RoI pass) and ``loss_nms``.
        cuda_peak_mb: Per-iteration CUDA allocator peak (``max_memory_allocated``; CUDA only).
        cuda_iter_peak_mb: The same minus the allocation before the iteration (CUDA only).
        candidates: Candidates per image seen by our sampler (its last image), per iteration.
        syncs: Host synchronisations per iteration (CUDA sync debug mode, profiled pass; CUDA only).
    """

    times: List[float] = field(default_factory=list)
    parts: Dict[str, List[float]] = field(default_factory=lambda: {k: [] for k in BREAKDOWN_KEYS})
    cuda_peak_mb: List[float] = field(default_factory=list)
    cuda_iter_peak_mb: List[float] = field(default_factory=list)
    candidates: List[int] = field(default_factory=list)
    syncs: List[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per iteration."""
        return statistics.median(self.times)

    def part_median(self, key: str) -> float:
        """:meth:`measured_part` with ``0.0`` where the part was not measured (the JSON record's
        ``parts_median_s``)."""
        measured = self.measured_part(key)
        return 0.0 if measured is None else measured

    def measured_part(self, key: str) -> Optional[float]:
        """Median seconds per iteration spent in breakdown part ``key``, or ``None`` where no profiled iteration
        measured it (``--profile-rounds 0``, or a run stopped by SIGTERM)."""
        return statistics.median(self.parts[key]) if self.parts.get(key) else None

    def as_dict(self) -> dict:
        """JSON-ready record (raw samples and medians)."""
        return {'times_s': self.times, 'median_s': self.median,
                'parts_s': self.parts, 'parts_median_s': {k: self.part_median(k) for k in self.parts},
                'cuda_peak_mb': self.cuda_peak_mb, 'cuda_iter_peak_mb': self.cuda_iter_peak_mb,
                'candidates_per_image': self.candidates, 'syncs_per_iter': self.syncs}

    def keep_rounds(self, rounds: int) -> None:
        """Drops the timed samples past the first ``rounds`` (those of a round cut short). The breakdown
        (``parts``) and ``syncs`` come from the profiled pass after the timed rounds and are left as they are."""
        for samples in (self.times, self.cuda_peak_mb, self.cuda_iter_peak_mb, self.candidates):
            del samples[rounds:]

    @classmethod
    def from_dict(cls, d: dict) -> 'VariantTiming':
        """The inverse of :meth:`as_dict` (a saved benchmark JSON's ``timings`` entry)."""
        return cls(times=list(d['times_s']), parts={k: list(v) for k, v in d['parts_s'].items()},
                   cuda_peak_mb=list(d.get('cuda_peak_mb', [])), cuda_iter_peak_mb=list(d.get('cuda_iter_peak_mb', [])),
                   candidates=list(d.get('candidates_per_image', [])), syncs=list(d.get('syncs_per_iter', [])))


class Progress:
    """Prints ``done/total``, elapsed time and ETA lines to stderr."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done, self.t0 = total, label, 0, time.perf_counter()

    def step(self, msg: str) -> None:
        """Marks one unit done and prints a progress line with ``msg``."""
        self.done += 1
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done)
        print(f'[{self.label}] {self.done}/{self.total} {msg} | elapsed {el:6.1f}s ETA {eta:6.1f}s',
              file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    # Not while a CUDA graph is being captured (cuda_graph=True's first call of a new shape inside a timed
    # part): a synchronisation there would make the capture fail and the variant run eagerly.
    if device.startswith('cuda') and not torch.cuda.is_current_stream_capturing():
        torch.cuda.synchronize()


@contextlib.contextmanager
def _patched(owner: object, name: str, wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    had = name in vars(owner) if isinstance(owner, type) else name in getattr(owner, '__dict__', {})
    orig = getattr(owner, name)
    setattr(owner, name, wrap(orig))
    try:
        yield
    finally:
        if had:
            setattr(owner, name, orig)
        else:
            delattr(owner, name)


@contextlib.contextmanager
def instrumented_parts(prep: Prepared, wrapper: Callable[[str], Callable[[Callable], Callable]]) -> Iterator[None]:
    """Wraps every function that makes up a breakdown part (:data:`BREAKDOWN_KEYS`) with ``wrapper(part)``
    for the duration of the block.

    ``roi_head``: the RoI head's loss; ``sampler``: the R-CNN sampler's ``sample`` (of a ``WithRPNMiner``
    pair too) and, for ours, ``mine_pending`` (images mined together when the RoI head first reads a
    result); ``readonly``: our :meth:`RoIHeadAdapter.readonly_losses` / ``readonly_losses_batch`` (with
    ``cuda_graph=True``: ``readonly_forward_batch``, the targets and losses then run in the selection's graph) and mmdet's
    ``OHEMSampler.hard_mining``; ``loss_nms``: the host loss-NMS and, for paper mode's device path, the
    suppression matrix and the fixed-point iteration.
    """
    from mmdet.models.task_modules.samplers import OHEMSampler as MMDetOwn

    from mmdet_ohem.readonly_pass import RoIHeadAdapter
    from mmdet_ohem.selection import select as select_mod

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(prep.model.roi_head, 'loss', wrapper('roi_head')))
        stack.enter_context(_patched(RoIHeadAdapter, 'readonly_losses', wrapper('readonly')))
        stack.enter_context(_patched(RoIHeadAdapter, 'readonly_losses_batch', wrapper('readonly')))
        stack.enter_context(_patched(RoIHeadAdapter, 'readonly_forward_batch', wrapper('readonly')))
        stack.enter_context(_patched(MMDetOwn, 'hard_mining', wrapper('readonly')))
        for name in ('greedy_loss_nms', 'suppression_matrix', 'GreedyFixedPoint'):
            stack.enter_context(_patched(select_mod, name, wrapper('loss_nms')))
        for sampler in prep.samplers.values():
            rcnn = getattr(sampler, 'rcnn', sampler)
            stack.enter_context(_patched(rcnn, 'sample', wrapper('sampler')))
            if hasattr(rcnn, 'mine_pending'):  # images mined together, when the RoI head reads a result
                stack.enter_context(_patched(rcnn, 'mine_pending', wrapper('sampler')))
        yield


@contextlib.contextmanager
def breakdown_timers(prep: Prepared, acc: Dict[str, float], device: str) -> Iterator[None]:
    """Accumulates seconds spent in each part of :func:`instrumented_parts` into ``acc`` (a synchronised
    clock around each call); the wrappers are removed afterwards."""

    def timed(key: str) -> Callable[[Callable], Callable]:
        def wrap(fn: Callable) -> Callable:
            def inner(*args, **kwargs):
                _sync(device)
                t = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    _sync(device)
                    acc[key] = acc.get(key, 0.0) + time.perf_counter() - t
            return inner
        return wrap

    with instrumented_parts(prep, timed):
        yield


class _StateRestorer:
    """Snapshots model tensors, optimiser and loss-scaler state once; restores them in place."""

    def __init__(self, prep: Prepared) -> None:
        self.model = {k: v.detach().clone() for k, v in prep.model.state_dict().items()}
        self.optim = {id(p): {k: v.detach().clone() for k, v in st.items() if torch.is_tensor(v)}
                      for p, st in prep.optim.state.items()}
        self.scaler = prep.scaler.state_dict() if prep.scaler is not None else None
        self.prep = prep

    @torch.no_grad()
    def restore(self) -> None:
        for k, v in self.prep.model.state_dict().items():
            v.copy_(self.model[k])
        for p, st in self.prep.optim.state.items():
            for k, v in self.optim.get(id(p), {}).items():
                st[k].copy_(v)
        if self.scaler is not None:
            self.prep.scaler.load_state_dict(self.scaler)


def _step(prep: Prepared) -> None:
    train_step(prep.model, prep.optim, prep.data, prep.precision, prep.scaler)


@contextlib.contextmanager
def count_syncs(device: str, where: Optional[List[str]] = None) -> Iterator[List[int]]:
    """Counts CUDA host synchronisations in the block (``torch.cuda.set_sync_debug_mode('warn')``).

    Yields a one-element list holding the count once the block ends (stays 0 on CPU). ``where``, if
    given, receives the Python location (``file:line``) that made each one.
    """
    out = [0]
    if not device.startswith('cuda'):
        yield out
        return
    import warnings
    prev = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            yield out
        finally:
            torch.cuda.set_sync_debug_mode(prev)
    syncs = [w for w in caught if 'synchroniz' in str(w.message)]
    out[0] = len(syncs)
    if where is not None:
        where.extend(f'{w.filename}:{w.lineno}' for w in syncs)


def _one_iteration(prep: Prepared, variant: str, device: str, seed: int, rec: VariantTiming,
                   restorer: _StateRestorer, keep: bool) -> float:
    swap_sampler(prep.model, prep.samplers[variant])
    restorer.restore()
    torch.manual_seed(seed)
    cuda = device.startswith('cuda')
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        _step(prep)
        end.record()
        end.synchronize()  # after the timed block
        dt = start.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        _step(prep)
        dt = time.perf_counter() - t0
    if keep:
        rec.times.append(dt)
        if cuda:
            rec.cuda_peak_mb.append(torch.cuda.max_memory_allocated() / 2**20)
            rec.cuda_iter_peak_mb.append((torch.cuda.max_memory_allocated() - before) / 2**20)
        stats = getattr(prep.samplers[variant], 'last_stats', None)
        if stats is not None:
            rec.candidates.append(int(stats.candidates))
    return dt


def profile_variants(prep: Prepared, variants: Sequence[str], out: Dict[str, VariantTiming], device: str = 'cpu',
                     seed: int = 0, rounds: int = 1, restorer: Optional[_StateRestorer] = None) -> None:
    """The breakdown and the synchronisation count of each variant, from separate (untimed) iterations
    that start from ``restorer``'s state (the timed iterations' starting point).

    Each part is timed with a synchronised clock around it, which is why this is not the timed pass.
    """
    restorer = restorer or _StateRestorer(prep)
    for _ in range(rounds):
        for v in variants:
            swap_sampler(prep.model, prep.samplers[v])
            restorer.restore()
            torch.manual_seed(seed)
            _sync(device)
            with count_syncs(device) as syncs:
                _step(prep)
                _sync(device)
            restorer.restore()
            torch.manual_seed(seed)
            acc: Dict[str, float] = {}
            with breakdown_timers(prep, acc, device):
                _step(prep)
            for k in BREAKDOWN_KEYS:
                out[v].parts[k].append(acc.get(k, 0.0))
            if device.startswith('cuda'):
                out[v].syncs.append(max(0, syncs[0] - 1))  # minus the synchronize() that ends the block
    restorer.restore()


def time_variants(prep: Prepared, variants: Sequence[str], iters: int, warmup: int = 1,
                  device: str = 'cpu', seed: int = 0, label: str = 'bench',
                  profile_rounds: int = 1, time_budget_s: Optional[float] = None,
                  stop: Optional[Callable[[], bool]] = None) -> Dict[str, VariantTiming]:
    """Times ``iters`` training iterations per variant, interleaved, after ``warmup`` untimed rounds,
    then profiles ``profile_rounds`` more per variant for the breakdown (:func:`profile_variants`).

    One untimed optimiser step is taken first so that the SGD momentum buffers exist; that state is
    then the common starting point of every timed iteration.

    Fewer rounds than ``iters`` are timed where:

    - ``time_budget_s`` is given: the timed rounds end with the first round that ends ``time_budget_s``
      seconds or more after the timed rounds began (wall clock), so a run takes as many rounds as its
      time allows on a machine of unknown speed;
    - ``stop()`` turns true (e.g. the process was sent SIGTERM): the timing ends after the iteration that is
      running, the round it cut short is dropped (every variant keeps the same, complete rounds, which
      the paired ratios need), and no profiled iteration follows.

    Raises:
        ValueError: If ``iters`` < 1, ``warmup`` < 0 or ``time_budget_s`` <= 0, or a variant was not prepared.
    """
    if iters < 1 or warmup < 0 or (time_budget_s is not None and time_budget_s <= 0):
        raise ValueError(f'need iters >= 1, warmup >= 0 and time_budget_s > 0 (or None), got iters={iters}, '
                         f'warmup={warmup}, time_budget_s={time_budget_s}')
    missing = [v for v in variants if v not in prep.samplers]
    if missing:
        raise ValueError(f'variants {missing} were not prepared (have {sorted(prep.samplers)})')
    swap_sampler(prep.model, prep.samplers[variants[0]])
    torch.manual_seed(seed)
    _step(prep)
    restorer = _StateRestorer(prep)
    out = {v: VariantTiming() for v in variants}
    stop = stop or (lambda: False)
    progress = Progress((warmup + iters) * len(variants), label)
    timed_from = None
    for r in range(warmup + iters):
        if r == warmup:
            timed_from = time.perf_counter()
        order = list(variants[r % len(variants):]) + list(variants[:r % len(variants)])
        for i, v in enumerate(order, 1):
            dt = _one_iteration(prep, v, device, seed, out[v], restorer, keep=r >= warmup)
            progress.step(f'{"warm-up" if r < warmup else "round " + str(r - warmup + 1)} {v} {dt:.3f}s')
            if stop():
                complete = max(0, r - warmup + (i == len(order)))  # this round counts if it was finished
                for rec in out.values():
                    rec.keep_rounds(complete)
                print(f'[{label}] stopped after {complete} complete timed round(s) (a round cut short is dropped); '
                      f'no profiled iteration', file=sys.stderr, flush=True)
                return out
        if time_budget_s is not None and timed_from is not None:
            rounds, spent = r - warmup + 1, time.perf_counter() - timed_from
            if spent >= time_budget_s:
                print(f'[{label}] time budget of {time_budget_s:g}s spent after {rounds} timed round(s)',
                      file=sys.stderr, flush=True)
                break
            # the rounds the budget will hold at this pace, for the progress line's ETA
            progress.total = (warmup + min(iters, max(rounds + 1, math.ceil(rounds * time_budget_s / spent)))) \
                * len(variants)
    if profile_rounds > 0:
        profile_variants(prep, variants, out, device, seed, profile_rounds, restorer)
    return out


def ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    """``num / den``, or ``None`` when either is missing or the denominator is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def paired_ratios(num: Optional[VariantTiming], den: Optional[VariantTiming]) -> Optional[List[float]]:
    """Per timed round, ``num``'s iteration time / ``den``'s in the same round.

    :func:`time_variants` runs one iteration of every variant per round, so the ``i``-th times of two
    variants were taken moments apart; their ratio cancels what drifts from round to round (the
    machine's load, clocks), which the ratio of the two medians does not. ``None`` when either is
    missing, the rounds differ in number, or a time is not positive.
    """
    if num is None or den is None or not num.times or len(num.times) != len(den.times) \
            or min(den.times) <= 0:
        return None
    return [a / b for a, b in zip(num.times, den.times)]


def paired_ratio(num: Optional[VariantTiming], den: Optional[VariantTiming]) -> Optional[float]:
    """The median of :func:`paired_ratios`, or ``None`` where there are none."""
    ratios = paired_ratios(num, den)
    return None if ratios is None else statistics.median(ratios)


def median_ci(values: Sequence[float], confidence: float = 0.95) -> Optional[Tuple[float, float]]:
    """Distribution-free confidence interval for the median of ``values`` (independent samples).

    The order statistics ``x_(k)`` and ``x_(n+1-k)`` of the sorted values, with ``k`` the largest rank
    for which ``P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2``: the interval holds the population's
    median with probability at least ``confidence`` whatever the distribution (no normality, robust to
    the occasional slow iteration). Used on per-round paired ratios, which :func:`time_variants` takes in
    independent rounds.

    Returns:
        ``(low, high)``, or ``None`` when ``values`` are too few for any such ``k`` (fewer than 6 at 95%).

    Raises:
        ValueError: ``confidence`` outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f'median_ci: confidence must be in (0, 1), got {confidence!r}')
    xs, n = sorted(values), len(values)
    tail, k, below = (1.0 - confidence) / 2, 0, 0.0  # below: P(Binomial(n, 1/2) < k + 1)
    while k < n // 2:
        below += comb(n, k) / 2 ** n
        if below > tail:
            break
        k += 1
    return (xs[k - 1], xs[n - k]) if k else None
