"""The read-only pass's RoIAlign on a GPU (Triton): ``OHEMSampler(fast_roi_align=True)``, the default since
the H200 run of 2026-11-27 (sixteenth session).

mmcv 2.1's ``roi_align_forward_cuda_kernel`` runs one thread per output value ``(roi, channel, bin)`` over
channels-first features, and under fp16 ``--amp`` it computes in half precision. In the H100's fp16
profile of R50-FPN its forwards took ~2.1 ms of device time per iteration, two thirds of them for the
RoIs of OHEM's read-only pass.

:func:`roi_align_f32` (what :func:`readonly_roi_align` runs): one program per RoI and block of channels,
the bins in lanes, each sample's four neighbours loaded as whole channel vectors from channels-last
features. mmcv's arithmetic with ``T = float`` whatever the features' dtype (each float16/bfloat16 value is
exact in float32), on float32 RoIs, the result stored in the features' dtype. Under fp16 autocast mmdet's
``SingleRoIExtractor`` hands the layer RoIs rounded to float16, and mmcv's half kernel computes coordinates,
weights and sums in half precision; the read-only pass's one-read extraction keeps the RoIs in float32 when
this kernel runs (:func:`mmdet_ohem.readonly_pass.extract_levels_one_read`), so its RoI features are a
float32 RoIAlign of the training pass's feature maps. It is launched with ``enable_fp_fusion=False``, so
it computes as mmcv's CPU build does (no fused multiply-adds): bit for bit mmcv's float32 CPU kernel, in
Triton's interpreter and on the H200 (the ``cuda`` test); mmcv's CUDA build lets nvcc fuse, so against it
the values agree to float32 rounding.

Measured on the H200 (2026-11-27): 1.8-4.1x faster than mmcv's fp16 layer on R50-FPN's four levels, its
largest error against mmcv's float32 layer ~1e-3 where mmcv's fp16 layer's is ~1; with it the default
read-only pass under fp16 ``--amp`` mines 99.9-100% of the RoIs an exact float32 pass mines (98.5% with
mmcv's fp16 layer). A half-arithmetic kernel written beside it from mmcv's source was dropped: on the GPU
43% of its values differed from mmcv's compiled fp16 kernel, and nothing used it.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .roi_pool import channels_last_launch, gradient_free_cuda, patched_forwards, run_or_fall_back

__all__ = ['fast_roi_align_layers', 'readonly_roi_align', 'readonly_roi_align_levels', 'roi_align_f32',
           'roi_align_levels_f32']

#: Launch of the kernel: 32 channels, 4 warps, i.e. 16 of the (64 bin lanes x 32 channels) values per
#: thread. ptxas (Triton 3.6's, sm_90a, ``-v``) gives it 212 registers and no spills; 128 x 4 needs 255
#: registers and spills 880 bytes (64 x 4 and 128 x 8: 112 bytes). On the H200 (2026-11-27,
#: ``roi_pool_timing --op align --launches``) 64 x 8 was up to 0.03 ms faster on three of R50-FPN's levels
#: and 32 x 4 was kept.
F32_BLOCK_C = 32
F32_NUM_WARPS = 4


def _fits_int32(input: Tensor) -> bool:
    return input.shape[1] * input.shape[2] * input.shape[3] < 2 ** 31


@functools.lru_cache(maxsize=None)
def _kernels() -> dict:
    from ._roi_align_triton import roi_align_avg_f32, roi_align_levels_avg_f32  # imports triton
    return {'f32': roi_align_avg_f32, 'levels_f32': roi_align_levels_avg_f32}


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


#: Most feature levels :func:`roi_align_levels_f32` takes in one launch (mmdet's FPN configs have 4).
MAX_LEVELS = 5


def roi_align_levels_f32(feats: Sequence[Tensor], rois: Tensor, levels: Tensor, output_size: Tuple[int, int],
                         spatial_scales: Sequence[float], sampling_ratio: int, aligned: bool,
                         block_c: int = F32_BLOCK_C, num_warps: int = F32_NUM_WARPS) -> Tensor:
    """Each RoI aligned on its own feature level, in one launch: row ``i`` of the result is
    ``roi_align_f32(feats[levels[i]], rois[i:i + 1], output_size, spatial_scales[levels[i]], sampling_ratio,
    aligned)``, the same arithmetic, so the same values bit for bit (``(n, C, PH, PW)`` in the features'
    dtype). Each level is copied to channels-last once (as :func:`roi_align_f32` does per call), and the RoIs
    need no sorting, splitting or scattering by level, and no host read of the levels.

    Args:
        feats: The levels' ``(B, C, H_l, W_l)`` maps (1 to :data:`MAX_LEVELS`), one dtype and ``B, C`` for all.
        rois: ``(n, 5)`` RoIs ``(batch, x1, y1, x2, y2)`` of any floating dtype (used in float32).
        levels: ``(n,)`` integer level of each RoI; a RoI whose level is outside ``[0, len(feats))`` gets zeros
            (mmdet's extractor leaves it at zero: ``map_roi_levels`` gives a RoI of negative area a NaN level).
        spatial_scales: Each level's ``spatial_scale``.

    Raises:
        ValueError: If the levels differ in dtype, batch size or channels, there are more than
            :data:`MAX_LEVELS`, ``spatial_scales`` does not have one scale per level, or one image's map has 2**31
            values or more.
    """
    if len(spatial_scales) != len(feats) or not 0 < len(feats) <= MAX_LEVELS:
        raise ValueError(f'roi_align_levels_f32: {len(feats)} feature levels and {len(spatial_scales)} scales (one '
                         f'scale per level, 1 to {MAX_LEVELS} levels)')
    f0 = feats[0]
    for lvl, f in enumerate(feats):
        if f.dim() != 4 or f.dtype != f0.dtype or f.shape[:2] != f0.shape[:2] or f.device != f0.device:
            raise ValueError(f'roi_align_levels_f32: level {lvl} is {tuple(f.shape)} {f.dtype} on {f.device}, '
                             f'level 0 {tuple(f0.shape)} {f0.dtype} on {f0.device} (the levels need one dtype, '
                             f'batch and channels)')
        if not _fits_int32(f):
            raise ValueError(f'roi_align_levels_f32: level {lvl}\'s map of {tuple(f.shape[1:])} (C, H, W) per '
                             f'image has 2**31 values or more')
    out, launch = channels_last_launch(f0, rois.shape[0], output_size, block_c,
                                       torch.float32 if f0.dtype == torch.bfloat16 else f0.dtype)
    if launch is None:
        return out.to(f0.dtype)
    first, block_b, grid = launch
    # channels-last, one copy per level (as roi_align_f32 makes per call; none where the map is channels-last)
    maps = [first] + [f.contiguous(memory_format=torch.channels_last) for f in feats[1:]]
    pad = MAX_LEVELS - len(feats)
    maps, heights, widths = maps + maps[:1] * pad, [f.shape[2] for f in feats], [f.shape[3] for f in feats]
    scales = [float(s) for s in spatial_scales] + [float(spatial_scales[0])] * pad
    _kernels()['levels_f32'][grid](*maps, *heights, *heights[:1] * pad, *widths, *widths[:1] * pad, *scales,
                                   rois.float().contiguous(), levels.contiguous(), out, f0.shape[1],
                                   0.5 if aligned else 0.0, int(sampling_ratio), int(bool(aligned)), L=len(feats),
                                   PH=output_size[0], PW=output_size[1], BLOCK_B=block_b, BLOCK_C=block_c,
                                   num_warps=num_warps, enable_fp_fusion=False)
    return out.to(f0.dtype)


def _kernel_applies(layer: nn.Module, input: Tensor, rois: Tensor) -> bool:
    """Whether the float32 kernel can stand in for mmcv ``RoIAlign`` ``layer`` on ``input``: CUDA with Triton,
    float32/float16/bfloat16 features, no gradient, average mode, mmcv's own op, fewer than 2**31 values per
    image."""
    return (gradient_free_cuda(input, rois, (torch.float32, torch.float16, torch.bfloat16), float32_math=True)
            and layer.pool_mode == 'avg' and not getattr(layer, 'use_torchvision', False) and _fits_int32(input))


def readonly_roi_align_levels(layers: Sequence[nn.Module], feats: Sequence[Tensor], rois: Tensor,
                              levels: Tensor) -> Optional[Tensor]:
    """mmdet's multi-level extraction over mmcv ``RoIAlign`` layers (one per level) by :func:`roi_align_levels_f32`
    (RoI ``i`` through ``layers[levels[i]]`` on ``feats[levels[i]]``), or ``None`` where it does not apply: a layer
    that is not an mmcv ``RoIAlign``, each level as :func:`readonly_roi_align` takes it, and the layers alike but
    for their ``spatial_scale``, the levels of one dtype, batch and channels."""
    from mmcv.ops import RoIAlign
    if len(layers) != len(feats) or not 0 < len(feats) <= MAX_LEVELS:
        return None
    first = layers[0]
    for layer, f in zip(layers, feats):
        if not isinstance(layer, RoIAlign) or not _kernel_applies(layer, f, rois):
            return None
        if (tuple(layer.output_size), int(layer.sampling_ratio), bool(layer.aligned)) != \
                (tuple(first.output_size), int(first.sampling_ratio), bool(first.aligned)):
            return None
        if f.dtype != feats[0].dtype or f.shape[:2] != feats[0].shape[:2]:
            return None
    return roi_align_levels_f32(feats, rois, levels, tuple(first.output_size),
                                [float(layer.spatial_scale) for layer in layers], int(first.sampling_ratio),
                                bool(first.aligned))


def readonly_roi_align(layer: nn.Module, input: Tensor, rois: Tensor) -> Optional[Tensor]:
    """``layer(input, rois)`` (an mmcv ``RoIAlign``) in float32 arithmetic by :func:`roi_align_f32`, or ``None``
    where it does not apply: not CUDA, no Triton, features not float32/float16/bfloat16, gradients needed,
    ``pool_mode='max'`` or torchvision's op, 2**31 or more values per image (:func:`_kernel_applies`). ``rois``
    may be float32 with reduced-precision features."""
    if not _kernel_applies(layer, input, rois):
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
