"""The read-only pass's RoIPool on a GPU: mmcv's values, bit for bit, several times faster.

mmcv 2.1's ``roi_pool_forward_cuda_kernel`` runs one thread per output value ``(roi, channel, bin)``: each
thread walks its bin of one channel plane alone (NCHW: neighbouring threads read neighbouring pixels of
different bins) and also writes an ``argmax`` for the backward pass. OHEM's read-only pass feeds it every
candidate RoI (VGG16: ~2,000 per image, 2 images, 512 channels, 7x7 bins: 100 M outputs); on an H100 that
kernel took ~1.5 ms of the pass's ~3.7 ms under fp16 ``--amp``, more than fc6 and fc7 together.

Here the pass:

1. lets **mmcv's own kernel** compute every bin's pixel range: it pools a two-channel map holding each
   pixel's column and row (same dtype as the features, same RoIs, same ``spatial_scale``), and the
   ``argmax`` of the column channel is the bin's first row and last column, that of the row channel its
   last row and first column. So the bin arithmetic (done in the features' dtype, with the compiler's
   rounding and contractions) is mmcv's, not a re-implementation of it. Empty bins give ``argmax = -1``;
   RoIs mmcv skips as malformed leave the buffer's ``-2``. This costs ~2/C of the original kernel.
2. takes each bin's maximum with a Triton kernel over the features in channels-last layout (one program per
   RoI and block of 64 channels; every load is 64 consecutive channels of one pixel for all 49 bins at
   once), with mmcv's rules: NaN is never the maximum, the running maximum starts at ``-FLT_MAX`` in the
   features' dtype, an empty bin or a malformed RoI gives 0. A maximum is exact, so the values equal
   mmcv's bit for bit (``tests/test_fast_roi_pool.py``; the ``cuda`` tests compare with mmcv's kernel).

No ``argmax`` is written and there is no backward: this only ever runs with gradients off (the read-only
pass); anything else (a tensor that needs a gradient, the CPU, no Triton, other dtypes) goes to mmcv's
layer unchanged. bfloat16 features are pooled in float32 and cast back, as
:mod:`mmdet_ohem.compat.mmcv_bf16` does for mmcv's layer.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ['FAILED', 'SETTINGS', 'channels_last_launch', 'fast_roi_pool_layers', 'gradient_free_cuda',
           'on_kernel_device', 'patched_forwards', 'readonly_roi_pool', 'roi_pool_from_bounds', 'run_or_fall_back',
           'triton_available']

BLOCK_C = 64  # channels per program
NUM_WARPS = 4


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of PyTorch on Linux)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


@functools.lru_cache(maxsize=None)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def roi_pool_max(feat_ptr, bounds_ptr, batch_ptr, out_ptr, C, H, W, floor,
                     NB: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)
        cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        bins = tl.arange(0, BLOCK_B)
        bmask = bins < NB
        cmask = cs < C
        # mmcv's argmax of the column map: (first row, last column); of the row map: (last row, first column)
        a0 = tl.load(bounds_ptr + n * 2 * NB + bins, mask=bmask, other=-2)
        a1 = tl.load(bounds_ptr + n * 2 * NB + NB + bins, mask=bmask, other=-2)
        live = a0 >= 0  # -1: an empty bin, -2: a RoI mmcv skips (both give 0)
        y1 = tl.where(live, a0 // W, 0)
        x2 = tl.where(live, a0 % W + 1, 0)
        y2 = tl.where(live, a1 // W + 1, 0)
        x1 = tl.where(live, a1 % W, 0)
        hh = y2 - y1
        ww = x2 - x1
        max_h = tl.max(hh)
        max_w = tl.max(ww)
        b = tl.load(batch_ptr + n).to(tl.int64)
        base = feat_ptr + b * H * W * C
        acc = tl.full((BLOCK_B, BLOCK_C), float('-inf'), tl.float32)
        # while, not range(max_h): Triton's interpreter (the CPU tests) cannot take a reduced tensor as a
        # range bound under NumPy 2
        k = max_h * 0  # an int32 tensor, as the loop carries it
        while k < max_h:
            row_ok = k < hh
            j = max_w * 0
            while j < max_w:
                ok = row_ok & (j < ww)
                pix = ((y1 + k) * W + (x1 + j)).to(tl.int64) * C
                v = tl.load(base + pix[:, None] + cs[None, :], mask=ok[:, None] & cmask[None, :],
                            other=float('-inf')).to(tl.float32)
                acc = tl.maximum(acc, tl.where(v == v, v, float('-inf')))  # NaN is never greater
                j += 1
            k += 1
        acc = tl.maximum(acc, floor)  # mmcv's running maximum starts at -FLT_MAX (in the features' dtype)
        acc = tl.where(live[:, None], acc, 0.0)
        out = out_ptr + n * C * NB + cs[None, :].to(tl.int64) * NB + bins[:, None]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=bmask[:, None] & cmask[None, :])

    return roi_pool_max


@functools.lru_cache(maxsize=None)
def _mmcv_ext():
    """mmcv's compiled ops, as ``mmcv.ops.roi_pool`` loaded them (looked up once, not per call)."""
    return importlib.import_module('mmcv.ops.roi_pool').ext_module


def _floor(dtype: torch.dtype) -> float:
    """mmcv's start value ``-FLT_MAX`` as the features' dtype holds it (-inf in float16)."""
    return float(torch.tensor(-torch.finfo(torch.float32).max, dtype=torch.float32).to(dtype))


def roi_pool_from_bounds(input: Tensor, bounds: Tensor, batch_inds: Tensor, output_size: Tuple[int, int],
                         block_c: int = BLOCK_C, num_warps: int = NUM_WARPS) -> Tensor:
    """Each bin's maximum, given mmcv's bin ranges.

    Args:
        input: ``(B, C, H, W)`` features (float32 or float16, any layout; made channels-last here).
        bounds: ``(n, 2, PH, PW)`` int32: mmcv's ``argmax`` of the column map and of the row map
            (:func:`_bin_bounds`): ``-1`` an empty bin, ``-2`` a RoI mmcv skips.
        batch_inds: ``(n,)`` the RoIs' image indices (any dtype; truncated to int as mmcv does).
        output_size: ``(PH, PW)``.
        block_c, num_warps: The kernel's launch shape (channels per program, a power of 2; warps per program).

    Returns:
        ``(n, C, PH, PW)`` in ``input``'s dtype.
    """
    out, launch = channels_last_launch(input, bounds.shape[0], output_size, block_c)
    if launch is None:
        return out
    feats, block_b, grid = launch
    _, c, h, w = input.shape
    _kernel()[grid](feats, bounds.contiguous(), batch_inds.contiguous(), out, c, h, w, _floor(input.dtype),
                    NB=output_size[0] * output_size[1], BLOCK_B=block_b, BLOCK_C=block_c, num_warps=num_warps)
    return out


_COORDS: 'OrderedDict[tuple, Tensor]' = OrderedDict()  # the last few coordinate maps (they never change)


def _coordinate_map(input: Tensor) -> Tensor:
    """``(B, 2, H, W)`` in ``input``'s dtype: channel 0 each pixel's column, channel 1 its row (cached)."""
    b, _, h, w = input.shape
    key = (b, h, w, input.dtype, input.device)
    coords = _COORDS.get(key)
    if coords is None:
        cols = torch.arange(w, device=input.device, dtype=input.dtype).expand(h, w)
        rows = torch.arange(h, device=input.device, dtype=input.dtype)[:, None].expand(h, w)
        coords = _COORDS[key] = torch.stack([cols, rows])[None].expand(b, 2, h, w).contiguous()
        while len(_COORDS) > 8:  # multi-scale training: a few sizes at a time
            _COORDS.popitem(last=False)
    else:
        _COORDS.move_to_end(key)
    return coords


def _bin_bounds(input: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float) -> Tensor:
    """mmcv's bin ranges for ``rois`` on ``input``'s grid, from mmcv's own kernel (see the module docstring)."""
    coords = _coordinate_map(input)
    shape = (rois.shape[0], 2, *output_size)
    pooled = coords.new_empty(shape)
    argmax = torch.full(shape, -2, dtype=torch.int32, device=input.device)
    _mmcv_ext().roi_pool_forward(coords, rois, pooled, argmax, pooled_height=output_size[0],
                         pooled_width=output_size[1], spatial_scale=spatial_scale)
    return argmax


def on_kernel_device(t: Tensor) -> bool:
    """Whether the read-only pass's Triton kernels run on ``t``'s device: CUDA. (The operator count of
    ``ohem_experiments.benchmark.count_ops --gpu-kernels`` widens it to the CPU, with the launches stubbed.)"""
    return t.is_cuda


def gradient_free_cuda(input: Tensor, rois: Tensor, dtypes: Sequence[torch.dtype], float32_math: bool = False
                       ) -> bool:
    """Whether a read-only Triton path applies to ``input``/``rois``: both on CUDA with Triton, ``input``
    ``(B, C, H, W)`` of one of ``dtypes``, no gradient needed (a training forward runs mmcv's layer, which
    has the backward), and ``rois`` of ``input``'s dtype with feature maps no larger than 2048 px a side (the
    kernels' coordinates must be exact in float16) unless ``float32_math`` (a kernel that computes its
    coordinates in float32: RoIs of any floating dtype, any size)."""
    if not (on_kernel_device(input) and on_kernel_device(rois) and input.dim() == 4 and triton_available()):
        return False
    if input.dtype not in dtypes or not rois.is_floating_point():
        return False
    if torch.is_grad_enabled() and (input.requires_grad or rois.requires_grad):
        return False
    return float32_math or (rois.dtype == input.dtype and max(input.shape[2], input.shape[3]) <= 2048)


def channels_last_launch(input: Tensor, n: int, output_size: Tuple[int, int], block_c: int,
                         out_dtype: Optional[torch.dtype] = None
                         ) -> Tuple[Tensor, Optional[Tuple[Tensor, int, Tuple[int, int]]]]:
    """What the kernels start from: the ``(n, C, PH, PW)`` output (``out_dtype``, default ``input``'s), and
    (``None`` when there is nothing to compute) the features in channels-last layout, the bin lanes (a power
    of 2, at least 16) and the grid (one program per RoI and block of ``block_c`` channels)."""
    c = input.shape[1]
    out = input.new_empty((n, c, *output_size), dtype=out_dtype)
    if n == 0 or c == 0:
        return out, None
    block_b = max(16, 1 << (output_size[0] * output_size[1] - 1).bit_length())
    # NHWC memory in one operator (a copy, none where the features are channels-last already)
    channels_last = input.contiguous(memory_format=torch.channels_last)
    return out, (channels_last, block_b, (n, (c + block_c - 1) // block_c))


def readonly_roi_pool(input: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
                      **launch: int) -> Optional[Tensor]:
    """mmcv's ``roi_pool(input, rois, output_size, spatial_scale)`` without a gradient, or ``None`` when
    this path does not apply (see :func:`gradient_free_cuda`): then the caller runs mmcv's layer. ``launch``: ``block_c``
    and ``num_warps`` of :func:`roi_pool_from_bounds`."""
    if not gradient_free_cuda(input, rois, (torch.float32, torch.float16, torch.bfloat16)):
        return None
    if input.dtype == torch.bfloat16:  # as mmcv_bf16 does for mmcv's layer: float32, cast back
        out = readonly_roi_pool(input.float(), rois.float(), output_size, spatial_scale, **launch)
        return None if out is None else out.to(torch.bfloat16)
    rois = rois.contiguous()
    bounds = _bin_bounds(input.contiguous(), rois, output_size, spatial_scale)
    return roi_pool_from_bounds(input, bounds, rois[:, 0], output_size, **launch)


#: The read-only pass's Triton paths that failed on this machine (name -> the error); mmcv's layers run in
#: their place for the rest of the process (:func:`run_or_fall_back`).
FAILED: Dict[str, str] = {}


#: Per Triton path: the sampler setting that turns it off, and what runs in its place once it failed (both named
#: in the warning).
SETTINGS: Dict[str, Tuple[str, str]] = {'roi_pool': ('fast_roi_pool', "mmcv's layer"),
                                        'roi_align': ('fast_roi_align', "mmcv's layer"),
                                        'roi_align_levels': ('one_launch_levels', 'the per-level path')}


def run_or_fall_back(name: str, fast: Callable[..., Optional[Tensor]], *args: Any) -> Optional[Tensor]:
    """``fast(*args)``: a Triton path's result, or ``None`` where it does not apply and the caller runs mmcv's
    layer. Also ``None`` once path ``name`` failed on this machine: Triton's kernels were compiled and run on
    H100/H200s only, and a compilation or launch error elsewhere (a GPU Triton does not support, a driver
    older than Triton's ptxas, ...) must not stop training. The first failure is logged as a warning naming
    the error, and mmcv's layer (the same values for RoIPool; for ``roi_align_levels`` the per-level path,
    :data:`SETTINGS`) runs from then on. ``name`` is a key of :data:`SETTINGS`. Out-of-memory errors are
    raised as they are: mmcv's layer would need the memory too."""
    if name in FAILED:
        return None
    try:
        return fast(*args)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 (any Triton failure: mmcv's layer from now on)
        FAILED[name] = f'{type(e).__name__}: {e}'
        from mmengine.logging import MMLogger
        setting, instead = SETTINGS[name]
        MMLogger.get_current_instance().warning(
            f'[mmdet_ohem] the read-only pass\'s Triton {name} failed on this machine ({FAILED[name][:500]}); '
            f'{instead} runs in its place from now on (set {setting}=False to skip the attempt)')
        return None


def _fast_forward(layer: nn.Module, original: Any, input: Tensor, rois: Tensor) -> Tensor:
    out = run_or_fall_back('roi_pool', readonly_roi_pool, input, rois, tuple(layer.output_size),
                           float(layer.spatial_scale))
    return original(input, rois) if out is None else out


@contextlib.contextmanager
def patched_forwards(layers: Sequence[nn.Module], layer_type: type, fast: Any, enabled: bool = True
                     ) -> Iterator[None]:
    """Inside the block, the ``layer_type`` layers among ``layers`` run ``fast(layer, original, input, rois)``
    as their forward (with Triton only); the others, and every layer after the block, are left as they were."""
    patched = []
    if enabled and triton_available():
        for layer in layers:
            if isinstance(layer, layer_type) and 'forward' not in vars(layer):
                layer.forward = functools.partial(fast, layer, layer.forward)
                patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.forward


def fast_roi_pool_layers(layers: Sequence[nn.Module], enabled: bool = True):
    """Inside the block (a context manager), mmcv ``RoIPool`` layers among ``layers`` run
    :func:`readonly_roi_pool` where it applies (CUDA, Triton, no gradient), else their own forward. Other
    layers are left alone."""
    from mmcv.ops import RoIPool
    return patched_forwards(layers, RoIPool, _fast_forward, enabled)
