"""The device selection rule replayed as a captured CUDA graph.

On a GPU a training iteration of these detectors is host-bound: the host spends its time issuing small
kernels (docs/benchmark.md). The selection's device rule (:class:`~mmdet_ohem.selection.select.DeviceRule`:
ranking, the loss-NMS suppression matrix and fixed point, the counts) is about a hundred small operators
on a ``(B, n)`` problem of ~2 x 1,000 rows. Nothing in it reads the device and every shape follows from
``(B, n)`` and the settings, so it can be captured once as a CUDA graph and replayed: a handful of launches
(the input copies, one replay, one copy of the result) instead of about a hundred.

**The front.** The ranking losses are computed inside the same graph from the inputs by a
:class:`~mmdet_ohem.selection.select.RankingFront`: for ``OHEMSampler(cuda_graph=True)`` the RoI head's box
targets, per-row losses and ranking (:class:`~mmdet_ohem.readonly_pass.RowRanking`) from its read-only
outputs and the rows' boxes, gt boxes, labels and positives, so the graph replaces about 120 operators;
for :func:`~mmdet_ohem.selection.select_hard_examples_padded` with given losses,
:class:`~mmdet_ohem.selection.select.GivenLosses` hands back its input ``values``.

**Static shapes.** A graph is captured per :class:`GraphKey`: the batch size, ``n`` rounded up to a
multiple of :data:`BUCKET` (the static input buffers' width), the budget, the loss-NMS settings, the inputs'
names, per-row shapes and dtypes, and the front's ``key``. Rows are served by the narrowest graph kept that is
at least as wide, so a capture happens only for rows wider than every graph kept (in training the candidate
count moves from batch to batch across buckets; with one graph per bucket they would recapture in turn). Each
call copies its ``(B, n)`` rows into the first ``n`` columns of the buffers and clears ``valid`` beyond
them; the rows beyond are padding, inert by construction of the rule (never valid, so never mined, never
suppressing, never counted, ranked last), whatever stale values they hold. The result is therefore that
of the eager rule on the ``(B, n)`` rows (``tests/test_selection_graph.py`` checks it with garbage in the
padding). At most :data:`MAX_GRAPHS` graphs are kept (least recently used dropped), and rows wider than
:data:`MAX_GRAPH_SIZE` run eagerly (a graph's memory pool holds its ``(B, N, N)`` temporaries).

**Fallbacks.** The graph runs the blind fixed-point steps only; when they did not converge (a suppression
chain longer than usual, read back with the counts), :meth:`SelectionGraphs.run` returns ``None`` and the
caller runs the eager rule, which iterates on (on losses then computed eagerly). A capture that fails (an
operator that cannot be captured on some PyTorch build) disables graphs for the process with one warning;
training goes on eagerly.

**Without CUDA** (``capture=False``, the tests on the CPU): the same buffers and copies, and the rule run
eagerly on the buffers in place of a replay, so everything but the capture itself is exercised.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
import math
from typing import TYPE_CHECKING, Callable, Dict, Hashable, List, Optional, Tuple
import warnings

import torch
from torch import Tensor

from .select import DeviceRule, FrontRows

if TYPE_CHECKING:
    from .select import RankingFront

__all__ = ['BUCKET', 'MAX_GRAPHS', 'MAX_GRAPH_SIZE', 'GraphKey', 'CapturedSelection', 'SelectionGraphs']

#: Width granularity of the static buffers: ``n`` rows run in a graph of width ``ceil(n / BUCKET) * BUCKET``.
BUCKET = 128
#: Graphs kept at once (each holds a private memory pool of its temporaries).
MAX_GRAPHS = 3
#: Rows wider than this run eagerly (a ``(B, N, N)`` suppression matrix and its IoU temporaries stay
#: reserved in a graph's pool: ~50 MB for two images of 1,024 rows, 16 times that at 4,096).
MAX_GRAPH_SIZE = 4096
#: Widths whose buffer views a graph keeps (:meth:`CapturedSelection.load`; least recently used dropped).
MAX_WIDTHS = 16
#: Eager runs on a side stream before a capture (CUDA graphs need the lazy state built first).
WARMUP_RUNS = 2
#: The capture's ``cudaStreamCaptureMode``: unsafe CUDA calls (``cudaMalloc``, ``cudaHostAlloc``, ...) are
#: refused in the capturing thread only. Under torch's default, ``'global'``, such a call from another thread
#: during the capture fails: a DataLoader's pin-memory thread (``pin_memory=True``, as in mmdet's ``ms-90k``
#: configs) allocating pinned memory then gets ``cudaErrorStreamCaptureUnsupported`` and the capture breaks.
#: Nothing but the capturing thread touches the captured stream or the graph's private pool.
CAPTURE_ERROR_MODE = 'thread_local'


@dataclass(frozen=True)
class GraphKey:
    """What a captured selection is specialised to: the shapes, the settings, and the inputs (name, per-row
    shape, dtype) with what computes the ranking losses from them (``front``: ``None``, the losses are an
    input; else the front's ``key``)."""

    batch: int
    size: int
    num: int
    iou_threshold: float
    per_class: bool
    with_pos: bool
    skip_limit: float
    device: str
    inputs: Tuple[Tuple[str, Tuple[int, ...], torch.dtype], ...]
    front: Hashable


class CapturedSelection:
    """The rule for one :class:`GraphKey`: static input buffers and, with ``capture``, the CUDA graph that
    reads them.

    Args:
        key: The shapes, settings and inputs.
        capture: Capture a CUDA graph (the buffers' device must be CUDA); ``False`` runs the rule eagerly
            on the buffers at each call instead (for the CPU).
        front: Computes the ranking losses from the inputs (a :class:`~mmdet_ohem.selection.select.RankingFront`).
    """

    def __init__(self, key: GraphKey, capture: bool, front: 'RankingFront') -> None:
        self.key, self.front = key, front
        dev = torch.device(key.device)
        shape = (key.batch, key.size)
        self.buffers = {name: torch.zeros(shape + tuple(rest), dtype=dtype, device=dev)
                        for name, rest, dtype in key.inputs}
        self.valid = torch.zeros(shape, dtype=torch.bool, device=dev)
        # per width n: the buffers' first n columns (inputs in the key's order, then valid) and valid's columns
        # past n, made once (training's widths repeat), so a call copies with one operator
        self._views: 'OrderedDict[int, Tuple[List[Tensor], Optional[Tensor]]]' = OrderedDict()
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.out: Optional[Tuple[Tensor, Tensor]] = None
        if capture:
            self._capture()

    def _rule(self) -> Tuple[Tensor, Tensor]:
        k, buf = self.key, self.buffers
        with torch.autocast(device_type=self.valid.device.type, enabled=False):
            return DeviceRule(FrontRows.evaluate(self.front, buf), buf['boxes'], k.num, k.iou_threshold,
                              buf['labels'] if k.per_class else None, buf['is_pos'] if k.with_pos else None,
                              k.skip_limit, self.valid).readout()

    def _capture(self) -> None:
        dev = self.valid.device
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._rule()
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode=CAPTURE_ERROR_MODE):
            self.out = self._rule()
        self.graph = graph

    def replay(self) -> Tuple[Tensor, Tensor]:
        """Runs the rule on the buffers: ``(chosen, counts)`` in static output tensors (graph) or new ones."""
        if self.graph is None:
            return self._rule()
        self.graph.replay()
        return self.out

    def _columns(self, n: int) -> Tuple[List[Tensor], Optional[Tensor]]:
        views = self._views.get(n)
        if views is None:
            views = ([self.buffers[name][:, :n] for name, _, _ in self.key.inputs] + [self.valid[:, :n]],
                     self.valid[:, n:] if n < self.key.size else None)
            self._views[n] = views
            while len(self._views) > MAX_WIDTHS:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(n)
        return views

    def load(self, inputs: Dict[str, Tensor], valid: Optional[Tensor]) -> None:
        """Copies ``(B, n, ...)`` inputs (``n`` at most the key's size) into the buffers, the rest made padding:
        one ``_foreach_copy_`` (each input into its buffer's first ``n`` columns, ``valid`` too), and one
        ``fill_`` of ``valid`` past ``n`` (of its first ``n`` columns too where ``valid`` is ``None``)."""
        n = valid.shape[-1] if valid is not None else next(iter(inputs.values())).shape[1]
        if n > self.key.size:
            raise ValueError(f'CapturedSelection.load: {n} rows for a graph of {self.key.size}')
        columns, past = self._columns(n)
        sources = [inputs[name] for name, _, _ in self.key.inputs]
        if valid is None:
            torch._foreach_copy_(columns[:-1], sources)
            columns[-1].fill_(True)
        else:
            torch._foreach_copy_(columns, sources + [valid])
        if past is not None:
            past.fill_(False)


class SelectionGraphs:
    """A cache of :class:`CapturedSelection` per :class:`GraphKey` (see the module docstring).

    Args:
        capture: ``None`` (default): capture CUDA graphs for CUDA tensors, run eagerly on the buffers
            otherwise; ``False``: never capture (the buffers and copies only).
        max_graphs: How many to keep.
        on_failure: Called with the exception when a capture fails (graphs are then off for good);
            default: one ``warnings.warn``.
    """

    def __init__(self, capture: Optional[bool] = None, max_graphs: int = MAX_GRAPHS,
                 on_failure: Optional[Callable[[BaseException], None]] = None) -> None:
        if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs <= 0:
            raise ValueError(f'SelectionGraphs: max_graphs must be a positive int, got {max_graphs!r}')
        self.capture = capture
        self.max_graphs = max_graphs
        self.on_failure = on_failure
        self.failed: Optional[str] = None
        self._cache: 'OrderedDict[GraphKey, CapturedSelection]' = OrderedDict()
        self._served: Dict[GraphKey, GraphKey] = {}  # requested key -> the kept key that serves it
        self.captures = 0  # graphs captured so far (for logs and tests)
        self.replays = 0
        self.fallbacks = 0  # calls that returned None (not converged): the caller ran the eager rule

    def __getstate__(self) -> dict:
        # A copy (deepcopy of the model, e.g. mmengine's EMA; pickling) gets the settings, not the graphs:
        # CUDA graphs and their buffers cannot be copied, and a copy captures its own when it runs.
        state = dict(self.__dict__)
        state['_cache'], state['_served'] = OrderedDict(), {}
        return state

    def key(self, inputs: Dict[str, Tensor], num: int, iou_threshold: float, per_class: bool, with_pos: bool,
            skip_limit: float, front: Hashable = None) -> GraphKey:
        """The graph that serves these ``(B, n, ...)`` inputs."""
        first = next(iter(inputs.values()))
        batch, n = first.shape[:2]
        size = max(BUCKET, math.ceil(n / BUCKET) * BUCKET)
        spec = tuple((name, tuple(t.shape[2:]), t.dtype) for name, t in inputs.items())
        return GraphKey(batch, size, int(num), float(iou_threshold), bool(per_class), bool(with_pos),
                        float(skip_limit), str(first.device), spec, front)

    def _get(self, key: GraphKey, front: 'RankingFront') -> Optional[CapturedSelection]:
        # The narrowest graph kept that is at least as wide (padding columns are inert): rows whose count
        # moves between width buckets from batch to batch (proposals + gt boxes) capture only when they
        # are wider than every graph kept, not at each new bucket, which would recapture in turn.
        kept = self._served.get(key)  # the key that served these rows last time (the common case in training)
        if kept is None:
            served = [k for k in self._cache if k.size >= key.size and replace(k, size=key.size) == key]
            if served:
                kept = min(served, key=lambda k: k.size)
                if len(self._served) >= 64:  # settings that change all the time (a loss's beta): start afresh
                    self._served.clear()
                self._served[key] = kept
        if kept is not None:
            self._cache.move_to_end(kept)
            return self._cache[kept]
        capture = key.device.startswith('cuda') if self.capture is None else bool(self.capture)
        try:
            sel = CapturedSelection(key, capture, front)
        except Exception as e:  # noqa: BLE001 (any capture failure: run eagerly from now on)
            self.failed = f'{type(e).__name__}: {e}'
            (self.on_failure or self._warn)(e)
            return None
        self.captures += capture
        self._cache[key] = sel
        while len(self._cache) > self.max_graphs:
            self._cache.popitem(last=False)
        self._served.clear()  # a narrower graph may serve some keys now, a dropped one none
        return sel

    @staticmethod
    def _warn(e: BaseException) -> None:
        warnings.warn(f'mmdet_ohem: capturing the selection as a CUDA graph failed ({type(e).__name__}: {e}); '
                      f'it runs eagerly from now on (the same result, more kernel launches)')

    def run(self, rows: 'FrontRows', num: int, iou_threshold: float, per_class: bool, with_pos: bool,
            skip_limit: float, valid: Optional[Tensor]) -> Optional[Tuple[Tensor, List[float]]]:
        """The device rule's ``(chosen, read values)`` for :class:`~mmdet_ohem.selection.select.FrontRows`
        (``(B, n)``; the ranking losses computed inside the graph by ``rows.front`` from ``rows.inputs``, which
        hold ``boxes``, and ``is_pos`` / ``labels`` where the rule takes them), or ``None`` where the caller
        must run the eager rule: graphs off (a capture failed), rows wider than :data:`MAX_GRAPH_SIZE`, or
        blind fixed-point steps that did not converge. ``chosen`` is the caller's own tensor (not a buffer)."""
        inputs, front = rows.inputs, rows.front
        n = inputs['boxes'].shape[1]
        if self.failed is not None or n > MAX_GRAPH_SIZE or n == 0:
            return None
        sel = self._get(self.key(inputs, num, iou_threshold, per_class, with_pos, skip_limit, front.key), front)
        if sel is None:
            return None
        sel.load(inputs, valid)
        chosen, counts = sel.replay()
        self.replays += 1
        read = counts.tolist()  # the one host read
        if read[-1]:  # not converged within the blind steps: the eager rule iterates on
            self.fallbacks += 1
            return None
        return chosen[:, :n].clone(), read
