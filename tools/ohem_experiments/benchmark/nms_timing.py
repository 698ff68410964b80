"""Loss-NMS alone: our budgeted greedy loss-NMS against full NMS and mmcv's ``nms``.

The boxes imitate RPN proposals: jittered copies around a few dozen "objects" (so that NMS has real
work), in a 1000 x 600 image; the losses are random. Every method gets the same boxes and scores.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from mmdet_ohem.selection import greedy_loss_nms

__all__ = ['proposal_like_boxes', 'time_loss_nms']


def proposal_like_boxes(n: int, num_objects: int = 30, width: float = 1000., height: float = 600.,
                        seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` overlapping proposal-like boxes and random losses (both float32, CPU).

    Raises:
        ValueError: If ``n`` or ``num_objects`` is not positive.
    """
    if n <= 0 or num_objects <= 0:
        raise ValueError(f'n and num_objects must be positive, got n={n}, num_objects={num_objects}')
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_objects, 2, generator=g) * torch.tensor([width, height])
    sizes = torch.exp(torch.empty(num_objects, 2).uniform_(3.0, 5.5, generator=g))
    obj = torch.randint(0, num_objects, (n, ), generator=g)
    ctr = centres[obj] + torch.randn(n, 2, generator=g) * sizes[obj] * 0.25
    wh = sizes[obj] * torch.exp(torch.randn(n, 2, generator=g) * 0.3)
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes, torch.rand(n, generator=g) * 3


def _median_time(fn: Callable[[], object], repeats: int, device: str = 'cpu') -> tuple[float, object]:
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def time_loss_nms(sizes: Sequence[int] = (2000, 10000), budgets: Sequence[int] = (64, 512),
                  iou_threshold: float = 0.7, repeats: int = 5, full: bool = True,
                  device: str = 'cpu') -> List[Dict[str, object]]:
    """Median wall time of each NMS method on each box count.

    Methods: ``greedy_loss_nms`` with ``max_keep`` = each budget (what the sampler runs; on CUDA also
    with the host method), our full greedy NMS (``max_keep=None``, when ``full``), and ``mmcv.ops.nms``
    (full NMS, mmcv's kernel). On CUDA the clock is read after ``torch.cuda.synchronize()``.

    Returns:
        One row per (box count, method): ``boxes``, ``method``, ``median_ms``, ``kept``.
    """
    from mmcv.ops import nms as mmcv_nms

    rows: List[Dict[str, object]] = []
    for n in sizes:
        boxes, losses = proposal_like_boxes(n)
        boxes, losses = boxes.to(device), losses.to(device)
        methods: Dict[str, Callable[[], object]] = {}
        for b in budgets:
            methods[f'ours, max_keep={b}'] = (lambda b=b: greedy_loss_nms(boxes, losses, iou_threshold, b))
            if device.startswith('cuda'):  # 'auto' is the device method there; the host one for comparison
                methods[f'ours (host loop), max_keep={b}'] = (
                    lambda b=b: greedy_loss_nms(boxes, losses, iou_threshold, b, method='host'))
        if full:
            methods['ours, full (max_keep=None)'] = lambda: greedy_loss_nms(boxes, losses, iou_threshold)
        methods['mmcv.ops.nms, full'] = lambda: mmcv_nms(boxes, losses, iou_threshold)[1]
        for name, fn in methods.items():
            sec, out = _median_time(fn, repeats, device)
            kept: Optional[int] = int(out.keep.numel()) if hasattr(out, 'keep') else int(out.numel())
            rows.append({'boxes': n, 'method': name, 'median_ms': sec * 1e3, 'kept': kept})
    return rows
