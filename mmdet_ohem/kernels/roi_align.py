"""The read-only pass's RoIAlign on a GPU (Triton): **experimental, off by default** (``fast_roi_align``).

mmcv 2.1's ``roi_align_forward_cuda_kernel`` runs one thread per output value ``(roi, channel, bin)`` over
channels-first features, and under fp16 ``--amp`` it computes in half precision. In the H100's fp16
profile of R50-FPN its forwards took ~2.1 ms of device time per iteration, two thirds of them for the
RoIs of OHEM's read-only pass, whose device time (~3.1 ms) the selection's one host read then waits for.

Two Triton kernels, each one program per RoI and block of channels, the bins in lanes, each sample's four
neighbours loaded as whole channel vectors from channels-last features:

* :func:`roi_align_f32` (what ``fast_roi_align=True`` runs, :func:`readonly_roi_align`): mmcv's arithmetic
  with ``T = float`` whatever the features' dtype (each float16/bfloat16 value is exact in float32), on
  float32 RoIs, the result stored in the features' dtype. Under fp16 autocast mmdet's
  ``SingleRoIExtractor`` hands the layer RoIs rounded to float16, and mmcv's half kernel rounds every
  coordinate, weight and partial sum to half; the read-only pass's one-read extraction keeps the RoIs in
  float32 when this kernel runs (:func:`mmdet_ohem.readonly_pass.extract_levels_one_read`), so its RoI
  features are a float32 RoIAlign of the training pass's feature maps. It is launched with
  ``enable_fp_fusion=False``, so it computes as mmcv's CPU build does (no fused multiply-adds): bit for
  bit mmcv's float32 CPU kernel in Triton's interpreter (tested), and so on a GPU (the ``cuda`` test
  checks); mmcv's CUDA build lets nvcc fuse, so against it the values agree to float32 rounding.
* :func:`roi_align_fp16`: mmcv's half arithmetic, operation by operation (with ``T = c10::Half`` every
  operation computes in float32 and rounds to half, so there is no fused multiply-add for a compiler to
  choose; ``_h`` rounds at each of the same places). Equal to a transcription of mmcv's kernel bit for
  bit in the interpreter. Kept to measure what the half arithmetic costs (``roi_pool_timing --op align``
  times both; the agreement tool emulates it on the CPU).

Both compile for sm_90 with Triton's compiler on a machine without a GPU, with no ``fma`` and IEEE
divisions in the PTX (``test_kernels_compile_for_sm90_as_written``). **Neither has run on a GPU yet**: the
``cuda`` tests comparing them with mmcv's layer, and their timing, are in ``tools/gpu_check.sh`` for the
next device session. Until they pass, ``OHEMSampler(fast_roi_align=False)``
is the default.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .roi_pool import channels_last_launch, gradient_free_cuda, patched_forwards, run_or_fall_back

__all__ = ['fast_roi_align_layers', 'readonly_roi_align', 'roi_align_f32', 'roi_align_fp16']

BLOCK_C = 128  # channels per program of the half-arithmetic kernel (float16: 256 bytes per pixel load)
NUM_WARPS = 4
#: Launch of the float32-arithmetic kernel: 32 channels, 4 warps, i.e. 16 of the (64 bin lanes x 32
#: channels) values per thread. ptxas (Triton 3.6's, sm_90a, ``-v``) gives it 212 registers and no spills;
#: 128 x 4, the half kernel's, needs 255 registers and spills 880 bytes (64 x 4 and 128 x 8: 112 bytes).
#: Not timed on a GPU yet: ``roi_pool_timing --op align --launches`` times others beside it.
F32_BLOCK_C = 32
F32_NUM_WARPS = 4


def _fits_int32(input: Tensor) -> bool:
    return input.shape[1] * input.shape[2] * input.shape[3] < 2 ** 31


@functools.lru_cache(maxsize=None)
def _kernels() -> dict:
    from ._roi_align_triton import roi_align_avg_f16, roi_align_avg_f32  # imports triton
    return {'fp16': roi_align_avg_f16, 'f32': roi_align_avg_f32}


def _launch(name: str, input: Tensor, rois: Tensor, output_size: Tuple[int, int], scale: float,
            sampling_ratio: int, aligned: bool, block_c: int, num_warps: int, out_dtype: torch.dtype,
            **options: Any) -> Tensor:
    """Runs kernel ``name`` of :func:`_kernels` over ``rois``: ``(n, C, PH, PW)`` in ``out_dtype``."""
    if not _fits_int32(input):  # the kernels' offsets within one image are int32
        raise ValueError(f'roi_align ({name}): a feature map of {tuple(input.shape[1:])} (C, H, W) per image has '
                         f'2**31 values or more')
    out, launch = channels_last_launch(input, rois.shape[0], output_size, block_c, out_dtype)
    if launch is None:
        return out
    feats, block_b, grid = launch
    _, c, h, w = input.shape
    _kernels()[name][grid](feats, rois.contiguous(), out, c, h, w, scale, 0.5 if aligned else 0.0,
                           int(sampling_ratio), int(bool(aligned)), PH=output_size[0], PW=output_size[1],
                           BLOCK_B=block_b, BLOCK_C=block_c, num_warps=num_warps, **options)
    return out


def roi_align_fp16(input: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
                   sampling_ratio: int, aligned: bool, block_c: int = BLOCK_C,
                   num_warps: int = NUM_WARPS) -> Tensor:
    """mmcv's ``roi_align(input, rois, output_size, spatial_scale, sampling_ratio, 'avg', aligned)`` for
    float16 ``input`` and ``rois`` (no gradient): ``(n, C, PH, PW)`` float16.

    Raises:
        ValueError: As :func:`roi_align_f32`.
    """
    scale = float(torch.tensor(spatial_scale, dtype=torch.float16))  # static_cast<scalar_t>(spatial_scale)
    return _launch('fp16', input, rois, output_size, scale, sampling_ratio, aligned, block_c, num_warps,
                   torch.float16)


def roi_align_f32(input: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
                  sampling_ratio: int, aligned: bool, block_c: int = F32_BLOCK_C,
                  num_warps: int = F32_NUM_WARPS) -> Tensor:
    """mmcv's ``roi_align(input.float(), rois.float(), output_size, spatial_scale, sampling_ratio, 'avg',
    aligned)`` (no gradient), computed in float32 from ``input`` of any floating dtype (each value is exact
    in float32) and RoIs of any floating dtype, and returned in ``input``'s dtype: ``(n, C, PH, PW)``.

    Raises:
        ValueError: If one image's feature map has 2**31 values or more (the kernel's offsets are int32).
    """
    # bfloat16 is stored in float32 and rounded by torch (Triton's interpreter truncates to bfloat16)
    out = _launch('f32', input, rois.float(), output_size, float(spatial_scale), sampling_ratio, aligned, block_c,
                  num_warps, torch.float32 if input.dtype == torch.bfloat16 else input.dtype,
                  enable_fp_fusion=False)  # mmcv's CPU arithmetic: no fused multiply-adds
    return out.to(input.dtype)


def readonly_roi_align(layer: nn.Module, input: Tensor, rois: Tensor) -> Optional[Tensor]:
    """``layer(input, rois)`` (an mmcv ``RoIAlign``) in float32 arithmetic by :func:`roi_align_f32`, or ``None``
    where it does not apply: not CUDA, no Triton, features not float32/float16/bfloat16, gradients needed,
    ``pool_mode='max'`` or torchvision's op, 2**31 or more values per image. ``rois`` may be float32 with reduced-precision features."""
    if not gradient_free_cuda(input, rois, (torch.float32, torch.float16, torch.bfloat16), float32_math=True):
        return None
    if layer.pool_mode != 'avg' or getattr(layer, 'use_torchvision', False) or not _fits_int32(input):
        return None
    return roi_align_f32(input, rois, tuple(layer.output_size), float(layer.spatial_scale),
                         int(layer.sampling_ratio), bool(layer.aligned))


def _fast_forward(layer: nn.Module, original: Any, input: Tensor, rois: Tensor) -> Tensor:
    out = run_or_fall_back('roi_align', readonly_roi_align, layer, input, rois)
    return original(input, rois.to(input.dtype)) if out is None else out  # mmcv takes the features' dtype


def fast_roi_align_layers(layers: Sequence[nn.Module], enabled: bool = True):
    """Inside the block (a context manager), mmcv ``RoIAlign`` layers among ``layers`` run
    :func:`readonly_roi_align` where it applies, else their own forward (on RoIs in the features' dtype)."""
    from mmcv.ops import RoIAlign
    return patched_forwards(layers, RoIAlign, _fast_forward, enabled)
