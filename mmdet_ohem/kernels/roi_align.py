"""The read-only pass's RoIAlign under fp16 on a GPU, as mmcv computes it: **experimental, off by default**.

mmcv 2.1's ``roi_align_forward_cuda_kernel`` runs one thread per output value ``(roi, channel, bin)``, as
its RoIPool does (:mod:`mmdet_ohem.kernels.roi_pool`), and in the H100's fp16 profile of R50-FPN its
forwards took ~2.1 ms of device time per iteration, two thirds of the RoIs in OHEM's read-only pass.

This Triton kernel computes mmcv's average-mode RoIAlign for **float16** features: one program per RoI and
block of channels, the 49 bins in lanes, each sample's four neighbours loaded as whole channel vectors
from channels-last features. Unlike a maximum, an average of bilinear samples depends on the order and
rounding of every operation, so the kernel repeats mmcv's: with ``T = c10::Half`` every operation of
mmcv's kernel (``a * b``, ``a + b``, ``a / b`` on halves, and on a half and an int) computes in float32
and rounds to half, so there is no fused multiply-add for the compiler to choose, and the kernel can
round at each of the same places (``_h`` below). Only fp16 is handled; float32 (where nvcc's
contractions decide the last bit) and bfloat16 go to mmcv's layer.

Status: the values equal a direct transcription of mmcv's kernel in PyTorch float16 operations, bit for
bit, in Triton's interpreter on the CPU (``tests/test_fast_roi_align.py``). **It has not run on a GPU**:
the ``cuda`` tests comparing it with mmcv's layer, and its timing (``roi_pool_timing --op align``), are in
``tools/gpu_check.sh`` for the next device session. Until they pass, ``OHEMSampler(fast_roi_align=False)``
is the default.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .roi_pool import channels_last_launch, gradient_free_cuda, patched_forwards

__all__ = ['fast_roi_align_layers', 'readonly_roi_align_fp16']

BLOCK_C = 128  # channels per program (float16: 256 bytes per pixel load)
NUM_WARPS = 4


@functools.lru_cache(maxsize=None)
def _kernel():
    from ._roi_align_triton import roi_align_avg_f16  # imports triton
    return roi_align_avg_f16


def roi_align_fp16(input: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
                   sampling_ratio: int, aligned: bool, block_c: int = BLOCK_C,
                   num_warps: int = NUM_WARPS) -> Tensor:
    """mmcv's ``roi_align(input, rois, output_size, spatial_scale, sampling_ratio, 'avg', aligned)`` for
    float16 ``input`` and ``rois`` (no gradient): ``(n, C, PH, PW)`` float16."""
    out, launch = channels_last_launch(input, rois.shape[0], output_size, block_c)
    if launch is None:
        return out
    feats, block_b, grid = launch
    _, c, h, w = input.shape
    scale = float(torch.tensor(spatial_scale, dtype=torch.float16))  # static_cast<scalar_t>(spatial_scale)
    _kernel()[grid](feats, rois.contiguous(), out, c, h, w, scale, 0.5 if aligned else 0.0, int(sampling_ratio),
                    int(bool(aligned)), PH=output_size[0], PW=output_size[1], BLOCK_B=block_b, BLOCK_C=block_c,
                    num_warps=num_warps)
    return out


def readonly_roi_align_fp16(layer: nn.Module, input: Tensor, rois: Tensor) -> Optional[Tensor]:
    """``layer(input, rois)`` (an mmcv ``RoIAlign``) by the Triton kernel, or ``None`` where it does not apply:
    not CUDA, no Triton, not float16 features and RoIs, gradients needed, ``pool_mode='max'`` or
    torchvision's op, feature maps above 2048 px a side (half-precision coordinates)."""
    if not gradient_free_cuda(input, rois, (torch.float16, )):
        return None
    if layer.pool_mode != 'avg' or getattr(layer, 'use_torchvision', False):
        return None
    return roi_align_fp16(input, rois, tuple(layer.output_size), float(layer.spatial_scale),
                          int(layer.sampling_ratio), bool(layer.aligned))


def _fast_forward(layer: nn.Module, original: Any, input: Tensor, rois: Tensor) -> Tensor:
    out = readonly_roi_align_fp16(layer, input, rois)
    return original(input, rois) if out is None else out


def fast_roi_align_layers(layers: Sequence[nn.Module], enabled: bool = True):
    """Inside the block (a context manager), mmcv ``RoIAlign`` layers among ``layers`` run
    :func:`readonly_roi_align_fp16` where it applies, else their own forward."""
    from mmcv.ops import RoIAlign
    return patched_forwards(layers, RoIAlign, _fast_forward, enabled)
