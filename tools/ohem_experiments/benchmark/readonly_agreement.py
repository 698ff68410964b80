"""How many of the RoIs an exact float32 read-only pass mines does a reduced-precision one mine?

For each image of a fixed synthetic batch, the candidates, assignments and features of one float32
training forward are captured at the sampler; then the read-only pass is run on exactly those inputs in
float32 (TF32 off), with TF32 matmuls (the default ``readonly_dtype='tf32'`` in float32 training on CUDA),
under fp16 autocast (what the default inherits under ``--amp``) and under bf16, and the selection rule is
applied to each. Reported per precision: the mean and minimum over
images of |mined_reduced ∩ mined_fp32| / |mined_fp32|.

Weights are the benchmark's random init (no download): an untrained head gives near-equal losses, so
rounding reorders them more than trained weights would; read the numbers as a pessimistic bound.

Two more passes run anywhere, the CPU included (the others need CUDA to differ from float32):
``tf32_emulated`` rounds the operands of every linear layer and convolution to TF32's 10-bit mantissa
(round to nearest, ties to even) and multiplies in float32, as tensor cores do; ``fp32_reordered`` is
exact float32 with each of those reductions summed in two halves, i.e. only the summation order changed.
The latter is the noise floor: no pass whose rounding differs from the reference's can be expected to
agree more than a pass that only adds in another order.

Emulations of the fp16 read-only pass (CPU or GPU; with ``--fp16-features`` every pass, the reference
included, takes the features rounded to float16, a CPU stand-in for features captured under fp16 autocast),
each float32 but for the rounding it names:

* ``fp16_levels``: mmdet's ``SingleRoIExtractor`` maps the RoIs to FPN levels from float16 RoIs, as under
  fp16 ``--amp`` (``rois.type_as(feats[0])``): the area ``w * h`` is computed in float16 and overflows to
  inf above 65,504 px^2, so every RoI larger than ~256x256 px goes to the coarsest level;
* ``fp16_rois``: that, and the RoI layers get the coordinates rounded to float16;
* ``fp16_roi_align``: mmcv's RoIAlign kernel with ``T = c10::Half`` (coordinates, weights and the sum of
  the samples rounded to half: :func:`roi_align_fp16_torch`), the levels mapped in float32;
* ``fp16_linear``: every linear layer (and convolution) as an fp16 GEMM: float16 operands, float32
  accumulation, a float16 result;
* ``fp16_emulated``: all of these at once, the fp16 read-only pass.

``tf32_fast_align`` is the default read-only pass since 2026-11-27's sixteenth session: the default
precision with ``fast_roi_align=True``, on a GPU the float32-arithmetic Triton RoIAlign on float32 RoIs and
levels (:mod:`mmdet_ohem.kernels.roi_align`); on the CPU it equals ``tf32``. Every other pass, the
reference included, runs mmcv's RoIAlign (``fast_roi_align=False``): ``tf32`` is the default precision as it
was before, with mmcv's layer.

Dropout: the read-only pass runs the head in training mode, as the authors' read-only network does, so a
head with dropout (our VGG16/VGGM ``FRCNBBoxHead``: 0.5 after fc6 and fc7) draws new masks in every pass.
Compared pass against pass, that measures dropout, not precision. Every pass of one image therefore
replays the masks the exact pass drew (:class:`FixedDropout`, one mask per dropout call, applied in the
pass's own dtype), so the passes differ only in their arithmetic. ``--fresh-dropout`` measures the old
way (each pass its own masks): how much dropout alone reshuffles the mined RoIs.

Training precision (``--train-precision``): ``fp32`` (default) captures the features from a float32
forward and runs the reduced passes on them. ``fp16``/``bf16`` capture them under that autocast, as
``--amp`` training hands them to the sampler (reduced-precision feature maps; the RoI extractor then
rounds the RoI coordinates to the features' dtype), and run every pass named by a ``readonly_dtype``
inside that autocast, as the sampler does: ``tf32`` is then the default's choice there (fp16 under fp16,
float32 with TF32 matmuls under bf16), ``bf16`` under bf16 the training precision. The reference is
still exact float32, on the same features cast to float32, outside autocast.

Usage::

    python -m ohem_experiments.benchmark.readonly_agreement --device cuda --out agreement.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from unittest import mock
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .detectors import prepare, swap_sampler

__all__ = ['readonly_agreement', 'main', 'round_to_tf32', 'EMULATED', 'markdown']

SETTINGS = {'vgg16': (600, 1000), 'r50_fpn': (800, 1333)}


def round_to_tf32(x: Tensor) -> Tensor:
    """``x`` (float32) rounded to TF32's 10 explicit mantissa bits, to nearest with ties to even; the
    result is float32. Other dtypes are returned unchanged."""
    if x.dtype != torch.float32:
        return x
    bits = x.contiguous().view(torch.int32)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & -0x2000  # two's complement addition rounds the magnitude
    return bits.view(torch.float32).view_as(x)


def _halves(k: int) -> tuple:
    return slice(0, k // 2), slice(k // 2, k)


class _Rewrite(TorchFunctionMode):
    """Routes ``F.linear`` and ``F.conv2d`` (groups 1) through ``linear``/``conv``; the rest untouched."""

    def __init__(self, linear: Callable, conv: Callable) -> None:
        super().__init__()
        self.linear, self.conv = linear, conv

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and args[0].dtype == torch.float32:
            return self.linear(*args, **kwargs)
        if func is F.conv2d and args[0].dtype == torch.float32 and (args[6] if len(args) > 6 else
                                                                    kwargs.get('groups', 1)) == 1:
            return self.conv(*args, **kwargs)
        return func(*args, **kwargs)


def _tf32_linear(x, w, b=None):
    return F.linear(round_to_tf32(x), round_to_tf32(w), b)


def _tf32_conv(x, w, b=None, *args, **kwargs):
    return F.conv2d(round_to_tf32(x), round_to_tf32(w), b, *args, **kwargs)


def _reordered_linear(x, w, b=None):
    lo, hi = _halves(w.shape[1])
    return F.linear(x[..., lo], w[:, lo]) + F.linear(x[..., hi], w[:, hi], b)


def _reordered_conv(x, w, b=None, *args, **kwargs):
    lo, hi = _halves(w.shape[1])
    return F.conv2d(x[:, lo], w[:, lo], None, *args, **kwargs) + F.conv2d(x[:, hi], w[:, hi], b, *args, **kwargs)


class FixedDropout(TorchFunctionMode):
    """``F.dropout`` with masks drawn once and replayed: the first pass (``record``) draws a keep-mask per
    dropout call (float32 uniforms ``>= p``, on the input's device), every later pass (``replay``) applies
    the masks of the same calls in the same order, in its own dtype (``x * keep / (1 - p)``). Outside
    training mode, or with ``p == 0``, dropout is the identity, as in PyTorch.

    Raises:
        RuntimeError: On replay, if a pass makes more dropout calls than were recorded or one of another
            shape (the passes must run the same network on the same RoIs).
    """

    def __init__(self) -> None:
        super().__init__()
        self.masks: List[Tensor] = []
        self.replaying = False
        self._next = 0

    def replay(self) -> 'FixedDropout':
        """Switches to replaying from the first recorded mask (call before each later pass)."""
        self.replaying, self._next = True, 0
        return self

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.dropout:
            return func(*args, **kwargs)
        names = ('input', 'p', 'training', 'inplace')
        bound = dict(zip(names, args), **kwargs)
        x, p, training = bound['input'], float(bound.get('p', 0.5)), bool(bound.get('training', True))
        if not training or p == 0.0:
            return x
        if self.replaying:
            if self._next >= len(self.masks) or self.masks[self._next].shape != x.shape:
                raise RuntimeError(f'FixedDropout: dropout call {self._next} of shape {tuple(x.shape)} was not '
                                   f'recorded ({len(self.masks)} recorded)')
            keep = self.masks[self._next]
            self._next += 1
        else:
            keep = torch.rand(x.shape, device=x.device, dtype=torch.float32) >= p
            self.masks.append(keep)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


@contextlib.contextmanager
def _fp16_roi_coordinates(levels_only: bool):
    """In the block, mmdet's ``SingleRoIExtractor`` maps the RoIs to FPN levels from float16 RoIs, as under
    fp16 ``--amp``, where ``forward`` casts them to the features' dtype: the coordinates are rounded to
    float16 and the area ``w * h`` is a float16 product, which overflows to inf above 65,504 (``sqrt(inf)``
    then maps the RoI to the coarsest level). Unless ``levels_only``, mmcv's RoI layers also see the
    coordinates rounded to float16. Everything else stays float32."""
    from mmcv.ops import RoIAlign, RoIPool
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    mapper = SingleRoIExtractor.map_roi_levels
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(SingleRoIExtractor, 'map_roi_levels',
                                              lambda self, rois, n: mapper(self, rois.half(), n)))
        for cls in () if levels_only else (RoIAlign, RoIPool):
            stack.enter_context(mock.patch.object(cls, 'forward', (lambda f: lambda self, x, rois: f(
                self, x, rois.half().to(rois.dtype)))(cls.forward)))
        yield


def _fp16_linear(x, w, b=None):
    """An fp16 GEMM as cuBLAS computes it under fp16 autocast: float16 operands, float32 accumulation, the
    result (bias added) rounded to float16; returned in float32."""
    return F.linear(x.half().float(), w.half().float(), None if b is None else b.half().float()).half().float()


def _fp16_conv(x, w, b=None, *args, **kwargs):
    return F.conv2d(x.half().float(), w.half().float(), None if b is None else b.half().float(), *args,
                    **kwargs).half().float()


def _sample_axis_fp16(start: Tensor, i: int, bin_size: Tensor, grid: Tensor, size: int):
    """One axis of mmcv's ``bilinear_interpolate`` for sample ``i`` of every bin, with ``T = c10::Half``
    (float16 tensors: each CPU operation computes in float32 and rounds to half, as a c10::Half one does):
    outside the map, low and high neighbours, weights towards high and low."""
    v = start + (torch.tensor(i + 0.5, dtype=torch.float16) * bin_size) / grid
    outside = (v < -1.0) | (v > size)
    v = torch.where(v <= 0, torch.zeros_like(v), v)
    low = v.to(torch.int64)  # truncation, as (int)y
    top = low >= size - 1
    low = torch.where(top, torch.full_like(low, size - 1), low)
    high = torch.where(top, low, low + 1)
    v = torch.where(top, low.to(torch.float16), v)
    lo_w = v - low.to(torch.float16)
    return outside, low, high, lo_w, torch.tensor(1.0, dtype=torch.float16) - lo_w


def roi_align_fp16_torch(feats: Tensor, rois: Tensor, output_size: Sequence[int], spatial_scale: float,
                         sampling_ratio: int, aligned: bool) -> Tensor:
    """mmcv's average-mode ``roi_align_forward_cuda_kernel`` with ``T = c10::Half`` as its source reads,
    vectorised over RoIs, bins and channels in float16 CPU tensors (every operation rounded to half, in
    mmcv's order; equal to the test's scalar transcription bit for bit). ``(n, C, PH, PW)`` float16. An
    emulation, not mmcv's compiled kernel: on the H200 (2026-11-27) a Triton kernel with these roundings
    differed from mmcv's fp16 layer in 43% of its values (nvcc keeps some of the mixed half/float
    expressions in float and may fuse them), though the fp16 pass emulated with it mined 98.6% of an exact
    pass's RoIs on R50-FPN where the H200's fp16 pass mined 98.5%."""
    feats, rois = feats.half(), rois.half()
    b, c, height, width = feats.shape
    ph_n, pw_n = output_size
    n = rois.shape[0]
    out = feats.new_zeros((n, c, ph_n, pw_n))
    if n == 0:
        return out
    nhwc = feats.permute(0, 2, 3, 1).reshape(b * height * width, c)
    scale = torch.tensor(spatial_scale, dtype=torch.float16)
    offset = torch.tensor(0.5 if aligned else 0.0, dtype=torch.float16)
    batch = rois[:, 0].float().long()
    start_w, start_h = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
    roi_w, roi_h = (rois[:, 3] * scale - offset) - start_w, (rois[:, 4] * scale - offset) - start_h
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / ph_n, roi_w / pw_n
    grid_h = torch.full((n, ), sampling_ratio) if sampling_ratio > 0 else torch.ceil(bin_h.float()).long()
    grid_w = torch.full((n, ), sampling_ratio) if sampling_ratio > 0 else torch.ceil(bin_w.float()).long()
    count = grid_h.mul(grid_w).clamp(min=1).to(torch.float16)
    ph = torch.arange(ph_n, dtype=torch.float16).repeat_interleave(pw_n)  # the bins, row-major
    pw = torch.arange(pw_n, dtype=torch.float16).repeat(ph_n)
    y0 = start_h[:, None] + ph[None] * bin_h[:, None]  # (n, bins)
    x0 = start_w[:, None] + pw[None] * bin_w[:, None]
    acc = feats.new_zeros((n, ph_n * pw_n, c))
    base = (batch * height * width)[:, None]
    for iy in range(int(grid_h.max().clamp(min=0))):
        y_out, y_lo, y_hi, ly, hy = _sample_axis_fp16(y0, iy, bin_h[:, None], grid_h[:, None].to(torch.float16),
                                                      height)
        for ix in range(int(grid_w.max().clamp(min=0))):
            x_out, x_lo, x_hi, lx, hx = _sample_axis_fp16(x0, ix, bin_w[:, None],
                                                          grid_w[:, None].to(torch.float16), width)
            w = [(hy * hx)[..., None], (hy * lx)[..., None], (ly * hx)[..., None], (ly * lx)[..., None]]
            v = [nhwc[(base + yy * width + xx).clamp(0, nhwc.shape[0] - 1)]
                 for yy, xx in ((y_lo, x_lo), (y_lo, x_hi), (y_hi, x_lo), (y_hi, x_hi))]
            val = w[0] * v[0] + w[1] * v[1] + w[2] * v[2] + w[3] * v[3]
            live = ~(y_out | x_out) & (iy < grid_h)[:, None] & (ix < grid_w)[:, None]
            acc = acc + torch.where(live[..., None], val, torch.zeros_like(val))
    res = acc / count[:, None, None]
    return res.permute(0, 2, 1).reshape(n, c, ph_n, pw_n).contiguous()


@contextlib.contextmanager
def _fp16_roi_align_arithmetic():
    """In the block, mmcv's average-mode ``RoIAlign`` computes as its CUDA kernel does on float16 features
    and RoIs (every operation rounded to half, the sum of the samples included: :func:`roi_align_fp16_torch`);
    the result is returned in the input's dtype."""
    from mmcv.ops import RoIAlign
    forward = RoIAlign.forward

    def half_forward(self, x, rois):
        if self.pool_mode != 'avg':
            return forward(self, x, rois)
        return roi_align_fp16_torch(x, rois, tuple(self.output_size), float(self.spatial_scale),
                                    int(self.sampling_ratio), bool(self.aligned)).to(x.dtype)

    with mock.patch.object(RoIAlign, 'forward', half_forward):
        yield


@contextlib.contextmanager
def _fp16_emulated():
    """Every rounding of the fp16 read-only pass: the RoIs' levels and coordinates, mmcv's half RoIAlign,
    and fp16 GEMMs (:func:`_fp16_roi_coordinates`, :func:`_fp16_roi_align_arithmetic`, :func:`_fp16_linear`)."""
    with _fp16_roi_coordinates(levels_only=True), _fp16_roi_align_arithmetic(), \
            _Rewrite(_fp16_linear, _fp16_conv):
        yield


#: Passes that run in float32 on any device with their arithmetic rewritten (see the module docstring).
EMULATED: Dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    'tf32_emulated': lambda: _Rewrite(_tf32_linear, _tf32_conv),
    'fp32_reordered': lambda: _Rewrite(_reordered_linear, _reordered_conv),
    'fp16_levels': lambda: _fp16_roi_coordinates(levels_only=True),
    'fp16_rois': lambda: _fp16_roi_coordinates(levels_only=False),
    'fp16_roi_align': _fp16_roi_align_arithmetic,
    'fp16_linear': lambda: _Rewrite(_fp16_linear, _fp16_conv),
    'fp16_emulated': _fp16_emulated,
}
#: The default read-only pass: the default precision with ``fast_roi_align=True`` (the float32-arithmetic
#: Triton RoIAlign on float32 RoIs, :mod:`mmdet_ohem.kernels.roi_align`; on the CPU mmcv's layer runs, so it
#: equals ``tf32``, which every other pass's ``fast_roi_align=False`` keeps as it was).
FAST_ALIGN = 'tf32_fast_align'
DTYPES = ('tf32', 'fp32', 'fp16', 'bf16', FAST_ALIGN) + tuple(EMULATED)
#: --train-precision: the autocast dtype the features are captured (and the passes run) under.
TRAIN_PRECISIONS: Dict[str, Optional[torch.dtype]] = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def readonly_agreement(model: str, size: Sequence[int], device: str = 'cuda', seeds: Sequence[int] = (0, 1, 2),
                       dtypes: Sequence[str] = ('tf32', 'fp16', 'bf16'), train_steps: int = 0,
                       lr: float = 0.005, fixed_dropout: bool = True,
                       train_precision: str = 'fp32', fp16_features: bool = False) -> Dict[str, object]:
    """Overlap of the mined sets, reduced precision vs float32, over ``len(seeds)`` batches of 2 images.

    ``train_steps`` > 0 first trains the detector that many float32 SGD steps on its batch (``lr``), so
    that the head's losses spread as a trained head's do: at random init they are equal to within
    rounding, and the ranking then measures rounding noise, not the precision's effect on mining.

    Per precision: ``overlap`` (the share of the exactly mined RoIs that the reduced pass mines too) and
    ``loss_mass`` (the exact ranking loss summed over the reduced pass's mined RoIs, divided by the same sum
    over the exactly mined ones: 1.0 means RoIs as hard as the exact choice). ``spread``: the coefficient
    of variation of the exact ranking losses over an image's candidates (mean over images).

    ``fixed_dropout`` (default): every pass of an image replays the exact pass's dropout masks
    (:class:`FixedDropout`); ``False``: each pass draws its own, as two training iterations would.

    ``train_precision`` (a key of :data:`TRAIN_PRECISIONS`): the autocast the features are captured and
    the ``readonly_dtype`` passes run under (see the module docstring); the SGD steps stay float32.

    ``fp16_features``: every pass (the reference included) gets the captured features rounded to float16
    and back, a stand-in on the CPU for features captured under fp16 autocast (which mmcv's float32-only CPU
    RoIAlign cannot take on an FPN model) when the ``fp16_*`` emulations are measured.

    Raises:
        ValueError: On an unknown ``train_precision``.
    """
    from mmdet_ohem.readonly_pass import READONLY_PRECISIONS, float32_inputs
    from mmdet_ohem.samplers.ohem_sampler import OHEMSampler

    from .detectors import train_step

    if train_precision not in TRAIN_PRECISIONS:
        raise ValueError(f'train_precision must be one of {sorted(TRAIN_PRECISIONS)}, got {train_precision!r}')
    amp_dtype = TRAIN_PRECISIONS[train_precision]
    device_type = torch.device(device).type

    def amp() -> contextlib.AbstractContextManager:  # the training pass's precision context
        return torch.autocast(device_type=device_type, dtype=amp_dtype) if amp_dtype is not None \
            else contextlib.nullcontext()

    overlaps: Dict[str, List[float]] = {d: [] for d in dtypes}
    masses: Dict[str, List[float]] = {d: [] for d in dtypes}
    spreads: List[float] = []
    final_losses: List[float] = []
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for seed in seeds:
            # One image per sample() call: the capture below wraps the per-image read-only pass and
            # selection (the default mines the images together through other entry points; the RoIs are
            # the same, tests/test_batched_mining.py).
            # (precision: on the CPU, mmcv's float32-only kernels then run in float32 under autocast)
            prep = prepare(model, ['ours_per_image'], size, 2, (6, 4), device, seed, lr=lr, precision=train_precision)
            sampler: OHEMSampler = prep.samplers['ours_per_image']
            # Every pass but FAST_ALIGN's runs mmcv's RoIAlign (the reference's and the columns' layer since the
            # tool was written); FAST_ALIGN turns the Triton kernel on, the default since 2026-11-27.
            sampler.head.fast_roi_align = False
            swap_sampler(prep.model, sampler)
            for _ in range(train_steps):  # PyTorch's default precision (TF32 convolutions): only the weights matter
                log_vars = train_step(prep.model, prep.optim, prep.data)
            if train_steps:
                final_losses.append(float(log_vars['loss'].detach()))
            # Exact float32 from here on: the features and the reference pass (the reduced passes set their own).
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            captured = []
            orig = sampler._select

            def capture(losses, boxes, is_pos, labels, _orig=orig):
                captured.append((boxes, is_pos, labels))
                return _orig(losses, boxes, is_pos, labels)

            orig_losses = sampler.head.readonly_losses
            inputs = []

            def capture_inputs(*args, **kwargs):
                inputs.append((args, kwargs))
                return orig_losses(*args, **kwargs)

            sampler._select, sampler.head.readonly_losses = capture, capture_inputs
            with torch.no_grad(), amp():
                prep.model.loss(prep.data['inputs'], prep.data['data_samples'])
            sampler._select, sampler.head.readonly_losses = orig, orig_losses
            if len(inputs) != len(captured) or not inputs:
                raise RuntimeError(f'readonly_agreement: captured {len(inputs)} read-only passes and '
                                   f'{len(captured)} selections from a batch of 2; the sampler no longer mines '
                                   f'through readonly_losses/_select one image at a time')
            for (args, _), (boxes, is_pos, labels) in zip(inputs, captured):
                masks = FixedDropout() if fixed_dropout else None
                feats32 = float32_inputs(args[0])  # the reference's (and the emulations') features
                if fp16_features:
                    feats32 = [f.half().float() for f in feats32]
                    args = (feats32, ) + tuple(args[1:])
                with masks if masks is not None else contextlib.nullcontext():
                    exact = sampler.head.readonly_losses(feats32, *args[1:5], None).ranking(sampler.ranking_loss)
                want = sampler._select(exact, boxes, is_pos, labels).indices
                spreads.append(float(exact.std() / exact.mean().clamp(min=1e-12)))
                for d in dtypes:
                    with masks.replay() if masks is not None else contextlib.nullcontext():
                        if d in EMULATED:
                            with EMULATED[d]():
                                approx = sampler.head.readonly_losses(feats32, *args[1:5], None)
                        elif d == FAST_ALIGN:  # the default precision with fast_roi_align=True
                            with mock.patch.object(sampler.head, 'fast_roi_align', True), amp():
                                approx = sampler.head.readonly_losses(*args[:5], READONLY_PRECISIONS['tf32'])
                        else:
                            with amp():
                                approx = sampler.head.readonly_losses(*args[:5], READONLY_PRECISIONS[d])
                    approx = approx.ranking(sampler.ranking_loss)
                    got = sampler._select(approx, boxes, is_pos, labels).indices
                    overlaps[d].append(len(set(got.tolist()) & set(want.tolist())) / max(want.numel(), 1))
                    masses[d].append(float(exact[got].sum() / exact[want].sum().clamp(min=1e-12)))
            del prep
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return {'model': model, 'size': list(size), 'images': len(spreads), 'train_steps': train_steps, 'lr': lr,
            'fixed_dropout': fixed_dropout, 'train_precision': train_precision, 'fp16_features': fp16_features,
            'final_train_loss': final_losses, 'spread': sum(spreads) / len(spreads),
            'overlap': {d: {'mean': sum(v) / len(v), 'min': min(v), 'all': v} for d, v in overlaps.items()},
            'loss_mass': {d: {'mean': sum(v) / len(v), 'min': min(v)} for d, v in masses.items()}}


def markdown(rows: Sequence[dict]) -> str:
    """The rows as a markdown table: per precision, the mean (min) overlap and the mean loss mass."""
    dtypes = list(rows[0]['overlap']) if rows else []
    lines = ['| model | size | training precision | SGD steps | dropout masks | images | loss spread | '
             + ' | '.join(dtypes) + ' |',
             '|---|---|---|---|---|---|---|' + '---|' * len(dtypes)]
    for r in rows:
        cells = [f"{r['overlap'][d]['mean']:.1%} (min {r['overlap'][d]['min']:.1%}), mass "
                 f"{r['loss_mass'][d]['mean']:.4f}" for d in dtypes]
        masks = 'fixed' if r.get('fixed_dropout', False) else 'fresh'
        precision = r.get('train_precision', 'fp32') + (', fp16-rounded features' if r.get('fp16_features') else '')
        lines.append(f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {precision} | "
                     f"{r['train_steps']} | {masks} | {r['images']} | "
                     f"{r['spread']:.2f} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    """Command line: ``--device``, ``--models``, ``--train-steps``, ``--train-precision``, ``--lr``, ``--size``,
    ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--models', nargs='+', default=list(SETTINGS), choices=sorted(SETTINGS))
    p.add_argument('--train-steps', nargs='+', type=int, default=[0],
                   help='float32 SGD steps on the batch before measuring; several values: one row each')
    p.add_argument('--lr', type=float, default=0.005)
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2], help='one batch of 2 images per seed')
    p.add_argument('--size', type=int, nargs=2, default=None, help='H W (default: the issue setting per model)')
    p.add_argument('--dtypes', nargs='+', default=['tf32', 'fp16', 'bf16'], choices=DTYPES,
                   help='reduced passes to compare with float32; tf32_emulated and fp32_reordered (the noise '
                        'floor) also differ from it on the CPU')
    p.add_argument('--train-precision', nargs='+', default=['fp32'], choices=sorted(TRAIN_PRECISIONS),
                   help='the training precision(s) the features are captured and the passes run under '
                        '(autocast as --amp); several values: one row each')
    p.add_argument('--fresh-dropout', action='store_true',
                   help='let every pass draw its own dropout masks (default: each pass replays the exact '
                        "pass's masks, so that only the precision differs)")
    p.add_argument('--fp16-features', action='store_true',
                   help='round the captured features to float16 for every pass, the reference included (a CPU '
                        'stand-in for features captured under fp16 autocast, for the fp16_* emulations)')
    p.add_argument('--out', default=None, help='JSON of every row; a markdown table goes beside it (.md)')
    args = p.parse_args(argv)
    rows: List[dict] = []
    for m in args.models:
        for prec, k in [(prec, k) for prec in args.train_precision for k in args.train_steps]:
            r = readonly_agreement(m, args.size or SETTINGS[m], args.device, seeds=args.seeds, dtypes=args.dtypes,
                                   train_steps=k, lr=args.lr, fixed_dropout=not args.fresh_dropout,
                                   train_precision=prec, fp16_features=args.fp16_features)
            rows.append(r)
            # Each row as soon as it is measured (a run cut off by a time limit keeps the finished ones).
            print(f"{r['model']} {r['size']} {prec} after {r['train_steps']} steps (loss {r['final_train_loss']}), "
                  f"{'fixed' if r['fixed_dropout'] else 'fresh'} dropout masks, "
                  f"spread {r['spread']:.3f}: " + ', '.join(
                      f"{d} overlap {v['mean']:.4f} (min {v['min']:.4f}), loss mass "
                      f"{r['loss_mass'][d]['mean']:.5f}" for d, v in r['overlap'].items()), flush=True)
            if args.out:
                with open(args.out, 'w') as f:
                    f.write(json.dumps(rows, indent=1))
                Path(args.out).with_suffix('.md').write_text(markdown(rows))
    return rows


if __name__ == '__main__':
    main()
