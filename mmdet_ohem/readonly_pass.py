"""The read-only RoI network: per-RoI losses for every candidate, with no autograd graph.

This is the only place that touches an mmdet RoI head's internals. It runs the head's *current* weights
(the paper's read-only copy shares weights with the trained network) on all candidates under
``torch.no_grad()``, through the head's own code paths: the RoI head's ``_bbox_forward``, the box head's
``get_targets`` and its configured losses with ``reduction_override='none'``. Nothing it computes keeps
activations alive: after it returns, only two ``(n,)`` float tensors remain, and the model's state
(every buffer of the RoI head) is what it was before.

Head variants: one mechanism
----------------------------
mmdet's two-stage heads differ in what ``_bbox_forward`` needs and in what their losses return. The pass
absorbs the differences in four fixed places, never with a case per head class:

1. **Forward inputs.** ``_bbox_forward`` gets exactly the arguments the head's own training step gives
   it. Extra parameters it declares after ``x, rois`` (HTC's and SCNet's ``semantic_feat``, SCNet's
   ``glbctx_feat``) are read, by name, from the RoI head's running ``loss()`` call, together with that
   call's batch features ``x``; the image's RoIs then carry its batch index. A head whose
   ``_bbox_forward`` *requires* inputs that a ``loss()`` call does not hold as such (Sparse R-CNN's
   ``object_feats``) is refused when the sampler is built (:data:`UNSUPPORTED_HEADS` lists the two other
   refusals, heads whose training step does not use a sampler's result as mmdet's samplers return it).
2. **Predictions.** ``cls_score``/``bbox_pred`` may be tensors or tuples of tensors (SABL's bucket
   classification and offsets); each tensor is cast to float32.
3. **Targets.** The box head's own ``get_targets`` (SABL's bucket targets, decoded-box targets, ...) on a
   sampling-result view of the candidates (positives first).
4. **Per-RoI losses** (:func:`per_roi_loss`). Every tensor the box head's ``loss`` returns under a key
   containing ``loss`` is mapped to one value per candidate from its leading dimension: ``n`` rows (or
   ``k * n``, RoI-major, e.g. SABL's four sides) belong to all candidates, ``p`` rows (or ``k * p``) to
   the ``p`` positives (SeesawLoss's ``loss_cls_classes``, mmdet's ``loss_bbox``), a zero scalar (mmdet's
   "no foreground" placeholder) to none. Anything else is a ``ValueError`` naming the loss and its shape.
   Each loss's per-RoI values are then scaled so that their mean over the candidates equals that loss's
   value with the head's training reduction (so SABL's bucket classification, averaged over four rows
   per RoI in training, or GHMC, averaged over RoIs x classes, weigh in the ranking as in the training
   objective). Keys starting with ``loss_bbox`` rank as box regression (``loc``), the others as
   classification (``cls``).

State: :func:`frozen_buffers` restores every buffer of the RoI head after the pass: BatchNorm running
statistics, GHMC's ``acc_sum``, SeesawLoss's ``cum_samples``, ... so that after an OHEM iteration the
model's state is what the training step alone leaves.

Host reads: none for heads that use mmdet's own ``BBoxHead.loss`` (Faster/Mask/Cascade/Double-Head/...):
their losses, per RoI and with the training reduction, are evaluated with the head's loss modules
directly (:func:`_bbox_head_losses_no_sync`: the same calls, minus the ``.item()`` of the average factor
and the ``pos_inds.any()`` test that ``BBoxHead.loss`` makes, neither of which changes a loss value).
Other heads go through their own ``loss`` and may synchronise. mmdet's multi-level ``SingleRoIExtractor``
(one ``nonzero`` per level) reads its level counts once instead (:func:`extract_levels_one_read`, inside
the pass only); other mmdet code called on the way may still synchronise.

Precision: :func:`readonly_autocast` runs the forward by default with at least TF32's precision (TF32
matmuls when training in float32 on CUDA, fp16 under fp16 autocast, float32 under bf16 autocast), or in
the training pass's precision exactly, or in an explicit ``readonly_dtype``, without leaking weight casts
of another dtype into the training pass.

Batches: :meth:`RoIHeadAdapter.readonly_losses_batch` runs the pass for several images at once (one
forward over every row of their candidate lists in chunks of at most ``max_rois``, one target and loss
computation, rows in any order, nothing gathered) for heads on that fast path; each candidate's loss is
the one the per-image pass gives it.

Order: the targets are computed before the forward is queued, and for mmdet's ``BBoxHead`` with its
``DeltaXYWHBBoxCoder`` without host reads (:meth:`RoIHeadAdapter._fast_targets`), so that the host queues
the losses and the selection while the device runs the forward.
"""
from __future__ import annotations

import contextlib
import inspect
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .kernels import fast_roi_align_layers, fast_roi_pool_layers

__all__ = ['RoILosses', 'RoIHeadAdapter', 'BatchRows', 'batch_feature_view', 'frozen_buffers',
           'float32_inputs', 'frozen_norm_stats', 'per_roi_loss', 'readonly_autocast', 'readonly_upcasts',
           'READONLY_BATCH_ROIS', 'READONLY_PRECISIONS',
           'UNSUPPORTED_HEADS']

#: RoI heads the read-only pass refuses at build time (class name -> reason). Matched on the class and
#: its bases, so subclasses are refused too.
UNSUPPORTED_HEADS: Dict[str, str] = {
    'PISARoIHead': ('its training step unpacks (SamplingResult, neg_label_weights) from the sampler, which '
                    "only PISA's ScoreHLRSampler returns (mmdet's RandomSampler fails there too); keep "
                    'ScoreHLRSampler'),
    'MultiInstanceRoIHead': ('CrowdDet assigns several gt boxes per RoI and calls the sampler without '
                             'features, so no read-only pass can be run; keep its MultiInsRandomSampler'),
}

_MAX_FRAMES = 12  # how far up the call stack the RoI head's running loss() is looked for

#: Default cap on the RoIs of one read-only forward when several images are mined together: both images
#: of mmdet's R50-FPN configs (2 x (1000 proposals + gt)) go in one forward, VGG16's 2 x 2000 in two, so
#: that the pass's transient memory stays about what one image's pass needs.
READONLY_BATCH_ROIS = 2560


@dataclass(frozen=True)
class RoILosses:
    """Per-candidate losses from the read-only pass (float32, no grad).

    Attributes:
        cls: ``(n,)`` classification loss of each candidate.
        loc: ``(n,)`` box-regression loss; zero for background candidates.
    """

    cls: Tensor
    loc: Tensor

    def ranking(self, mode: str) -> Tensor:
        """The ranking loss for ``mode`` in ``{'cls', 'loc', 'cls+loc'}``."""
        if mode == 'cls':
            return self.cls
        if mode == 'loc':
            return self.loc
        if mode == 'cls+loc':
            return self.cls + self.loc
        raise ValueError(f"ranking_loss must be one of 'cls', 'loc', 'cls+loc', got {mode!r}")


def submodules(module: nn.Module) -> List[nn.Module]:
    """``list(module.modules())``, the same modules in the same order, without the prefix strings ``modules()``
    builds for ``named_modules()`` (about three times faster; the read-only pass walks the head each call)."""
    out, seen = [], set()

    def walk(m: nn.Module) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        out.append(m)
        for child in m._modules.values():
            if child is not None:
                walk(child)

    walk(module)
    return out


@contextlib.contextmanager
def frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Restores every buffer of ``module`` (and its children) after the block.

    A no-grad forward in training mode still updates BatchNorm running mean/var, and some losses keep
    statistics in buffers that their forward updates (GHMC's ``acc_sum``, SeesawLoss's ``cum_samples``).
    The read-only pass must not change the model, so all buffers are saved and written back (in place,
    so references held elsewhere stay valid; a buffer the block *replaced* is put back as it was).
    """
    saved = [(m, name, buf.detach().clone()) for m in submodules(module)
             for name, buf in m._buffers.items() if buf is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, name, value in saved:
                cur = m._buffers.get(name)
                if cur is not None and cur.shape == value.shape and cur.dtype == value.dtype:
                    cur.copy_(value)
                else:
                    m._buffers[name] = value


#: Former name (it restored BatchNorm statistics only); kept for existing imports.
frozen_norm_stats = frozen_buffers


#: ``readonly_dtype`` values (the sampler's setting) -> what :func:`readonly_autocast` gets.
READONLY_PRECISIONS: Dict[Optional[str], Any] = {None: None, 'tf32': 'tf32', 'fp32': torch.float32,
                                                 'bf16': torch.bfloat16, 'fp16': torch.float16}


@contextlib.contextmanager
def _tf32_matmuls(enabled: bool) -> Iterator[None]:
    """Lets float32 CUDA matmuls use TF32 inside the block (convolutions already do: cuDNN's default)."""
    if not enabled:
        yield
        return
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32 = before


def _outer_autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def readonly_upcasts(device_type: str, dtype: Optional[Union[torch.dtype, str]]) -> bool:
    """Whether :func:`readonly_autocast`, entered in the current (training) context, runs the forward in
    float32 inside the training pass's autocast: then autocast is off in the pass and its inputs (the
    feature maps and extra inputs, reduced precision under autocast) must be cast to float32
    (:func:`float32_inputs`). :func:`readonly_autocast` yields this."""
    outer = _outer_autocast_dtype(device_type)
    if outer is None:
        return False
    return dtype is torch.float32 or (dtype == 'tf32' and outer != torch.float16)


@contextlib.contextmanager
def _float32_forward(device_type: str, tf32: bool) -> Iterator[None]:
    """Autocast off (float32 weights then meet float32 inputs), TF32 matmuls on CUDA if ``tf32``."""
    with torch.autocast(device_type=device_type, enabled=False), _tf32_matmuls(tf32):
        yield


@contextlib.contextmanager
def readonly_autocast(device_type: str, dtype: Optional[Union[torch.dtype, str]]) -> Iterator[bool]:
    """The precision context of the read-only forward; yields :func:`readonly_upcasts` (whether the inputs
    must be cast to float32 inside it), decided on entry in the training context.

    ``dtype=None`` inherits the ambient precision exactly: float32 outside autocast, the training pass's
    autocast dtype under ``--amp``.

    ``'tf32'`` (the sampler's default) keeps at least TF32's precision, a 10-bit mantissa, which is what
    was measured to mine >= 99% of the RoIs an exact float32 pass mines (docs/gpu.md):

    * float32 training: float32, with the matmuls (fc6/fc7) in TF32 on CUDA, as PyTorch already runs
      float32 convolutions by default; exact float32 on the CPU.
    * fp16 autocast (``--amp``): fp16, the training pass's precision (10-bit mantissa, as TF32).
    * bf16 autocast: float32 with TF32 matmuls on CUDA (exact float32 on the CPU). bf16's 7-bit mantissa
      mined 97.3-99.4% on an H100; fp16 would meet the precision but not bf16's range, which is why one
      trains in bf16. The pass turns autocast off and takes its inputs in float32 (the yielded flag).

    ``torch.float32`` (``readonly_dtype='fp32'``): float32 whatever the training precision (under autocast
    as ``'tf32'`` under bf16, without TF32 matmuls unless torch's own setting allows them).

    An explicit reduced dtype autocasts to it. Inside an outer autocast of *another* dtype
    (``readonly_dtype='bf16'`` in fp16 ``--amp`` training) the weight-cast cache is disabled: torch caches
    the casts of the weights by weight, not by dtype, until the outermost autocast exits, so a nested bf16
    region would leave bf16 copies of fc6/fc7 for the fp16 training pass that follows (``RuntimeError:
    mat1 and mat2 must have the same dtype, but got Half and BFloat16``). Without the cache the inner region
    neither stores nor reads cached casts, and the outer one is untouched. A float32 region casts nothing,
    so it neither reads nor fills the cache.
    """
    outer = _outer_autocast_dtype(device_type)
    upcast = readonly_upcasts(device_type, dtype)
    tf32 = dtype == 'tf32' and device_type == 'cuda'
    if dtype is None:
        context = contextlib.nullcontext()
    elif upcast:
        context = _float32_forward(device_type, tf32)
    elif dtype == 'tf32' or dtype is torch.float32:  # float32 training, or 'tf32' under fp16 autocast: fp16
        context = _tf32_matmuls(tf32 and outer is None)
    else:
        context = torch.autocast(device_type=device_type, dtype=dtype, cache_enabled=outer in (None, dtype))
    with context:
        yield upcast


def float32_inputs(value: Any) -> Any:
    """``value`` with every floating tensor in it (a tensor, or a list/tuple/dict of them) cast to float32;
    anything else as it is. For the read-only pass's inputs when it runs in float32 under autocast."""
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, list):
        return [float32_inputs(v) for v in value]
    if isinstance(value, tuple):
        return tuple(float32_inputs(v) for v in value)
    if isinstance(value, dict):
        return {k: float32_inputs(v) for k, v in value.items()}
    return value


#: Per (finest_scale, number of levels, device): the bounds :func:`map_roi_levels` buckets float32 areas by.
_LEVEL_BOUNDS: Dict[Tuple[float, int, str], Tensor] = {}


def _level_bounds(ext: nn.Module, num_levels: int, device: torch.device) -> Tensor:
    """The float32 bounds that put a RoI's area in the level mmdet's ``SingleRoIExtractor.map_roi_levels`` gives it
    on ``device`` (see :func:`map_roi_levels`), found once by bisection over float32 bit patterns with mmdet's own
    method on ``device``: ``t_k``, the smallest area it maps to level ``k`` or above (``k = 1 .. L-1``).

    Returns ``[-d, prev(t_1), ..., prev(t_{L-1}), +inf]`` (``d`` the smallest subnormal, ``prev`` the next float
    below), for ``torch.bucketize(area, bounds) - 1``: the number of bounds strictly below the area, less one.
    """
    key = (float(ext.finest_scale), int(num_levels), str(device))
    bounds = _LEVEL_BOUNDS.get(key)
    if bounds is not None:
        return bounds
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    inf_bits = 0x7F800000  # +inf's bit pattern; the non-negative floats are ordered as their patterns
    ks = torch.arange(1, num_levels, device=device)
    lo = torch.full_like(ks, -1)  # lo: below the answer (-1: none below 0), hi: at or above it
    hi = torch.full_like(ks, inf_bits)

    def levels(bits: Tensor) -> Tensor:  # mmdet's level of a RoI of this area: (0, 0, 0, area, 1)
        area = bits.to(torch.int32).view(torch.float32)
        zeros = torch.zeros_like(area)
        rois = torch.stack([zeros, zeros, zeros, area, zeros + 1], dim=1)
        return SingleRoIExtractor.map_roi_levels(ext, rois, num_levels)

    def edge(value: float) -> Tensor:  # filled on the device: no copy from the host
        return torch.full((1, ), value, dtype=torch.float32, device=device)

    with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, enabled=False):
        for _ in range(32):  # hi - lo halves each step, from 2**31
            mid = (lo + hi) // 2
            at_or_above = levels(mid.clamp(min=0)) >= ks
            hi = torch.where(at_or_above & (hi - lo > 1), mid, hi)
            lo = torch.where(~at_or_above & (hi - lo > 1), mid, lo)
        prev = torch.where(hi > 0, hi - 1, torch.full_like(hi, -0x7FFFFFFF))  # -0x7FFFFFFF: -d's pattern as int32
        inner = prev.to(torch.int32).view(torch.float32)
        bounds = torch.cat([edge(-torch.finfo(torch.float32).smallest_normal * 2.0 ** -23), inner, edge(float('inf'))])
    _LEVEL_BOUNDS[key] = bounds
    return bounds


def _maps_as_mmdet(ext: nn.Module) -> bool:
    """Whether ``ext`` maps RoIs to levels with mmdet's own ``SingleRoIExtractor.map_roi_levels`` (or that wrapped by
    the opt-in :mod:`mmdet_ohem.compat.fp32_roi_levels`, the same on float32 RoIs): no method of its own, no
    other function patched in."""
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    fn = type(ext).map_roi_levels
    if 'map_roi_levels' in vars(ext) or fn is not SingleRoIExtractor.map_roi_levels:
        return False
    if getattr(fn, '_mmdet_ohem_fp32', False):
        fn = fn.__wrapped__
    return fn.__module__ == SingleRoIExtractor.__module__ and fn.__qualname__ == 'SingleRoIExtractor.map_roi_levels'


def map_roi_levels(ext: nn.Module, rois: Tensor, num_levels: int) -> Tensor:
    """mmdet's ``SingleRoIExtractor.map_roi_levels(rois, num_levels)``, the same levels, in fewer operators for
    float32 RoIs (six in place of fourteen; on a GPU each is a launch): ``floor(log2(sqrt(area) / finest_scale +
    1e-6))`` clamped to the levels only rises with the area, so the area is bucketed by the bounds where mmdet's
    own computation on this device steps up (:func:`_level_bounds`). The area is the same product ``w * h``.
    Where mmdet's level is undefined (a NaN or negative area: a NaN level, no level's RoI) the result is out of
    ``[0, num_levels)`` too (-1 or ``num_levels``). Other dtypes, an extractor with a ``map_roi_levels`` of its
    own, or another function patched into mmdet's class, run the extractor's method.

    ``test_map_roi_levels_buckets_the_area_as_mmdets_levels`` (``tests/test_gpu_path.py``) checks it against mmdet's
    at and around every bound, on random areas and on edge cases.
    """
    if rois.dtype != torch.float32 or not _maps_as_mmdet(ext):
        return ext.map_roi_levels(rois, num_levels)
    wh = rois[:, 3:5] - rois[:, 1:3]
    return torch.bucketize(wh.prod(1), _level_bounds(ext, num_levels, rois.device)) - 1


def extract_levels_one_read(ext: nn.Module, feats: Sequence[Tensor], rois: Tensor,
                            roi_scale_factor: Optional[float] = None, float32_rois: bool = False,
                            one_launch: bool = False) -> Tensor:
    """mmdet's ``SingleRoIExtractor.forward`` with one host read for all feature levels.

    mmdet finds each level's RoIs with a ``nonzero`` (a host synchronisation per level, between the
    levels' RoIAlign calls, so the host waits for each level's kernel before queueing the next). Here the
    RoIs are sorted by level on the device, the per-level counts are read back once, and every level's
    RoI layer gets its contiguous slice, all queued back to back; the features are scattered back to
    the RoIs' order. Each RoI's features are computed by the same layer call on the same inputs, so they
    are mmdet's, bit for bit (``test_one_read_extraction_equals_mmdets``). One difference: mmdet adds
    ``0 * sum(...)`` of the parameters and an unused level's features to keep them in a distributed
    autograd graph; the read-only pass has no graph and leaves that out.

    ``float32_rois`` (the read-only pass with ``fast_roi_align``) keeps float32 RoIs where mmdet casts
    them to the features' dtype (``rois.type_as(feats[0])``): the levels are mapped and the RoI layers get
    the coordinates in float32. Under fp16 autocast mmdet's cast rounds the coordinates to 11 significant
    bits, and its level mapping computes the area ``w * h`` in float16, which overflows to inf above 65,504
    px^2 and sends every RoI larger than ~256x256 px to the coarsest level (an exact float32 forward maps
    those up to 448x448 px to the level below). The RoI layers must then take float32 RoIs with
    reduced-precision features (:func:`mmdet_ohem.kernels.roi_align.readonly_roi_align` does; the others
    get the RoIs cast to the features' dtype).

    Args:
        ext: A ``SingleRoIExtractor`` (exactly that class).
        feats, rois, roi_scale_factor: As ``SingleRoIExtractor.forward``.
        float32_rois: See above.
        one_launch: With ``float32_rois``, align every RoI on its level in one launch of
            :func:`mmdet_ohem.kernels.roi_align.roi_align_levels_f32` where
            :func:`~mmdet_ohem.kernels.roi_align.readonly_roi_align_levels` applies (mmcv ``RoIAlign`` layers
            alike but for their scale, CUDA features): no sort, split or scatter by level and **no host read**;
            the same values as the per-level kernel, RoI by RoI. Elsewhere, or if that path failed on this
            machine (:func:`~mmdet_ohem.kernels.roi_pool.run_or_fall_back`), the levels as above.
    """
    num_levels = len(feats)
    if rois.shape[0] == 0 or (num_levels == 1 and not float32_rois):  # mmdet's own path makes no read there
        return type(ext).forward(ext, feats, rois, roi_scale_factor)
    if num_levels == 1:  # mmdet's one-level path without the cast (and, as there, without roi_scale_factor)
        return ext.roi_layers[0](feats[0], rois)
    if not float32_rois:
        rois = rois.type_as(feats[0])
    target_lvls = map_roi_levels(ext, rois, num_levels)
    if roi_scale_factor is not None:
        rois = ext.roi_rescale(rois, roi_scale_factor)
    if one_launch and float32_rois:
        from .kernels.roi_align import readonly_roi_align_levels
        from .kernels.roi_pool import run_or_fall_back
        out = run_or_fall_back('roi_align_levels', readonly_roi_align_levels, list(ext.roi_layers),
                               list(feats), rois, target_lvls)
        if out is not None:
            return out
    order = torch.sort(target_lvls, stable=True).indices
    levels = torch.arange(num_levels, device=rois.device)
    counts = (target_lvls == levels[:, None]).sum(1).tolist()  # the one read
    parts = [ext.roi_layers[i](feats[i], part) for i, part in enumerate(rois[order].split(counts)) if counts[i]]
    roi_feats = feats[0].new_empty((rois.shape[0], ext.out_channels, *ext.roi_layers[0].output_size))
    # Autocast off for the concatenation: the parts share one dtype, but autocast's cat rule refuses parts
    # of the other reduced dtype (bf16 features under an fp16 read-only autocast, or the reverse:
    # "Unexpected floating ScalarType in at::autocast::prioritize").
    with torch.autocast(device_type=rois.device.type, enabled=False):
        roi_feats[order] = parts[0] if len(parts) == 1 else torch.cat(parts)
    return roi_feats


@contextlib.contextmanager
def one_read_extraction(roi_head: nn.Module, stage: Optional[int] = None,
                        fast_roi_pool: bool = False, fast_roi_align: bool = False,
                        one_launch_levels: bool = False) -> Iterator[None]:
    """Inside the block the RoI head's box extractor (that of ``stage`` in a cascade) runs
    :func:`extract_levels_one_read` when it is mmdet's ``SingleRoIExtractor`` itself; anything else runs
    unchanged. With ``fast_roi_pool`` its mmcv ``RoIPool`` layers also run the Triton kernel of
    :mod:`mmdet_ohem.kernels.roi_pool` on a GPU (mmcv's values, bit for bit), and with ``fast_roi_align`` its
    mmcv ``RoIAlign`` layers the float32-arithmetic kernel of :mod:`mmdet_ohem.kernels.roi_align`, on float32
    RoIs mapped to levels in float32 (``float32_rois`` of :func:`extract_levels_one_read`; on CUDA features
    only, where the kernel runs); with ``one_launch_levels`` too, all levels in one launch
    (``one_launch`` of :func:`extract_levels_one_read`). Used by
    the read-only pass only (the training forward keeps mmdet's and mmcv's code)."""
    from mmcv.ops import RoIAlign
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

    from .kernels import roi_pool as roi_pool_kernels
    ext = getattr(roi_head, 'bbox_roi_extractor', None)
    if isinstance(ext, nn.ModuleList):
        ext = ext[stage or 0]
    layers = submodules(ext) if (fast_roi_pool or fast_roi_align) and isinstance(ext, nn.Module) else []
    with fast_roi_pool_layers(layers, fast_roi_pool), fast_roi_align_layers(layers, fast_roi_align):
        if type(ext) is not SingleRoIExtractor or 'forward' in vars(ext):
            yield
            return
        # float32 RoIs where the RoIAlign layers were patched (Triton installed) and the features are on a GPU,
        # where the kernel runs; elsewhere mmcv's layers run on RoIs in the features' dtype, mapped to levels
        # as mmdet maps them (so the CPU's read-only pass is the same whatever fast_roi_align says)
        patched = fast_roi_align and any('forward' in vars(m) for m in layers if isinstance(m, RoIAlign))

        def forward(feats: Sequence[Tensor], rois: Tensor, roi_scale_factor: Optional[float] = None) -> Tensor:
            return extract_levels_one_read(ext, feats, rois, roi_scale_factor,
                                           float32_rois=patched and roi_pool_kernels.on_kernel_device(feats[0]),
                                           one_launch=one_launch_levels)

        ext.forward = forward
        try:
            yield
        finally:
            del ext.forward


def _uses_mmdet_bbox_loss(head: nn.Module) -> bool:
    """Whether ``head.loss`` and ``head.get_targets``/``_get_targets_single`` are mmdet's ``BBoxHead``'s."""
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    return (isinstance(head, BBoxHead) and type(head).loss is BBoxHead.loss
            and type(head).get_targets is BBoxHead.get_targets
            and type(head)._get_targets_single is BBoxHead._get_targets_single)


def _bbox_head_losses_no_sync(head: nn.Module, cls_score: Optional[Tensor], bbox_pred: Optional[Tensor],
                              rois: Tensor, labels: Tensor, label_weights: Optional[Tensor], bbox_targets: Tensor,
                              bbox_weights: Any, num_pos: int, per_roi: bool = True) -> dict:
    """``BBoxHead.loss(..., reduction_override='none')`` for rows ordered positives first, without syncs.

    The targets are ``BBoxHead.get_targets``' (``bbox_targets`` with a row per candidate, or the positives'
    rows only, as :meth:`RoIHeadAdapter._fast_targets` gives them; ``label_weights`` may be ``None`` for
    all ones with a softmax cross-entropy ``loss_cls``; ``bbox_weights`` is not used).

    With ``per_roi=False`` the same losses with the head's training reduction (``BBoxHead.loss`` without
    ``reduction_override``): the average factors are then the number of candidates for both losses, which
    is what ``BBoxHead.loss`` computes for targets from ``BBoxHead._get_targets_single`` (every label
    weight is positive), known here from the shapes.

    The same loss-module calls as mmdet's ``BBoxHead.loss`` with the same inputs, so the same per-RoI
    values, but it needs no host read: the positives are the first ``num_pos`` rows (known from shapes),
    and the average factors, which ``reduction='none'`` ignores, are not computed (mmdet reads one with
    ``.item()``). The accuracy that ``BBoxHead.loss`` adds is not computed either (not a loss). The box
    loss gets no ``weight``: ``BBoxHead._get_targets_single`` sets every positive's box weights to 1, so
    weighting multiplies by 1.0 (exact), and mmdet's regression losses test ``torch.any(weight > 0)`` on
    the host when given weights.
    """
    losses = {}
    reduction = 'none' if per_roi else None
    n = float(max(labels.shape[0], 1))
    if cls_score is not None and cls_score.numel() > 0:
        out = head.loss_cls(cls_score, labels, label_weights, avg_factor=1.0 if per_roi else n,
                            reduction_override=reduction)
        losses.update(out if isinstance(out, dict) else {'loss_cls': out})
    if bbox_pred is not None and num_pos > 0:
        if head.reg_decoded_bbox:
            from mmdet.structures.bbox import get_box_tensor
            bbox_pred = get_box_tensor(head.bbox_coder.decode(rois[:, 1:], bbox_pred))
        pos_pred = _labelled_deltas(head, bbox_pred[:num_pos], labels[:num_pos])
        losses['loss_bbox'] = head.loss_bbox(pos_pred, bbox_targets[:num_pos], None,
                                             avg_factor=labels.shape[0], reduction_override=reduction)
    return losses


def _labelled_deltas(head: nn.Module, bbox_pred: Tensor, labels: Tensor) -> Tensor:
    """``(n, 4)``: each row's box prediction (deltas, or boxes decoded from them) for its label (``labels``
    < ``num_classes``), as ``BBoxHead.loss`` picks them; a class-agnostic head's single set as it is."""
    n = bbox_pred.shape[0]
    if head.reg_class_agnostic:
        return bbox_pred.view(n, -1)
    return bbox_pred.view(n, head.num_classes, -1)[torch.arange(n, device=bbox_pred.device), labels]


def _row_losses(head: nn.Module, cls_score: Optional[Tensor], bbox_pred: Optional[Tensor], labels: Tensor,
                label_weights: Optional[Tensor], deltas: Tensor, is_pos: Tensor) -> RoILosses:
    """Per-row ``cls``/``loc`` losses of mmdet's ``BBoxHead`` (softmax cross-entropy, SmoothL1/L1) with rows in
    any order: :func:`_bbox_head_losses_no_sync`'s loss-module calls on every row, the box loss kept on the
    ``is_pos`` rows (zero elsewhere, whatever it computed there). Each row's values are those the
    positives-first computation gives it (elementwise losses; a row's four box terms summed in the same
    order), with no host read.

    Args:
        labels: ``(n,)`` the positives' gt labels, ``num_classes`` on other rows.
        label_weights: ``None`` (all ones) or ``(n,)``.
        deltas: ``(n, 4)`` box targets, used on the positive rows only.
        is_pos: ``(n,)`` bool.
    """
    n = labels.shape[0]
    if cls_score is not None and cls_score.numel() > 0:
        cls = head.loss_cls(cls_score, labels, label_weights, avg_factor=1.0, reduction_override='none').float()
    else:
        cls = deltas.new_zeros(n, dtype=torch.float32)
    if bbox_pred is None or n == 0:
        return RoILosses(cls=cls, loc=deltas.new_zeros(n, dtype=torch.float32))
    # background rows take any class's deltas (the last one): their loss is dropped
    pred = _labelled_deltas(head, bbox_pred, labels.clamp(max=head.num_classes - 1))
    loc = head.loss_bbox(pred, deltas, None, avg_factor=n, reduction_override='none').float().sum(dim=1)
    return RoILosses(cls=cls, loc=torch.where(is_pos, loc, 0.0))


#: Loss modules whose per-RoI values (``reduction='none'``, summed per RoI) average over the candidates to
#: their training value (mmdet's mean over RoIs, ``avg_factor`` = number of RoIs), so that their training
#: scale (:func:`_training_scale`) is 1: the read-only pass does not compute it for them. Matched on the
#: exact class; softmax cross-entropy only (a sigmoid one averages over RoIs x classes).
MEAN_CONSISTENT_BOX_LOSSES = ('SmoothL1Loss', 'L1Loss')


def _softmax_ce(loss: Any) -> bool:
    """Whether ``loss`` is mmdet's ``CrossEntropyLoss`` in its softmax form (the exact class)."""
    from mmdet.models.losses import CrossEntropyLoss
    return type(loss) is CrossEntropyLoss and not loss.use_sigmoid and not loss.use_mask


def _mean_consistent(head: nn.Module) -> bool:
    """Whether ``head``'s losses are all :data:`MEAN_CONSISTENT_BOX_LOSSES` / softmax cross-entropy."""
    from mmdet.models import losses as mmdet_losses
    cls, box = getattr(head, 'loss_cls', None), getattr(head, 'loss_bbox', None)
    cls_ok = cls is None or _softmax_ce(cls)
    box_ok = box is None or any(type(box) is getattr(mmdet_losses, name, None) for name in MEAN_CONSISTENT_BOX_LOSSES)
    return cls_ok and box_ok


_CODER_CONSTANTS: 'weakref.WeakKeyDictionary[Any, dict]' = weakref.WeakKeyDictionary()


def _coder_constants(coder: Any, device: torch.device) -> Tuple[Tensor, Tensor]:
    """A box coder's ``means``/``stds`` as ``(1, 4)`` float32 tensors on ``device``, copied there once per
    coder, device and value (the copy from the host is a synchronisation on a GPU)."""
    key = (str(device), tuple(coder.means), tuple(coder.stds))
    per_coder = _CODER_CONSTANTS.setdefault(coder, {})
    if key not in per_coder:
        per_coder.clear()
        per_coder[key] = tuple(torch.tensor(v, dtype=torch.float32, device=device).unsqueeze(0)
                               for v in (coder.means, coder.stds))
    return per_coder[key]


def _bbox2delta(proposals: Tensor, gt: Tensor, means: Tensor, stds: Tensor) -> Tensor:
    """mmdet's ``bbox2delta`` with ``means``/``stds`` already ``(1, 4)`` device tensors (mmdet copies them
    from Python to the device on every call, a host sync). The same float operations on each element, so
    the same values, on proposals and gt boxes, x and y at once (fewer kernel launches)."""
    boxes = torch.stack([proposals, gt]).float().view(2, proposals.shape[0], 2, 2)  # (proposal/gt, n, corner, xy)
    lo, hi = boxes.unbind(2)
    (p_ctr, g_ctr), (p_wh, g_wh) = ((lo + hi) * 0.5).unbind(0), (hi - lo).unbind(0)
    return torch.cat([(g_ctr - p_ctr) / p_wh, torch.log(g_wh / p_wh)], dim=1).sub_(means).div_(stds)


def per_roi_loss(key: str, value: Tensor, n: int, num_pos: int) -> Optional[Tensor]:
    """One value per candidate from an elementwise (``reduction='none'``) loss; ``None`` if it has none.

    Candidates are ordered positives first, so a loss over the ``num_pos`` positives fills rows
    ``[:num_pos]``. See the module docstring (point 4) for the rule.

    Args:
        key: The loss name (for the error message).
        value: The loss as the box head returned it.
        n: Number of candidates.
        num_pos: Number of positive candidates (the first ``num_pos``).

    Returns:
        ``(n,)`` float32 tensor, or ``None`` for mmdet's zero-scalar "no foreground" placeholder.

    Raises:
        ValueError: If the shape fits neither all candidates nor the positives, or a non-zero scalar
            came back (a loss that ignores ``reduction_override``).
    """
    value = value.float()
    if value.dim() == 0:
        if num_pos == 0 or float(value) == 0.0:
            return None
        raise ValueError(f"read-only pass: loss {key!r} returned a scalar ({float(value)}) with "
                         f"reduction_override='none'; OHEM needs one loss per RoI")
    rows = value.shape[0]
    if rows == n and value.dim() == 1:
        return value  # already one value per candidate
    for span in (n, num_pos):  # one row per candidate / per positive, or k rows each (RoI-major)
        if span and rows % span == 0:  # rows == num_pos < n is never a multiple of n
            row = value.reshape(span, -1).sum(dim=1)
            return row if span == n else torch.nn.functional.pad(row, (0, n - span))  # zeros for negatives
    if rows == 0:
        return value.new_zeros(n)
    raise ValueError(f'read-only pass: loss {key!r} has shape {tuple(value.shape)}, which matches neither '
                     f'the {n} candidates nor their {num_pos} positives')


def _training_scale(trained: Any, row: Tensor) -> Tensor:
    """Factor that makes ``row.mean()`` equal the loss's training value ``trained`` (point 4).

    Losses normalise differently (mmdet's box loss by the number of RoIs, SABL's bucket classification
    by four rows per RoI, GHMC by RoIs x classes); this keeps each loss's weight in the ranking what it
    is in the training objective. 1 where either side is zero or not finite, or where the factor is 1
    up to rounding (mmdet's standard losses), so that those rankings are exactly the unscaled ones.
    """
    if not isinstance(trained, Tensor) or trained.numel() != 1:
        return row.new_ones(())
    total = row.sum()
    scale = trained.float().reshape(()) * row.numel() / total
    usable = torch.isfinite(scale) & (total != 0) & ((scale - 1).abs() > 1e-4)  # 1 up to rounding: exactly 1
    return torch.where(usable, scale, scale.new_ones(()))


def _roi_losses(losses: dict, trained: dict, rois: Tensor, n: int, num_pos: int) -> RoILosses:
    """Point 4: the box head's losses (``reduction='none'``) as per-RoI ``cls``/``loc`` rows, each loss scaled
    to its training weight when ``trained`` holds its training value; keys starting with ``loss_bbox`` are
    ``loc``, other keys containing ``loss`` are ``cls`` (accuracies are skipped)."""
    cls = loc = None
    for key, value in losses.items():
        if not isinstance(value, Tensor) or 'loss' not in key:
            continue  # accuracies
        row = per_roi_loss(key, value, n, num_pos)
        if row is None:
            continue
        if key in trained:
            row = row * _training_scale(trained[key], row)
        if key.startswith('loss_bbox'):
            loc = row if loc is None else loc + row
        else:
            cls = row if cls is None else cls + row
    cls = rois.new_zeros(n, dtype=torch.float32) if cls is None else cls
    loc = rois.new_zeros(n, dtype=torch.float32) if loc is None else loc
    return RoILosses(cls=cls, loc=loc)


def _as_float(pred: Any) -> Any:
    """A prediction (tensor, tuple/list of tensors, or None) in float32."""
    if isinstance(pred, Tensor):
        return pred.float()
    if isinstance(pred, (tuple, list)):
        return type(pred)(_as_float(p) for p in pred)
    return pred


@dataclass
class _CandidateView:
    """The attributes of an mmdet ``SamplingResult`` that box heads' ``get_targets`` read."""

    pos_priors: Tensor
    neg_priors: Tensor
    pos_gt_bboxes: Tensor
    pos_gt_labels: Tensor

    @property
    def pos_bboxes(self) -> Tensor:
        return self.pos_priors

    @property
    def neg_bboxes(self) -> Tensor:
        return self.neg_priors

    @property
    def priors(self) -> Tensor:
        return torch.cat([self.pos_priors, self.neg_priors])

    bboxes = priors


@dataclass(frozen=True)
class BatchRows:
    """Several images' rows for :meth:`RoIHeadAdapter.readonly_losses_batch`, concatenated image after image:
    every prior of each image in the order of its candidate list, whatever the assigner made of it (the
    caller leaves the rows that are no candidates out of the selection, so no host read gathers the
    candidates first).

    Attributes:
        feats: Per image its feature maps, each ``(1, C, H, W)`` (mmdet's ``lvl[i][None]``).
        sizes: Per image its number of rows.
        boxes: ``(n, 4)`` boxes, each one RoIAlign/RoIPool can take (the caller replaces unusable ones).
        gt_boxes: ``(n, 4)`` the gt box assigned to each positive row; any values elsewhere.
        labels: ``(n,)`` the gt label of each positive row, the head's ``num_classes`` (background)
            elsewhere.
        is_pos: ``(n,)`` bool, the positive rows.
    """

    feats: Sequence[Sequence[Tensor]]
    sizes: Sequence[int]
    boxes: Tensor
    gt_boxes: Tensor
    labels: Tensor
    is_pos: Tensor


def batch_feature_view(per_image: Sequence[Sequence[Tensor]]) -> Optional[Tuple[list, list]]:
    """The batch feature maps that per-image maps are slices of, and each image's index in them.

    mmdet's RoI heads hand a sampler ``[lvl[i][None] for lvl in x]``: views into the batch tensors. For
    such views this rebuilds, without copying, one ``(k, C, H, W)`` view per level that covers every given
    image, so that one RoI forward serves all of them.

    Args:
        per_image: For each image its feature maps, each ``(1, C, H, W)``.

    Returns:
        ``(levels, index)``, or ``None`` when the maps are not slices of common batch tensors (then the
        caller concatenates them).
    """
    fast = _batch_bases(per_image)
    if fast is not None:
        return fast
    first = per_image[0]
    index: Optional[list] = None
    levels = []
    for lvl in range(len(first)):
        maps = [feats[lvl] for feats in per_image]
        f0 = maps[0]
        if f0.dim() != 4 or f0.shape[0] != 1 or f0.stride(0) <= 0:
            return None
        ptr, step = f0.untyped_storage().data_ptr(), f0.stride(0)
        if any(f.untyped_storage().data_ptr() != ptr or f.shape != f0.shape or f.stride() != f0.stride()
               or f.dtype != f0.dtype for f in maps):
            return None
        lo = min(f.storage_offset() for f in maps)
        if any((f.storage_offset() - lo) % step for f in maps):
            return None
        idx = [(f.storage_offset() - lo) // step for f in maps]
        if index is not None and idx != index:
            return None
        index = idx
        try:
            levels.append(f0.as_strided((max(idx) + 1, ) + tuple(f0.shape[1:]), f0.stride(), lo))
        except RuntimeError:  # outside the storage: not slices of one batch after all
            return None
    return (levels, index) if index is not None else None


def _batch_bases(per_image: Sequence[Sequence[Tensor]]) -> Optional[Tuple[list, list]]:
    """:func:`batch_feature_view` where every map is ``lvl[i][None]`` of a batch tensor ``lvl`` (mmdet's RoI heads'
    maps: views whose ``_base`` is ``lvl`` itself), read off the views' bases with no storage lookups and, where
    the images are all of the batch, no new view; else ``None``."""
    first, levels, index = per_image[0], [], None
    for lvl, f0 in enumerate(first):
        base = f0._base
        if base is None or base.dim() != 4 or f0.shape[0] != 1 or base.shape[1:] != f0.shape[1:] \
                or base.stride() != f0.stride() or base.stride(0) <= 0 or base.dtype != f0.dtype:
            return None
        step, start = base.stride(0), base.storage_offset()
        idx = []
        for feats in per_image:
            f = feats[lvl]
            off = f.storage_offset() - start
            if f._base is not base or f.shape != f0.shape or f.stride() != f0.stride() or off % step \
                    or not 0 <= off // step < base.shape[0]:
                return None
            idx.append(off // step)
        if index is not None and idx != index:
            return None
        index = idx
        levels.append(base)
    if index is None:
        return None
    lo, hi = min(index), max(index) + 1
    if (lo, hi) != (0, first[0]._base.shape[0]):  # a part of the batch: the images from lo to hi - 1
        levels, index = [f[lo:hi] for f in levels], [i - lo for i in index]
    return levels, index


_SCALARS = (bool, int, float, str, type(None))
#: Per loss module: its attribute names, and the public ones sorted (:func:`loss_settings`).
_PUBLIC_NAMES: 'weakref.WeakKeyDictionary[nn.Module, Tuple[frozenset, List[str]]]' = weakref.WeakKeyDictionary()


def loss_settings(module: Optional[nn.Module]) -> tuple:
    """A loss module's class and public settings that are numbers, strings or tuples/lists of them (e.g.
    ``SmoothL1Loss``'s ``beta`` and ``loss_weight``, ``CrossEntropyLoss``'s ``class_weight``), as a hashable
    tuple: what a CUDA graph of its forward has baked in. ``()`` for ``None``."""
    if module is None:
        return ()
    attrs = vars(module)
    names = _PUBLIC_NAMES.get(module)
    if names is None or attrs.keys() != names[0]:  # read every call; the names once per set of attributes
        names = (frozenset(attrs), sorted(n for n in attrs if not n.startswith('_') and n != 'training'))
        _PUBLIC_NAMES[module] = names
    items = []
    for name in names[1]:
        value = attrs[name]
        if isinstance(value, (list, tuple)) and all(isinstance(v, _SCALARS) for v in value):
            value = tuple(value)
        elif not isinstance(value, _SCALARS):
            continue
        items.append((name, value))
    return (type(module).__qualname__, ) + tuple(items)


class RowRanking:
    """A :attr:`~RoIHeadAdapter.batchable` head's read-only targets, per-row losses and ranking loss as one
    function of per-row tensors (a :class:`~mmdet_ohem.selection.RankingFront`): no host read, shapes fixed
    by the inputs', so that a CUDA graph can capture it with the selection
    (:func:`~mmdet_ohem.selection.select_hard_examples_front`). The same operations as
    :meth:`RoIHeadAdapter.readonly_losses_batch`'s targets and losses, so the same values.

    What it bakes in beyond the inputs (``key``): the head, the ranking mode, ``pos_weight``, the box
    coder's means and stds, and the loss modules' settings as they are now (:func:`loss_settings`): a captured
    graph holds the Python numbers its kernels were launched with, and some heads change them during
    training (Dynamic R-CNN's ``DynamicRoIHead`` sets ``loss_bbox.beta`` every 100 iterations), so a change
    makes a new key, and a new graph, instead of a replay with the old value.
    """

    def __init__(self, adapter: 'RoIHeadAdapter', mode: str) -> None:
        if mode not in ('cls', 'loc', 'cls+loc'):
            raise ValueError(f"ranking_loss must be one of 'cls', 'loc', 'cls+loc', got {mode!r}")
        self.head, self.mode, self.pos_weight = adapter.bbox_head, mode, adapter.pos_weight
        coder = self.head.bbox_coder
        self.key = ('RowRanking', id(self.head), mode, self.pos_weight, tuple(coder.means), tuple(coder.stds),
                    loss_settings(getattr(self.head, 'loss_cls', None)),
                    loss_settings(getattr(self.head, 'loss_bbox', None)))

    def deltas(self, boxes: Tensor, gt_boxes: Tensor) -> Tensor:
        """The box targets, in the boxes' dtype as mmdet's (fp16 proposals under --amp give fp16 targets)."""
        means, stds = _coder_constants(self.head.bbox_coder, boxes.device)
        self._constants = (means, stds)  # held: a CUDA graph that captured this front reads their memory
        return _bbox2delta(boxes, gt_boxes, means, stds).to(boxes.dtype)

    @staticmethod
    def rows(cls_score: Optional[Tensor], bbox_pred: Optional[Tensor], batch: 'BatchRows') -> Dict[str, Tensor]:
        """The named per-row inputs (``(R, ...)``) from the read-only outputs and the batch's rows."""
        rows = {'boxes': batch.boxes, 'gt_boxes': batch.gt_boxes, 'labels': batch.labels.long(),
                'is_pos': batch.is_pos}
        if cls_score is not None:
            rows['cls_score'] = cls_score
        if bbox_pred is not None:
            rows['bbox_pred'] = bbox_pred
        return rows

    def losses(self, rows: Dict[str, Tensor], deltas: Optional[Tensor] = None) -> RoILosses:
        """Per-row ``cls`` / ``loc`` losses (``deltas``: the targets, if already computed)."""
        boxes, is_pos = rows['boxes'], rows['is_pos']
        if deltas is None:
            deltas = self.deltas(boxes, rows['gt_boxes'])
        label_weights = None if self.pos_weight == 1.0 else \
            torch.where(is_pos, boxes.new_full((), self.pos_weight), boxes.new_ones(()))
        with torch.autocast(device_type=boxes.device.type, enabled=False):
            return _row_losses(self.head, rows.get('cls_score'), rows.get('bbox_pred'), rows['labels'], label_weights,
                               deltas, is_pos)

    def __call__(self, rows: Dict[str, Tensor]) -> Tensor:
        """The ranking loss of each row."""
        return self.losses(rows).ranking(self.mode)


class RoIHeadAdapter:
    """Uniform access to the box branch of an mmdet RoI head (standard, shared-head, cascade stage).

    Args:
        roi_head: The RoI head the sampler was built for (mmdet passes it as ``context``).
        stage: Cascade stage index, or ``None`` for single-stage RoI heads.

    Raises:
        TypeError: If ``roi_head`` has no box branch (e.g. an RPN or one-stage head), is one of
            :data:`UNSUPPORTED_HEADS`, or its ``_bbox_forward`` requires inputs the pass cannot supply;
            the message names the head.
    """

    def __init__(self, roi_head: nn.Module, stage: Optional[int] = None) -> None:
        missing = [a for a in ('bbox_head', '_bbox_forward') if not hasattr(roi_head, a)]
        if roi_head is None or missing:
            name = type(roi_head).__name__ if roi_head is not None else 'None'
            raise TypeError(
                f'OHEMSampler mines RoIs for the box branch of a two-stage RoI head, but it was built for '
                f'{name}, which has no {" / ".join(missing) or "RoI head"}. Put it under '
                f'train_cfg.rcnn.sampler of a two-stage detector (an RPN or one-stage head has no RoI '
                f'network to run a read-only pass with); for hard-anchor mining in an RPN use '
                f"train_cfg.rpn.sampler=dict(type='RPNOHEMSampler').")
        name = type(roi_head).__name__
        for cls in type(roi_head).__mro__:
            if cls.__name__ in UNSUPPORTED_HEADS:
                raise TypeError(f'OHEMSampler does not support {name}: {UNSUPPORTED_HEADS[cls.__name__]}')
        self.roi_head = roi_head
        self.stage = stage
        self.extra_inputs = self._extra_forward_inputs()
        #: The read-only pass's mmcv RoIPool layers run mmdet_ohem.kernels.roi_pool on a GPU (the sampler's
        #: ``fast_roi_pool``).
        self.fast_roi_pool = True
        #: The read-only pass's mmcv RoIAlign layers run mmdet_ohem.kernels.roi_align on a GPU (the sampler's
        #: ``fast_roi_align``).
        self.fast_roi_align = True
        #: With ``fast_roi_align``, mmdet's multi-level ``SingleRoIExtractor`` aligns every level's RoIs in one
        #: launch with no host read (:func:`extract_levels_one_read`'s ``one_launch``; the sampler's
        #: ``one_launch_levels``, on by default).
        self.one_launch_levels = True

    def _extra_forward_inputs(self) -> Tuple[str, ...]:
        """Names of the optional inputs ``_bbox_forward`` declares after ``[stage,] x, rois``."""
        params = list(inspect.signature(self.roi_head._bbox_forward).parameters.values())
        params = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        extra = params[3 if self.stage is not None else 2:]
        required = [p.name for p in extra if p.default is p.empty]
        if required:
            raise TypeError(
                f'OHEMSampler does not support {type(self.roi_head).__name__}: its _bbox_forward requires '
                f'{", ".join(required)} besides the RoI features, which the read-only pass cannot supply '
                f'(its RoIs are not proposals ranked by loss); keep the config\'s own sampler there')
        return tuple(p.name for p in extra)

    @property
    def bbox_head(self) -> nn.Module:
        """The box head of this stage."""
        head = self.roi_head.bbox_head
        return head[self.stage] if self.stage is not None else head

    @property
    def train_cfg(self):
        """The R-CNN train config of this stage (has ``pos_weight``)."""
        cfg = self.roi_head.train_cfg
        return cfg[self.stage] if self.stage is not None else cfg

    @property
    def pos_weight(self) -> float:
        """The classification weight of positives, as ``BBoxHead`` reads ``pos_weight`` (<= 0: 1.0)."""
        return 1.0 if self.train_cfg.pos_weight <= 0 else float(self.train_cfg.pos_weight)

    def image_extent(self, feats: Sequence[Tensor]) -> Optional[float]:
        """The padded input's longer side in pixels, from the first feature map and its stride.

        ``None`` when the RoI extractor does not say its strides.
        """
        ext = getattr(self.roi_head, 'bbox_roi_extractor', None)
        if isinstance(ext, nn.ModuleList):
            ext = ext[self.stage or 0]
        strides = getattr(ext, 'featmap_strides', None)
        if not strides or not feats:
            return None
        return float(max(feats[0].shape[-2:])) * float(strides[0])

    def _running_loss_inputs(self, feats: Sequence[Tensor]) -> Tuple[Sequence[Tensor], int, dict]:
        """Batch features, this image's batch index and the extra inputs from the head's running loss().

        Raises:
            RuntimeError: If the sampler was not called from the RoI head's ``loss()`` (the extra inputs
                exist only there) or the image's features are not a slice of that call's ``x``.
        """
        frame = sys._getframe(1)
        try:
            for _ in range(_MAX_FRAMES):
                if frame is None:
                    break
                local = frame.f_locals
                if local.get('self') is self.roi_head and 'x' in local:
                    batch_x = local['x']
                    f0 = feats[0]
                    for j in range(batch_x[0].shape[0]):
                        if batch_x[0][j].data_ptr() == f0.data_ptr() and batch_x[0][j].shape == f0.shape[1:]:
                            return batch_x, j, {k: local.get(k) for k in self.extra_inputs}
                    break
                frame = frame.f_back
        finally:
            del frame
        raise RuntimeError(
            f'OHEMSampler: {type(self.roi_head).__name__}._bbox_forward takes {", ".join(self.extra_inputs)}, '
            f'which the read-only pass reads from the RoI head\'s running loss(); call the sampler from '
            f'there with feats=[level[i][None] for level in x], as mmdet\'s heads do')

    def bbox_forward(self, feats: Sequence[Tensor], rois: Tensor, upcast: bool = False) -> dict:
        """The head's own ``_bbox_forward`` (with the stage for cascades, and its extra inputs).

        Args:
            feats: The image's feature maps, each ``(1, C, H, W)``.
            rois: ``(m, 5)`` RoIs of this image (batch index 0).
            upcast: Cast the feature maps and extra inputs to float32 first (a float32 pass under autocast:
                what :func:`readonly_autocast` yields).
        """
        extra: dict = {}
        if self.extra_inputs:
            feats, index, extra = self._running_loss_inputs(feats)
            rois = torch.cat([rois.new_full((rois.shape[0], 1), index), rois[:, 1:]], dim=1)
        if upcast:
            feats, extra = float32_inputs(feats), float32_inputs(extra)
        if self.stage is not None:
            return self.roi_head._bbox_forward(self.stage, feats, rois, **extra)
        return self.roi_head._bbox_forward(feats, rois, **extra)

    def _fast_targets(self, pos_priors: Tensor, neg_priors: Tensor, pos_gt_bboxes: Any,
                      pos_gt_labels: Tensor) -> Optional[tuple]:
        """The targets :func:`_bbox_head_losses_no_sync` needs, without host reads, for mmdet's ``BBoxHead``
        with its ``DeltaXYWHBBoxCoder``; ``None`` for any other box coder or ``reg_decoded_bbox``.

        Returns:
            ``(labels, label_weights, pos_deltas, None)``: ``BBoxHead.get_targets``' labels, its label
            weights (``None`` where every weight is 1, i.e. ``pos_weight`` <= 0 or 1, and the head's
            ``loss_cls`` is softmax cross-entropy, which does without: multiplying by 1.0 changes no loss;
            other losses such as GHMC read the weights), and its box targets of the positives (the negatives' rows are zeros with
            zero box weights there, and the positives' box weights are ones, which the losses do not
            need). The same values, bit for bit (``test_fast_targets_equal_mmdets_get_targets``).
        """
        from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
        from mmdet.structures.bbox import get_box_tensor

        head = self.bbox_head
        coder = getattr(head, 'bbox_coder', None)
        if type(coder) is not DeltaXYWHBBoxCoder or head.reg_decoded_bbox:
            return None
        means, stds = _coder_constants(coder, pos_priors.device)
        num_pos, num_neg = pos_priors.shape[0], neg_priors.shape[0]
        labels = torch.cat([pos_gt_labels.long(), pos_gt_labels.new_full((num_neg, ), head.num_classes,
                                                                          dtype=torch.long)])
        pos_weight = self.pos_weight
        label_weights = None
        if pos_weight != 1.0 or not _softmax_ce(head.loss_cls):  # in the priors' dtype, as mmdet's
            label_weights = pos_priors.new_ones(num_pos + num_neg)
            if pos_weight != 1.0:
                label_weights[:num_pos] = pos_weight
        # In the priors' dtype, as mmdet's (fp16 proposals under --amp give fp16 targets there too).
        deltas = _bbox2delta(pos_priors, get_box_tensor(pos_gt_bboxes), means, stds).to(pos_priors.dtype)
        return labels, label_weights, deltas, None

    @property
    def batchable(self) -> bool:
        """Whether :meth:`readonly_losses_batch` serves this head: mmdet's ``BBoxHead`` losses and targets
        (softmax cross-entropy, SmoothL1/L1, ``DeltaXYWHBBoxCoder`` without ``reg_decoded_bbox``) and a
        ``_bbox_forward`` without extra inputs. Other heads are mined one image at a time."""
        from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
        head = self.bbox_head
        return (not self.extra_inputs and _uses_mmdet_bbox_loss(head) and _mean_consistent(head)
                and type(getattr(head, 'bbox_coder', None)) is DeltaXYWHBBoxCoder and not head.reg_decoded_bbox)

    def readonly_losses_batch(self, batch: BatchRows,
                              autocast_dtype: Optional[Union[torch.dtype, str]] = None,
                              max_rois: int = READONLY_BATCH_ROIS) -> RoILosses:
        """:meth:`readonly_losses` for several images at once, for :attr:`batchable` heads, on every row.

        One RoI forward over all images' rows (in chunks of at most ``max_rois`` RoIs, on the batch feature
        maps the images' maps are slices of), one target and one loss computation, no host read. Each
        positive or negative row gets the loss the per-image pass gives that candidate (the same operations
        on the same values; only the matmuls' batch size differs, which may change the last bits on some
        hardware); rows that are no candidates get a loss too, which the caller ignores.

        Returns:
            :class:`RoILosses` over all rows of ``batch``, in its order.

        Raises:
            TypeError: If the head is not :attr:`batchable`.
        """
        self._require_batchable('readonly_losses_batch')
        front = RowRanking(self, 'cls+loc')
        with torch.no_grad(), frozen_buffers(self.roi_head):
            # Targets first (no host reads): the host then queues the losses and the selection while the
            # device runs the forward. In the boxes' dtype, as mmdet's (fp16 proposals under --amp).
            deltas = front.deltas(batch.boxes, batch.gt_boxes)
            cls_score, bbox_pred = self._readonly_outputs(batch, autocast_dtype, max_rois)
            return front.losses(front.rows(cls_score, bbox_pred, batch), deltas)

    def readonly_forward_batch(self, batch: BatchRows,
                               autocast_dtype: Optional[Union[torch.dtype, str]] = None,
                               max_rois: int = READONLY_BATCH_ROIS) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """The forward of :meth:`readonly_losses_batch` alone: ``(cls_score, bbox_pred)`` in float32 over all
        rows of ``batch`` (``None`` where the head has no such output or there are no rows); the losses are
        then :class:`RowRanking`'s (e.g. inside a CUDA graph with the selection).

        Raises:
            TypeError: If the head is not :attr:`batchable`.
        """
        self._require_batchable('readonly_forward_batch')
        with torch.no_grad(), frozen_buffers(self.roi_head):
            return self._readonly_outputs(batch, autocast_dtype, max_rois)

    def _require_batchable(self, caller: str) -> None:
        if not self.batchable:
            raise TypeError(f'{caller}: {type(self.roi_head).__name__} / {type(self.bbox_head).__name__} is mined '
                            f'one image at a time')

    def _readonly_outputs(self, batch: BatchRows, autocast_dtype: Optional[Union[torch.dtype, str]],
                          max_rois: int) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        view = batch_feature_view(batch.feats)
        if view is None:  # not slices of one batch: stack them (a copy)
            view = ([torch.cat([f[lvl] for f in batch.feats]) for lvl in range(len(batch.feats[0]))],
                    list(range(len(batch.feats))))
        feats, index = view
        boxes = batch.boxes
        n = boxes.shape[0]
        if n == 0:  # no rows at all (no proposals, no gt): nothing to run
            return None, None
        batch_col = torch.cat([boxes.new_full((k, 1), i) for k, i in zip(batch.sizes, index)])
        rois = torch.cat([batch_col, boxes], dim=1)
        step = max(1, int(max_rois))
        cls_parts, box_parts = [], []
        with readonly_autocast(rois.device.type, autocast_dtype) as upcast, \
                one_read_extraction(self.roi_head, self.stage, self.fast_roi_pool, self.fast_roi_align,
                                    self.one_launch_levels):
            if upcast:
                feats = float32_inputs(feats)  # once for all chunks
            for r in range(0, n, step):
                chunk = rois[r:r + step]
                out = self.roi_head._bbox_forward(self.stage, feats, chunk) if self.stage is not None \
                    else self.roi_head._bbox_forward(feats, chunk)
                cls_parts.append(out.get('cls_score'))
                box_parts.append(out.get('bbox_pred'))
                del out  # drop this chunk's RoI features before the next chunk
        cls_score = _as_float(cls_parts[0] if len(cls_parts) == 1 else torch.cat(cls_parts)) \
            if cls_parts and cls_parts[0] is not None else None
        bbox_pred = _as_float(box_parts[0] if len(box_parts) == 1 else torch.cat(box_parts)) \
            if box_parts and box_parts[0] is not None else None
        return cls_score, bbox_pred

    def row_ranking(self, mode: str) -> 'RowRanking':
        """This head's :class:`RowRanking` for ranking loss ``mode`` (``'cls'``, ``'loc'``, ``'cls+loc'``)."""
        return RowRanking(self, mode)

    def readonly_losses(self,
                        feats: Sequence[Tensor],
                        pos_priors: Tensor,
                        pos_gt_bboxes: Tensor,
                        pos_gt_labels: Tensor,
                        neg_priors: Tensor,
                        autocast_dtype: Optional[Union[torch.dtype, str]] = None) -> RoILosses:
        """Per-RoI losses of one image's candidates, positives first then negatives.

        Args:
            feats: The image's feature maps, each ``(1, C, H, W)``.
            pos_priors: ``(p, 4)`` foreground candidate boxes.
            pos_gt_bboxes: ``(p, 4)`` their assigned gt boxes.
            pos_gt_labels: ``(p,)`` their gt labels.
            neg_priors: ``(q, 4)`` background candidate boxes.
            autocast_dtype: ``None``: the training pass's precision exactly; ``'tf32'``: at least TF32's
                precision (TF32 matmuls in a float32 forward on CUDA, fp16 under fp16 autocast, float32
                under bf16 autocast); ``torch.float32``: float32 under any autocast; or an explicit reduced
                precision (``torch.bfloat16``/``torch.float16``) for the forward (:func:`readonly_autocast`).
                The losses are still computed and returned in float32.

        Returns:
            :class:`RoILosses` with ``p + q`` rows.
        """
        from mmdet.structures.bbox import bbox2roi, get_box_tensor

        head = self.bbox_head
        pos_priors, neg_priors = get_box_tensor(pos_priors), get_box_tensor(neg_priors)
        num_pos = pos_priors.shape[0]
        n = num_pos + neg_priors.shape[0]
        rois = bbox2roi([torch.cat([pos_priors, neg_priors])])
        device_type = rois.device.type
        no_sync = _uses_mmdet_bbox_loss(head)
        with torch.no_grad(), frozen_buffers(self.roi_head):
            # Targets first: they do not depend on the forward, and whatever host reads they make (mmdet's
            # box coder copies its means/stds to the device) then happen before the forward is queued, so
            # the host queues the losses and the selection while the device runs the forward.
            targets = self._fast_targets(pos_priors, neg_priors, pos_gt_bboxes, pos_gt_labels) if no_sync \
                else None
            if targets is None:
                view = _CandidateView(pos_priors, neg_priors, get_box_tensor(pos_gt_bboxes), pos_gt_labels)
                targets = head.get_targets([view], self.train_cfg, concat=True)
            with readonly_autocast(device_type, autocast_dtype) as upcast, \
                    one_read_extraction(self.roi_head, self.stage, self.fast_roi_pool, self.fast_roi_align,
                                        self.one_launch_levels):
                out = self.bbox_forward(feats, rois, upcast)
            cls_score, bbox_pred = _as_float(out.get('cls_score')), _as_float(out.get('bbox_pred'))
            del out  # drop RoI features now: nothing of the read-only pass outlives this block
            with torch.autocast(device_type=device_type, enabled=False):
                if no_sync:  # no host reads
                    with frozen_buffers(head):  # the second call must see the same loss state
                        losses = _bbox_head_losses_no_sync(head, cls_score, bbox_pred, rois, *targets, num_pos)
                    # Losses whose per-RoI mean is their training value have a training scale of 1.
                    trained = {} if _mean_consistent(head) else _bbox_head_losses_no_sync(
                        head, cls_score, bbox_pred, rois, *targets, num_pos, per_roi=False)
                else:
                    with frozen_buffers(head):  # the second call must see the same loss state
                        losses = head.loss(cls_score, bbox_pred, rois, *targets, reduction_override='none')
                    trained = head.loss(cls_score, bbox_pred, rois, *targets)  # the training reduction
        return _roi_losses(losses, trained, rois, n, num_pos)
