"""The device selection rule replayed as a captured CUDA graph.

On a GPU a training iteration of these detectors is host-bound: the host spends its time issuing small
kernels (docs/benchmark.md). The selection's device rule (:class:`~mmdet_ohem.selection.select.DeviceRule`:
ranking, the loss-NMS suppression matrix and fixed point, the counts) is about a hundred small operators
on a ``(B, n)`` problem of ~2 x 1,000 rows. Nothing in it reads the device and every shape follows from
``(B, n)`` and the settings, so it can be captured once as a CUDA graph and replayed: a handful of launches
(the input copies, one replay, one copy of the result) instead of about a hundred.

**Static shapes.** A graph is captured per :class:`GraphKey`: the batch size, ``n`` rounded up to a
multiple of :data:`BUCKET` (the static input buffers' width), the budget and the loss-NMS settings. Each
call copies its ``(B, n)`` rows into the first ``n`` columns of the buffers and clears ``valid`` beyond
them; the rows beyond are padding, inert by construction of the rule (never valid, so never mined, never
suppressing, never counted, ranked last), whatever stale values they hold. The result is therefore that
of the eager rule on the ``(B, n)`` rows (``tests/test_selection_graph.py`` checks it with garbage in the
padding). At most :data:`MAX_GRAPHS` graphs are kept (least recently used dropped), and rows wider than
:data:`MAX_GRAPH_SIZE` run eagerly (a graph's memory pool holds its ``(B, N, N)`` temporaries).

**Fallbacks.** The graph runs the blind fixed-point steps only; when they did not converge (a suppression
chain longer than usual, read back with the counts), :meth:`SelectionGraphs.run` returns ``None`` and the
caller runs the eager rule, which iterates on. A capture that fails (an operator that cannot be captured
on some PyTorch build) disables graphs for the process with one warning; training goes on eagerly.

**Without CUDA** (``capture=False``, the tests on the CPU): the same buffers and copies, and the rule run
eagerly on the buffers in place of a replay, so everything but the capture itself is exercised.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
import math
from typing import Callable, List, Optional, Tuple
import warnings

import torch
from torch import Tensor

from .select import DeviceRule

__all__ = ['BUCKET', 'MAX_GRAPHS', 'MAX_GRAPH_SIZE', 'GraphKey', 'CapturedSelection', 'SelectionGraphs']

#: Width granularity of the static buffers: ``n`` rows run in a graph of width ``ceil(n / BUCKET) * BUCKET``.
BUCKET = 128
#: Graphs kept at once (each holds a private memory pool of its temporaries).
MAX_GRAPHS = 3
#: Rows wider than this run eagerly (a ``(B, N, N)`` suppression matrix and its IoU temporaries stay
#: reserved in a graph's pool: ~50 MB for two images of 1,024 rows, 16 times that at 4,096).
MAX_GRAPH_SIZE = 4096
#: Eager runs on a side stream before a capture (CUDA graphs need the lazy state built first).
WARMUP_RUNS = 2


@dataclass(frozen=True)
class GraphKey:
    """What a captured selection is specialised to."""

    batch: int
    size: int
    num: int
    iou_threshold: float
    per_class: bool
    with_pos: bool
    skip_limit: float
    device: str


class CapturedSelection:
    """The rule for one :class:`GraphKey`: static input buffers and, with ``capture``, the CUDA graph that
    reads them.

    Args:
        key: The shapes and settings.
        capture: Capture a CUDA graph (the buffers' device must be CUDA); ``False`` runs the rule eagerly
            on the buffers at each call instead (for the CPU).
    """

    def __init__(self, key: GraphKey, capture: bool) -> None:
        self.key = key
        dev = torch.device(key.device)
        shape = (key.batch, key.size)
        self.values = torch.zeros(shape, dtype=torch.float32, device=dev)
        self.boxes = torch.zeros(shape + (4, ), dtype=torch.float32, device=dev)
        self.valid = torch.zeros(shape, dtype=torch.bool, device=dev)
        self.is_pos = torch.zeros(shape, dtype=torch.bool, device=dev) if key.with_pos else None
        self.labels = torch.zeros(shape, dtype=torch.long, device=dev) if key.per_class else None
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.out: Optional[Tuple[Tensor, Tensor]] = None
        if capture:
            self._capture()

    def _rule(self) -> Tuple[Tensor, Tensor]:
        k = self.key
        with torch.autocast(device_type=self.values.device.type, enabled=False):
            return DeviceRule(self.values, self.boxes, k.num, k.iou_threshold, self.labels, self.is_pos,
                              k.skip_limit, self.valid).readout()

    def _capture(self) -> None:
        side = torch.cuda.Stream(self.values.device)
        side.wait_stream(torch.cuda.current_stream(self.values.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._rule()
        torch.cuda.current_stream(self.values.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.out = self._rule()
        self.graph = graph

    def replay(self) -> Tuple[Tensor, Tensor]:
        """Runs the rule on the buffers: ``(chosen, counts)`` in static output tensors (graph) or new ones."""
        if self.graph is None:
            return self._rule()
        self.graph.replay()
        return self.out

    def load(self, values: Tensor, boxes: Tensor, valid: Optional[Tensor], is_pos: Optional[Tensor],
             labels: Optional[Tensor]) -> None:
        """Copies ``(B, n)`` rows (``n`` at most the key's size) into the buffers, the rest made padding."""
        n = values.shape[-1]
        self.values[:, :n].copy_(values)
        self.boxes[:, :n].copy_(boxes)
        if valid is None:
            self.valid[:, :n].fill_(True)
        else:
            self.valid[:, :n].copy_(valid)
        if n < self.key.size:
            self.valid[:, n:].fill_(False)
        if self.is_pos is not None:
            self.is_pos[:, :n].copy_(is_pos)
        if self.labels is not None:
            self.labels[:, :n].copy_(labels)


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
        self.captures = 0  # graphs captured so far (for logs and tests)
        self.replays = 0
        self.fallbacks = 0  # calls that returned None (not converged): the caller ran the eager rule

    def __getstate__(self) -> dict:
        # A copy (deepcopy of the model, e.g. mmengine's EMA; pickling) gets the settings, not the graphs:
        # CUDA graphs and their buffers cannot be copied, and a copy captures its own when it runs.
        state = dict(self.__dict__)
        state['_cache'] = OrderedDict()
        return state

    def key(self, values: Tensor, num: int, iou_threshold: float, labels: Optional[Tensor],
            is_pos: Optional[Tensor], skip_limit: float) -> GraphKey:
        """The graph that serves these rows."""
        batch, n = values.shape
        size = max(BUCKET, math.ceil(n / BUCKET) * BUCKET)
        return GraphKey(batch, size, int(num), float(iou_threshold), labels is not None, is_pos is not None,
                        float(skip_limit), str(values.device))

    def _get(self, key: GraphKey) -> Optional[CapturedSelection]:
        sel = self._cache.get(key)
        if sel is not None:
            self._cache.move_to_end(key)
            return sel
        capture = key.device.startswith('cuda') if self.capture is None else bool(self.capture)
        try:
            sel = CapturedSelection(key, capture)
        except Exception as e:  # noqa: BLE001 (any capture failure: run eagerly from now on)
            self.failed = f'{type(e).__name__}: {e}'
            (self.on_failure or self._warn)(e)
            return None
        self.captures += capture
        self._cache[key] = sel
        while len(self._cache) > self.max_graphs:
            self._cache.popitem(last=False)
        return sel

    @staticmethod
    def _warn(e: BaseException) -> None:
        warnings.warn(f'mmdet_ohem: capturing the selection as a CUDA graph failed ({type(e).__name__}: {e}); '
                      f'it runs eagerly from now on (the same result, more kernel launches)')

    def run(self, values: Tensor, boxes: Tensor, num: int, iou_threshold: float, labels: Optional[Tensor],
            is_pos: Optional[Tensor], skip_limit: float,
            valid: Optional[Tensor]) -> Optional[Tuple[Tensor, List[float]]]:
        """The device rule's ``(chosen, read values)`` for ``(B, n)`` rows (see
        :func:`~mmdet_ohem.selection.select._select_padded_on_device`), or ``None`` where the caller must run
        the eager rule: graphs off (a capture failed), rows wider than :data:`MAX_GRAPH_SIZE`, or blind
        fixed-point steps that did not converge. ``chosen`` is the caller's own tensor (not a buffer)."""
        if self.failed is not None or values.shape[-1] > MAX_GRAPH_SIZE or values.shape[-1] == 0:
            return None
        sel = self._get(self.key(values, num, iou_threshold, labels, is_pos, skip_limit))
        if sel is None:
            return None
        sel.load(values, boxes, valid, is_pos, labels)
        chosen, counts = sel.replay()
        self.replays += 1
        read = counts.tolist()  # the one host read
        if read[-1]:  # not converged within the blind steps: the eager rule iterates on
            self.fallbacks += 1
            return None
        return chosen[:, :values.shape[-1]].clone(), read
