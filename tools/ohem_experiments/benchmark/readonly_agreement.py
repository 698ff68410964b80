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


#: Passes that run in float32 on any device with their arithmetic rewritten (see the module docstring).
EMULATED: Dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    'tf32_emulated': lambda: _Rewrite(_tf32_linear, _tf32_conv),
    'fp32_reordered': lambda: _Rewrite(_reordered_linear, _reordered_conv),
}
DTYPES = ('tf32', 'fp32', 'fp16', 'bf16') + tuple(EMULATED)
#: --train-precision: the autocast dtype the features are captured (and the passes run) under.
TRAIN_PRECISIONS: Dict[str, Optional[torch.dtype]] = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def readonly_agreement(model: str, size: Sequence[int], device: str = 'cuda', seeds: Sequence[int] = (0, 1, 2),
                       dtypes: Sequence[str] = ('tf32', 'fp16', 'bf16'), train_steps: int = 0,
                       lr: float = 0.005, fixed_dropout: bool = True,
                       train_precision: str = 'fp32') -> Dict[str, object]:
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
                with masks if masks is not None else contextlib.nullcontext():
                    exact = sampler.head.readonly_losses(feats32, *args[1:5], None).ranking(sampler.ranking_loss)
                want = sampler._select(exact, boxes, is_pos, labels).indices
                spreads.append(float(exact.std() / exact.mean().clamp(min=1e-12)))
                for d in dtypes:
                    with masks.replay() if masks is not None else contextlib.nullcontext():
                        if d in EMULATED:
                            with EMULATED[d]():
                                approx = sampler.head.readonly_losses(feats32, *args[1:5], None)
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
            'fixed_dropout': fixed_dropout, 'train_precision': train_precision,
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
        lines.append(f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {r.get('train_precision', 'fp32')} | "
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
    p.add_argument('--out', default=None, help='JSON of every row; a markdown table goes beside it (.md)')
    args = p.parse_args(argv)
    rows: List[dict] = []
    for m in args.models:
        for prec, k in [(prec, k) for prec in args.train_precision for k in args.train_steps]:
            r = readonly_agreement(m, args.size or SETTINGS[m], args.device, seeds=args.seeds, dtypes=args.dtypes,
                                   train_steps=k, lr=args.lr, fixed_dropout=not args.fresh_dropout,
                                   train_precision=prec)
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
