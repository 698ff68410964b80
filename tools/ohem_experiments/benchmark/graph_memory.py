"""Memory a captured selection graph keeps (``cuda_graph=True``), estimated on the CPU.

A CUDA graph keeps a private memory pool with room for every temporary of the captured region, reserved
for as long as the graph lives (the eager path frees them for the rest of the iteration). This runs the
region (the head's :class:`~mmdet_ohem.readonly_pass.RowRanking` and the selection rule) once on the CPU
on a graph's static buffers and reports the peak of the bytes held by live tensors meanwhile (tracked with
a ``TorchDispatchMode``), plus the buffers themselves: an estimate of the pool, not a CUDA measurement (the
caching allocator rounds blocks up).

Usage (from ``tools/``)::

    python -m ohem_experiments.benchmark.graph_memory r50_fpn --rows 1010
    python -m ohem_experiments.benchmark.graph_memory vgg16 --rows 2010
"""
from __future__ import annotations

import argparse
import math
from typing import Optional, Sequence
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .detectors import MODELS, prepare

__all__ = ['graph_memory', 'main']


class _LiveBytes(TorchDispatchMode):
    """Peak of the bytes held by the storages of tensors created inside the block and still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or ptr in self._seen:  # views share their base's storage
                continue
            self._seen.add(ptr)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, ptr, size)
        return out

    def _free(self, ptr: int, size: int) -> None:
        self.live -= size
        self._seen.discard(ptr)


def graph_memory(model: str, rows: int, batch: int = 2) -> dict:
    """For ``batch`` images of ``rows`` candidate rows each: the graph's width, the peak bytes of its
    temporaries and the bytes of its input buffers.

    Raises:
        KeyError: Unknown model.
        ValueError: ``rows`` or ``batch`` not positive.
    """
    from mmdet_ohem.selection.graph import BUCKET, CapturedSelection, GraphKey
    if rows <= 0 or batch <= 0:
        raise ValueError(f'graph_memory: rows and batch must be positive, got rows={rows}, batch={batch}')
    prep = prepare(model, ['ours'], 64, batch_size=2, device='cpu')
    sampler = prep.samplers['ours']
    front = sampler.head.row_ranking(sampler.ranking_loss)
    head = sampler.head.bbox_head
    classes = head.num_classes
    box_dims = 4 if head.reg_class_agnostic else 4 * classes
    width = max(BUCKET, math.ceil(rows / BUCKET) * BUCKET)
    inputs = (('cls_score', (classes + 1, ), torch.float32), ('bbox_pred', (box_dims, ), torch.float32),
              ('boxes', (4, ), torch.float32), ('gt_boxes', (4, ), torch.float32), ('labels', (), torch.long),
              ('is_pos', (), torch.bool))
    key = GraphKey(batch, width, sampler.num, sampler.nms.iou_threshold, sampler.nms.per_class, True, 0.5, 'cpu',
                   inputs, front.key)
    sel = CapturedSelection(key, capture=False, front=front)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(batch, width, 2, generator=g) * 800
    wh = torch.rand(batch, width, 2, generator=g) * 200 + 8
    sel.buffers['boxes'].copy_(torch.cat([xy, xy + wh], -1))
    sel.buffers['gt_boxes'].copy_(torch.cat([xy, xy + wh * 1.1], -1))
    sel.buffers['labels'].fill_(classes)
    sel.valid[:, :rows] = True
    sel.replay()  # lazy state (the box coder's constants) outside the measurement
    meter = _LiveBytes()
    with meter, torch.no_grad():
        out = sel.replay()
    del out
    return {'model': model, 'batch': batch, 'rows': rows, 'width': width, 'num': sampler.num,
            'temporaries_mib': meter.peak / 2 ** 20,
            'buffers_mib': sum(t.nbytes for t in sel.buffers.values()) / 2 ** 20}


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('model', choices=sorted(MODELS))
    p.add_argument('--rows', type=int, default=1010, help='candidate rows per image (proposals + gt boxes)')
    p.add_argument('--batch', type=int, default=2)
    args = p.parse_args(argv)
    r = graph_memory(args.model, args.rows, args.batch)
    print(f"{r['model']}: {r['batch']} images x {r['rows']} rows (graph width {r['width']}, num={r['num']}): "
          f"temporaries {r['temporaries_mib']:.1f} MiB at their peak, input buffers {r['buffers_mib']:.1f} MiB")


if __name__ == '__main__':
    main()
