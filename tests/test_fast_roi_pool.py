"""The read-only pass's Triton RoIPool (mmdet_ohem.kernels.roi_pool).

On the CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1) against a direct reading of mmcv
2.1's ``roi_pool_forward_cuda_kernel`` (mmcv has no CPU RoIPool to compare with); the ``cuda`` tests compare
the whole path, bin ranges from mmcv's kernel included, with mmcv's layer itself, bit for bit.
"""
import math
import os

import pytest
import torch

from mmdet_ohem.kernels import roi_pool as rp

FLT_MAX = torch.finfo(torch.float32).max


def mmcv_bins(roi, ph_n, pw_n, scale, h, w, dtype):
    """mmcv's bin ranges for one RoI, its arithmetic done in ``dtype`` (float32 here: no FMA contraction,
    which the CPU reference cannot know; the cuda tests take the ranges from mmcv's kernel itself)."""
    t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    x1, y1 = t(roi[1]) * t(scale), t(roi[2]) * t(scale)
    x2, y2 = (t(roi[3]) + 1) * t(scale), (t(roi[4]) + 1) * t(scale)
    rw, rh = x2 - x1, y2 - y1
    if rw <= 0 or rh <= 0:
        return None  # mmcv skips the RoI (output 0)
    bw, bh = rw / t(pw_n), rh / t(ph_n)
    out = []
    for ph in range(ph_n):
        for pw in range(pw_n):
            bx1 = min(max(math.floor(t(pw) * bw + x1), 0), w)
            by1 = min(max(math.floor(t(ph) * bh + y1), 0), h)
            bx2 = min(max(math.ceil(t(pw + 1) * bw + x1), 0), w)
            by2 = min(max(math.ceil(t(ph + 1) * bh + y1), 0), h)
            out.append((by1, by2, bx1, bx2))
    return out


def reference(feats, rois, size, scale):
    """mmcv's forward, read directly: (values, the argmax encoding of the column and row maps)."""
    n, (_, c, h, w) = rois.shape[0], feats.shape
    out = feats.new_zeros((n, c) + size)
    bounds = torch.full((n, 2) + size, -2, dtype=torch.int32)
    for i, roi in enumerate(rois.tolist()):
        bins = mmcv_bins(roi, *size, scale, h, w, feats.dtype)
        if bins is None:
            continue
        plane = feats[int(roi[0])]
        for k, (y1, y2, x1, x2) in enumerate(bins):
            ph, pw = divmod(k, size[1])
            if y2 <= y1 or x2 <= x1:
                bounds[i, :, ph, pw] = -1
                continue
            bounds[i, 0, ph, pw] = y1 * w + x2 - 1
            bounds[i, 1, ph, pw] = (y2 - 1) * w + x1
            region = plane[:, y1:y2, x1:x2].reshape(c, -1).float()
            region = torch.where(torch.isnan(region), torch.tensor(-math.inf), region)
            start = torch.tensor(-FLT_MAX).to(feats.dtype).float()
            out[i, :, ph, pw] = torch.maximum(region.max(1).values, start).to(feats.dtype)
    return out, bounds


def some_rois(gen, n, h, w, scale, batch):
    """Proposal-like RoIs in image pixels, plus the cases mmcv treats specially."""
    img_h, img_w = h / scale, w / scale
    x1 = torch.rand(n, generator=gen) * img_w * 0.9
    y1 = torch.rand(n, generator=gen) * img_h * 0.9
    bw = torch.rand(n, generator=gen) * img_w * 0.6 + 1
    bh = torch.rand(n, generator=gen) * img_h * 0.6 + 1
    rois = torch.stack([torch.randint(0, batch, (n, ), generator=gen).float(), x1, y1, x1 + bw, y1 + bh], 1)
    special = torch.tensor([
        [0, 5.0, 5.0, 3.0, 9.0],                   # x2 + 1 < x1: skipped by mmcv (0)
        [batch - 1, 0.0, 0.0, img_w - 1, img_h - 1],  # the whole image
        [0, -50.0, -40.0, 10.0, 12.0],             # partly outside
        [0, img_w + 10, 4.0, img_w + 60, 30.0],    # wholly outside: every bin empty (0)
        [batch - 1, 7.0, 7.0, 7.0, 7.0],           # one pixel: many empty bins
        [0, 16.0, 16.0, 47.0, 47.0],               # integer corners (bin edges on pixel edges)
    ])
    return torch.cat([rois, special])


@pytest.fixture
def interpreted():
    """Triton's interpreter on the CPU (conftest chooses it before triton is imported), its compiler on a GPU."""
    pytest.importorskip('triton')
    if not torch.cuda.is_available() and os.environ.get('TRITON_INTERPRET') != '1':
        pytest.skip('triton was imported before TRITON_INTERPRET=1 was set')
    return (lambda t: t.cuda()) if torch.cuda.is_available() else (lambda t: t)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_triton_max_of_mmcv_bins_equals_mmcv_bit_for_bit(interpreted, dtype):
    gen = torch.Generator().manual_seed(1)
    b, c, h, w, scale, size = 2, 70, 11, 17, 1 / 4, (3, 4)  # 70 channels: a partial block of 64
    feats = torch.randn(b, c, h, w, generator=gen).relu().to(dtype)  # ReLU features: many exact zeros
    feats[0, 3, 2, 5] = math.nan
    feats[1, 4] = math.nan  # a whole plane of NaN: the maximum stays at mmcv's start value
    feats[0, 5] = -math.inf
    feats[1, 6, :, :] = -3.0
    rois = some_rois(gen, 40, h, w, scale, b)
    want, bounds = reference(feats, rois, size, scale)
    assert (bounds == -2).any() and (bounds == -1).any() and (bounds >= 0).any()  # every case occurs
    dev = interpreted
    got = rp.roi_pool_from_bounds(dev(feats), dev(bounds), dev(rois[:, 0].to(dtype)), size).cpu()
    assert got.dtype == dtype and got.shape == want.shape
    assert torch.equal(got.view(torch.int16 if dtype == torch.float16 else torch.int32),
                       want.view(torch.int16 if dtype == torch.float16 else torch.int32))  # bits, -0.0 too
    if dtype == torch.float32:
        assert (got == -FLT_MAX).any()  # a NaN/-inf bin keeps mmcv's start value, as mmcv does
    else:
        assert torch.isneginf(got).any()  # -FLT_MAX is -inf in float16


def test_no_rois_and_channels_last_input(interpreted):
    dev = interpreted
    feats = torch.randn(1, 8, 5, 6)
    assert rp.roi_pool_from_bounds(dev(feats), dev(torch.zeros((0, 2, 7, 7), dtype=torch.int32)),
                                   dev(torch.zeros(0)), (7, 7)).shape == (0, 8, 7, 7)
    rois = torch.tensor([[0, 0.0, 0.0, 5.0, 4.0]])
    want, bounds = reference(feats, rois, (2, 2), 1.0)
    got = rp.roi_pool_from_bounds(dev(feats).to(memory_format=torch.channels_last), dev(bounds), dev(rois[:, 0]),
                                  (2, 2)).cpu()
    assert torch.equal(got, want)


def test_falls_back_to_mmcvs_layer_where_it_does_not_apply():
    from mmcv.ops import RoIPool
    layer = RoIPool((7, 7), 1 / 16)
    feats, rois = torch.randn(1, 4, 8, 8), torch.tensor([[0, 0.0, 0.0, 50.0, 50.0]])
    assert rp.readonly_roi_pool(feats, rois, (7, 7), 1 / 16) is None  # the CPU: not this path
    identity = torch.nn.Identity()
    with rp.fast_roi_pool_layers([layer, identity]):
        assert ('forward' in vars(layer)) == rp.triton_available() and 'forward' not in vars(identity)
        with pytest.raises(RuntimeError, match='roi_pool_forward_impl'):  # mmcv's own layer ran (no CPU kernel)
            layer(feats, rois)
    assert 'forward' not in vars(layer)  # restored
    with rp.fast_roi_pool_layers([layer], enabled=False):
        assert 'forward' not in vars(layer)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_readonly_roi_pool_equals_mmcvs_roi_pool_on_the_gpu(dtype):
    pytest.importorskip('triton')
    from mmcv.ops import RoIPool
    gen = torch.Generator().manual_seed(2)
    for (b, c, h, w, scale, n) in [(2, 512, 38, 63, 1 / 16, 4000), (2, 70, 11, 17, 1 / 4, 300),
                                   (1, 256, 50, 84, 1 / 16, 2000)]:
        feats = torch.randn(b, c, h, w, generator=gen).relu()
        feats[0, 3, 2, 5] = math.nan
        feats[-1, 4] = -math.inf
        rois = some_rois(gen, n, h, w, scale, b)
        feats, rois = feats.cuda().to(dtype), rois.cuda().to(dtype)
        layer = RoIPool((7, 7), scale)
        with torch.no_grad():
            want = layer(feats, rois)
            got = rp.readonly_roi_pool(feats, rois, (7, 7), scale)
            assert got is not None and got.dtype == want.dtype
            assert torch.equal(got.isnan(), want.isnan())
            assert torch.equal(torch.nan_to_num(got.float(), nan=0.0), torch.nan_to_num(want.float(), nan=0.0)), \
                f'{dtype} {b, c, h, w}: {(got != want).sum().item()} values differ'
            with rp.fast_roi_pool_layers([layer]):
                assert torch.equal(layer(feats, rois), got)
        feats.requires_grad_(True)
        with rp.fast_roi_pool_layers([layer]):  # a training forward: mmcv's layer, with its backward
            out = layer(feats, rois)
            out.backward(torch.ones_like(out))  # contiguous: mmcv's backward reads grad_output as if it were
        assert feats.grad is not None and torch.equal(out.detach(), got)


@pytest.mark.cuda
def test_roi_pool_timing_tool_on_the_gpu(tmp_path):
    """The benchmark step of tools/gpu_check.sh ('roipool'): a table, JSON, and equal values."""
    pytest.importorskip('triton')
    from ohem_experiments.benchmark.roi_pool_timing import main
    out = tmp_path / 'roi_pool.json'
    main(['--sizes', 'vgg16_600x1000', '--dtypes', 'fp16', '--per-image', '200', '--repeats', '2', '--out', str(out)])
    import json
    rows = json.loads(out.read_text())['rows']
    assert len(rows) == 2 and all(r['values_differ'] == 0 and r['triton_ms'] > 0 for r in rows)
    assert (tmp_path / 'roi_pool.md').read_text().count('| (2, 512, 38, 63) |') == 2


def _warnings_of(fn):
    import logging

    from ._detectors import mmlogger_records
    return [r.getMessage() for r in mmlogger_records(fn) if r.levelno == logging.WARNING]


def test_a_failing_triton_path_falls_back_to_mmcvs_layer_and_says_so_once(monkeypatch):
    """A Triton compilation or launch error (the kernels ran on H100/H200s only) does not stop training: the
    layer's own forward runs, one warning names the error, and the path is not tried again. Out-of-memory
    errors are raised as they are."""
    from mmcv.ops import RoIAlign, RoIPool

    from mmdet_ohem.kernels import roi_align as ra
    monkeypatch.setattr(rp, 'FAILED', {})
    tried = []

    def broken(*args):
        tried.append(args)
        raise RuntimeError('PTX .version 8.7 does not support .target sm_70')

    monkeypatch.setattr(rp, 'readonly_roi_pool', broken)
    monkeypatch.setattr(ra, 'readonly_roi_align', broken)
    feats, rois = torch.randn(1, 4, 8, 8), torch.tensor([[0., 0., 0., 20., 20.]])
    pool = RoIPool((2, 2), 1 / 4)

    def mmcv_pool(input, rois):  # mmcv 2.1 has no CPU RoIPool: a stand-in for the layer's own forward
        return 'mmcv'

    out = []
    warned = _warnings_of(lambda: out.extend(rp._fast_forward(pool, mmcv_pool, feats, rois) for _ in range(3)))
    assert out == ['mmcv'] * 3 and len(tried) == 1
    assert len(warned) == 1 and "Triton roi_pool failed on this machine (RuntimeError: PTX .version 8.7" in warned[0]
    assert 'fast_roi_pool=False' in warned[0] and set(rp.FAILED) == {'roi_pool'}
    # RoIAlign (fast_roi_align): mmcv's own CPU layer, its values
    align = RoIAlign((2, 2), 1 / 4, 0)
    warned = _warnings_of(lambda: out.append(ra._fast_forward(align, align.forward, feats, rois)))
    assert torch.equal(out[-1], align(feats, rois)) and len(tried) == 2 and 'Triton roi_align failed' in warned[0]
    # out of memory: raised, the path not marked as failed
    monkeypatch.setattr(rp, 'FAILED', {})

    def oom(*args):
        raise torch.cuda.OutOfMemoryError('CUDA out of memory')

    monkeypatch.setattr(rp, 'readonly_roi_pool', oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        rp._fast_forward(pool, mmcv_pool, feats, rois)
    assert rp.FAILED == {}
