"""Lets mmcv 2.1's RoI layers take bfloat16 features (bf16 ``--amp``), computing them in float32.

With ``optim_wrapper.dtype='bfloat16'`` the backbone's features are bfloat16 under autocast, and mmdet's
RoI extractors hand them to mmcv's ``RoIAlign``/``RoIPool`` modules, whose CUDA kernels are compiled for
float32 and float16 only (and their CPU kernels for float32 only): ``"roi_align_forward_cuda_kernel" not
implemented for 'BFloat16'``. mmcv has no autocast rule for them either.

:func:`mmcv_roi_layers_accept_bfloat16` wraps the two modules' ``forward``: a bfloat16 input is cast to
float32, the layer runs its float32 kernel, and the output is cast back to bfloat16 (autograd records
the casts, so the backward pass runs the float32 kernel too). Inputs of any other dtype take the
original code path unchanged, so nothing that works today changes; only the bfloat16 error becomes a
result. Applied when ``mmdet_ohem`` is imported; idempotent.

Limitation (mmdet's, not fixed here): ``SingleRoIExtractor`` casts the RoIs to the features' dtype
before the layer sees them (``rois.type_as(feats[0])``), so under bf16 autocast the RoI coordinates are
rounded to bfloat16's 8 significant bits (steps of 2-4 px at 300-1000 px). fp16 ``--amp`` (mmdet's
``tools/train.py --amp`` default) rounds them to 11 bits (0.5 px at 1000 px).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

__all__ = ['mmcv_roi_layers_accept_bfloat16']


def _float32_for_bfloat16(forward: Callable) -> Callable:
    @functools.wraps(forward)
    def wrapped(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if input.dtype != torch.bfloat16:
            return forward(self, input, rois)
        return forward(self, input.float(), rois.float()).to(torch.bfloat16)
    wrapped._mmdet_ohem_bf16 = True
    return wrapped


def mmcv_roi_layers_accept_bfloat16() -> None:
    """Wraps ``mmcv.ops.RoIAlign.forward`` and ``mmcv.ops.RoIPool.forward`` (see the module docstring)."""
    from mmcv.ops import RoIAlign, RoIPool
    for cls in (RoIAlign, RoIPool):
        if not getattr(cls.forward, '_mmdet_ohem_bf16', False):
            cls.forward = _float32_for_bfloat16(cls.forward)
