"""The read-only pass's Triton RoIAlign kernel (mmdet_ohem.kernels.roi_align; ``fast_roi_align``, the default
since 2026-11-27's sixteenth session).

On the CPU the kernel runs in Triton's interpreter and is compared with mmcv's own float32 CPU
``roi_align``; the ``cuda`` test compares it with mmcv's layer on the GPU, and with its CPU kernel. The
scalar transcription of mmcv 2.1's ``roi_align_forward_cuda_kernel`` (average mode) with ``T = c10::Half``
below checks the agreement tool's vectorised emulation of mmcv's half arithmetic: every operation of mmcv's
kernel on halves, as its source reads, computes in float and rounds to half, as PyTorch's CPU float16
operations do, so it uses float16 tensors and numpy float16 scalars. (A Triton kernel with these roundings
differed from mmcv's compiled fp16 kernel in 43% of its values on the H200, and was dropped.)
"""
import math
import os

import numpy as np
import pytest
import torch

from mmdet_ohem.kernels import roi_align as ra


def h(v) -> float:
    """Round to float16, as a c10::Half operation's result is."""
    return float(np.float16(v))


def bilinear(plane, height, width, y, x):
    """mmcv's ``bilinear_interpolate`` with T = Half, over all channels of ``plane`` (C, H, W) float16."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(plane.shape[0], dtype=torch.float16)
    y, x = max(y, 0.0) if y > 0 else 0.0, max(x, 0.0) if x > 0 else 0.0
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = h(y - y_low), h(x - x_low)
    hy, hx = h(1.0 - ly), h(1.0 - lx)
    w = [torch.tensor(v, dtype=torch.float16) for v in (h(hy * hx), h(hy * lx), h(ly * hx), h(ly * lx))]
    v1, v2 = plane[:, y_low, x_low], plane[:, y_low, x_high]
    v3, v4 = plane[:, y_high, x_low], plane[:, y_high, x_high]
    return w[0] * v1 + w[1] * v2 + w[2] * v3 + w[3] * v4  # float16 tensors: each operation rounds


def mmcv_roi_align_fp16(feats, rois, size, scale, sampling_ratio, aligned):
    n, (_, c, height, width) = rois.shape[0], feats.shape
    ph_n, pw_n = size
    out = torch.zeros((n, c, ph_n, pw_n), dtype=torch.float16)
    sc, off = h(scale), (0.5 if aligned else 0.0)
    for i, roi in enumerate(rois.float().tolist()):  # float16 values, exactly
        plane = feats[int(roi[0])]
        start_w, start_h = h(h(roi[1] * sc) - off), h(h(roi[2] * sc) - off)
        end_w, end_h = h(h(roi[3] * sc) - off), h(h(roi[4] * sc) - off)
        roi_w, roi_h = h(end_w - start_w), h(end_h - start_h)
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = h(roi_h / ph_n), h(roi_w / pw_n)
        grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(h(roi_h / ph_n)))
        grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(h(roi_w / pw_n)))
        count = torch.tensor(h(max(grid_h * grid_w, 1)), dtype=torch.float16)
        for ph in range(ph_n):
            for pw in range(pw_n):
                acc = torch.zeros(c, dtype=torch.float16)
                for iy in range(grid_h):
                    y = h(h(start_h + h(ph * bin_h)) + h(h(h(iy + 0.5) * bin_h) / h(grid_h)))
                    for ix in range(grid_w):
                        x = h(h(start_w + h(pw * bin_w)) + h(h(h(ix + 0.5) * bin_w) / h(grid_w)))
                        acc = acc + bilinear(plane, height, width, y, x)
                out[i, :, ph, pw] = acc / count
    return out


def some_rois(gen, n, img_h, img_w, batch):
    x1 = torch.rand(n, generator=gen) * img_w * 0.9
    y1 = torch.rand(n, generator=gen) * img_h * 0.9
    bw = torch.rand(n, generator=gen) * img_w * 0.7 + 0.5
    bh = torch.rand(n, generator=gen) * img_h * 0.7 + 0.5
    rois = torch.stack([torch.randint(0, batch, (n, ), generator=gen).float(), x1, y1, x1 + bw, y1 + bh], 1)
    special = torch.tensor([
        [0, 20.0, 20.0, 10.0, 30.0],               # x2 < x1: a negative width
        [batch - 1, 0.0, 0.0, img_w, img_h],       # the whole image, samples on the last row/column
        [0, -30.0, -25.0, 12.0, 9.0],              # partly outside (samples below -1 give 0)
        [0, img_w + 8, 2.0, img_w + 40, 20.0],     # wholly outside
        [batch - 1, 5.0, 5.0, 5.0, 5.0],           # zero size
    ])
    return torch.cat([rois, special]).half()


@pytest.fixture
def device():
    pytest.importorskip('triton')
    if not torch.cuda.is_available() and os.environ.get('TRITON_INTERPRET') != '1':
        pytest.skip('triton was imported before TRITON_INTERPRET=1 was set')
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def test_falls_back_to_mmcvs_layer_where_it_does_not_apply():
    from mmcv.ops import RoIAlign
    layer = RoIAlign((7, 7), 1 / 4, sampling_ratio=0)
    feats, rois = torch.randn(1, 4, 8, 8), torch.tensor([[0, 0.0, 0.0, 20.0, 20.0]])
    assert ra.readonly_roi_align(layer, feats.half(), rois.half()) is None  # the CPU
    with ra.fast_roi_align_layers([layer]):
        want = type(layer).forward(layer, feats, rois)
        assert torch.equal(layer(feats, rois), want)  # mmcv's own layer ran
        assert torch.equal(layer(feats, rois.double()), want)  # on RoIs cast to the features' dtype
    assert 'forward' not in vars(layer)


# R50-FPN's levels at 800x1333 (strides 4-32), VGG16's stride 16, a partial channel block
GPU_CASES = [(2, 256, 200, 334, 1 / 4, 1000, 0, True), (2, 256, 50, 84, 1 / 16, 500, 0, True),
             (2, 256, 25, 42, 1 / 32, 300, 0, True), (2, 512, 38, 63, 1 / 16, 1000, 2, True),
             (1, 70, 11, 17, 1 / 4, 200, 0, False)]


def samples_per_bin(rois, scale, output_size, sampling_ratio, aligned):
    """mmcv's sample count per bin of each RoI (``roi_bin_grid_h * roi_bin_grid_w``, at least 1), float32."""
    off = 0.5 if aligned else 0.0
    size = torch.stack([rois[:, 4] * scale - off - (rois[:, 2] * scale - off),
                        rois[:, 3] * scale - off - (rois[:, 1] * scale - off)], 1)  # (h, w)
    if not aligned:
        size = size.clamp(min=1.0)
    grid = torch.full_like(size, float(sampling_ratio)) if sampling_ratio > 0 else \
        torch.ceil(size / torch.tensor(output_size, dtype=size.dtype)).clamp(min=0)
    return (grid[:, 0] * grid[:, 1]).clamp(min=1)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_float32_kernel_matches_mmcvs_float_roi_align_on_the_gpu(dtype):
    """The kernel runs without fused multiply-adds, as mmcv's CPU build computes: bit for bit mmcv's float32
    CPU ``roi_align`` (on the first 200 RoIs of each case, to bound the CPU's time). mmcv's CUDA build lets
    nvcc fuse, so against its float32 layer the values agree within float32 rounding: both sum ``4 x count``
    weighted samples per bin, so each lies within ``(4 count + 8) eps`` of the magnitude ``RoIAlign(|x|)``
    of the exact value, and a fused sample position moves by at most one ulp of the map's extent; rounded to
    the features' dtype, one more rounding. (A bound relative to the value itself fails where the samples
    cancel: the H200, 2026-11-27, 1.8e-5 at most on float32 features.)"""
    pytest.importorskip('triton')
    from mmcv.ops import RoIAlign, roi_align
    gen = torch.Generator().manual_seed(6)
    eps32 = torch.finfo(torch.float32).eps
    for (b, c, height, width, scale, n, sr, aligned) in GPU_CASES:
        feats = torch.randn(b, c, height, width, generator=gen).to(dtype)
        rois = some_rois(gen, n, height / scale, width / scale, b).float()
        rois[:, 1:] += torch.rand(rois.shape[0], 4, generator=gen)  # not float16 values
        layer = RoIAlign((7, 7), scale, sampling_ratio=sr, aligned=aligned)
        with torch.no_grad():
            got = ra.readonly_roi_align(layer, feats.cuda(), rois.cuda())
        assert got is not None and got.dtype == dtype
        sub = torch.arange(min(200, n))
        if aligned:  # mmcv's CPU kernel asserts a non-negative size there
            sub = sub[((rois[sub, 3] >= rois[sub, 1]) & (rois[sub, 4] >= rois[sub, 2]))]
        cpu = roi_align(feats.float(), rois[sub], (7, 7), scale, sr, 'avg', aligned).to(dtype)
        differ = int((got[sub.cuda()].cpu() != cpu).sum())
        assert differ == 0, f'{differ} of {cpu.numel()} values differ from mmcv\'s CPU kernel ({dtype}, {height}x{width})'
        with torch.no_grad():
            exact = layer(feats.float().cuda(), rois.cuda())
            mag = layer(feats.float().abs().cuda(), rois.cuda())
        count = samples_per_bin(rois, scale, (7, 7), sr, aligned).cuda()[:, None, None, None]
        ulp_extent = 2.0 ** (math.floor(math.log2(max(height, width) + 1)) - 23)
        tol = 2 * (4 * count + 8) * eps32 * mag + 8 * ulp_extent * float(feats.abs().max())
        if dtype != torch.float32:
            tol = tol + torch.finfo(dtype).eps * exact.abs()
        err = (got.float() - exact).abs()
        worst = int((err - tol).argmax())
        assert (err <= tol).all(), (dtype, height, width, sr, float(err.flatten()[worst]), float(tol.flatten()[worst]))
        assert (exact != 0).any()


COMPILE_SM90 = r"""
import json, sys
import triton
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as e:
    print(json.dumps({'skip': f'no ahead-of-time compilation API in triton {triton.__version__}: {e}'}))
    sys.exit(0)
from mmdet_ohem.kernels import roi_align as ra
from mmdet_ohem.kernels._roi_align_triton import roi_align_avg_f32, roi_align_levels_avg_f32
res = {}
for name, fn, feat, rois, out in (('f32_fp16', roi_align_avg_f32, '*fp16', '*fp32', '*fp16'),
                                  ('f32_fp32', roi_align_avg_f32, '*fp32', '*fp32', '*fp32'),
                                  ('levels_fp16', roi_align_levels_avg_f32, '*fp16', '*fp32', '*fp16'),
                                  ('levels_fp32', roi_align_levels_avg_f32, '*fp32', '*fp32', '*fp32')):
    if fn is roi_align_avg_f32:
        sig = dict(feat_ptr=feat, rois_ptr=rois, out_ptr=out, C='i32', H='i32', W='i32', scale='fp32', offset='fp32',
                   sampling_ratio='i32', aligned='i32')
    else:
        sig = {f'f{i}': feat for i in range(5)}
        sig.update({f'{k}{i}': t for k, t in (('H', 'i32'), ('W', 'i32'), ('S', 'fp32')) for i in range(5)})
        sig.update(rois_ptr=rois, levels_ptr='*i64', out_ptr=out, C='i32', offset='fp32', sampling_ratio='i32',
                   aligned='i32', L='constexpr')
    sig.update(PH='constexpr', PW='constexpr', BLOCK_B='constexpr', BLOCK_C='constexpr')
    consts = dict(PH=7, PW=7, BLOCK_B=64, BLOCK_C=ra.F32_BLOCK_C)
    if fn is roi_align_levels_avg_f32:
        consts['L'] = 4
    src = ASTSource(fn=fn, signature=sig, constexprs=consts)
    ptx = triton.compile(src, target=GPUTarget('cuda', 90, 32),
                         options=dict(num_warps=ra.F32_NUM_WARPS, enable_fp_fusion=False)).asm['ptx']
    res[name] = dict(fma=ptx.count('fma.rn.f32'), div_rn=ptx.count('div.rn.f32'), div_full=ptx.count('div.full'))
print(json.dumps(res))
"""


def test_kernels_compile_for_sm90_as_written():
    """Triton's interpreter runs the kernel as Python; the GPU compiler is stricter. The RoIAlign kernels (one
    level, all levels in one launch) compile for an H100/H200 (sm_90) on this machine (in a process without
    ``TRITON_INTERPRET``), for float16 and float32 features, with no fused multiply-add (they are launched
    with ``enable_fp_fusion=False``) and IEEE divisions."""
    import json
    import subprocess
    import sys
    pytest.importorskip('triton')
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    proc = subprocess.run([sys.executable, '-c', COMPILE_SM90], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if 'skip' in res:
        pytest.skip(res['skip'])
    for name, counts in res.items():
        assert counts['fma'] == 0 and counts['div_rn'] > 0 and counts['div_full'] == 0, (name, counts)


@pytest.mark.parametrize('sampling_ratio, aligned', [(0, True), (2, True), (0, False), (3, False)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_float32_kernel_equals_mmcvs_float_roi_align_on_the_cpu(device, sampling_ratio, aligned, dtype):
    """The float32-arithmetic kernel on features of any dtype equals mmcv's float32 CPU RoIAlign on the
    same values cast to float32 (and rounded back to the features' dtype), bit for bit in the interpreter,
    which, like mmcv's CPU build, fuses no multiply-add. RoIs stay float32 whatever the features' dtype."""
    from mmcv.ops import roi_align
    gen = torch.Generator().manual_seed(5)
    b, c, height, width, scale = 2, 20, 9, 13, 1 / 4
    feats = (torch.randn(b, c, height, width, generator=gen) * 3).to(dtype)
    rois = some_rois(gen, 12, height / scale, width / scale, b).float()
    rois[:, 1:] += torch.rand(rois.shape[0], 4, generator=gen) * 0.01  # not float16 values
    if aligned:  # mmcv's CPU kernel asserts a non-negative size there (its CUDA kernel does not)
        rois = rois[(rois[:, 3] >= rois[:, 1]) & (rois[:, 4] >= rois[:, 2])]
    want = roi_align(feats.float(), rois, (3, 4), scale, sampling_ratio, 'avg', aligned).to(dtype)
    got = ra.roi_align_f32(feats.to(device), rois.to(device), (3, 4), scale, sampling_ratio, aligned).cpu()
    assert got.dtype == dtype and got.shape == want.shape
    assert torch.equal(got, want), f'{int((got != want).sum())} of {want.numel()} values differ'
    assert (want != 0).any() and (want == 0).any()


@pytest.mark.parametrize('sampling_ratio, aligned', [(0, True), (2, True), (0, False), (3, False)])
def test_agreement_tools_vectorised_half_roi_align_equals_the_transcription(sampling_ratio, aligned):
    """``readonly_agreement``'s ``fp16_roi_align`` emulation (mmcv's half arithmetic at CPU speed) is the
    transcription above, bit for bit."""
    from ohem_experiments.benchmark.readonly_agreement import roi_align_fp16_torch
    gen = torch.Generator().manual_seed(7)
    feats = (torch.randn(2, 20, 9, 13, generator=gen) * 3).half()
    rois = some_rois(gen, 12, 9 * 4, 13 * 4, 2)
    want = mmcv_roi_align_fp16(feats, rois, (3, 4), 1 / 4, sampling_ratio, aligned)
    got = roi_align_fp16_torch(feats, rois, (3, 4), 1 / 4, sampling_ratio, aligned)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))


def _fpn_extractor(out_channels, sampling_ratio=0, aligned=True, finest_scale=56):
    from mmdet.registry import MODELS
    return MODELS.build(dict(type='SingleRoIExtractor', out_channels=out_channels, featmap_strides=[4, 8, 16, 32],
                             finest_scale=finest_scale,
                             roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=sampling_ratio,
                                            aligned=aligned)))


def _fpn_inputs(gen, b, c, height, width, n, dtype):
    """Four FPN levels of a ``height x width`` image and ``n`` RoIs spread over all levels (float32, not
    float16 values), with ``some_rois``' edge cases."""
    feats = [(torch.randn(b, c, -(-height // s), -(-width // s), generator=gen) * 3).to(dtype) for s in (4, 8, 16, 32)]
    side = torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * 0.8 + 2  # 2 px to most of the image
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * 0.5
    rois = torch.cat([torch.randint(0, b, (n, 1), generator=gen).float(), xy, xy + side], 1)
    rois = torch.cat([rois, some_rois(gen, 4, height, width, b).float()])
    rois[:, 1:] += torch.rand(rois.shape[0], 4, generator=gen) * 0.01
    return feats, rois


@pytest.mark.parametrize('sampling_ratio, aligned', [(0, True), (2, False)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_one_launch_levels_equal_the_per_level_kernel(device, monkeypatch, sampling_ratio, aligned, dtype):
    """``one_launch`` extraction (``OHEMSampler``'s read-only pass with ``one_launch_levels``): every RoI aligned
    on its FPN level in one launch gives the per-level kernel's values bit for bit (so mmcv's float32 CPU
    kernel's: the float32 features through mmdet's own extractor), in the RoIs' order, and makes no host read
    (the per-level path reads the level counts once). Off a GPU the path is taken with the CUDA check lifted
    and the kernel in Triton's interpreter; the ``cuda`` test runs it on the GPU."""
    from mmdet_ohem.kernels import roi_pool
    from mmdet_ohem.readonly_pass import extract_levels_one_read, one_read_extraction
    from .test_gpu_path import _HostReads
    if device == 'cpu':
        monkeypatch.setattr(ra, 'gradient_free_cuda', lambda *a, **k: True)
    gen = torch.Generator().manual_seed(8)
    ext = _fpn_extractor(12, sampling_ratio, aligned, finest_scale=8)  # all four levels on a small image
    feats, rois = _fpn_inputs(gen, 2, 12, 96, 136, 40, dtype)
    if aligned:  # mmcv's CPU kernel asserts a non-negative size there
        rois = rois[(rois[:, 3] >= rois[:, 1]) & (rois[:, 4] >= rois[:, 2])]
    levels = ext.map_roi_levels(rois, 4)
    on_a_level = (levels >= 0) & (levels < 4)  # mmdet maps a RoI of negative area (x2 < x1) to no level
    assert sorted(set(levels[on_a_level].tolist())) == [0, 1, 2, 3] and bool(on_a_level.all()) == aligned
    feats, rois = [f.to(device) for f in feats], rois.to(device)
    holder = torch.nn.Module()
    holder.bbox_roi_extractor = ext
    with torch.no_grad(), one_read_extraction(holder, fast_roi_align=True):
        # (the per-level path cannot take a RoI of no level: the split by level counts would miss it)
        per_level = extract_levels_one_read(ext, feats, rois[on_a_level.to(device)], float32_rois=True)
        extract_levels_one_read(ext, feats, rois[:3], float32_rois=True, one_launch=True)  # the level table
        reads = _HostReads(monkeypatch)
        got = extract_levels_one_read(ext, feats, rois, float32_rois=True, one_launch=True)
        assert reads.count == 0
        reads.paused += 1  # the checks below read
    with torch.no_grad(), one_read_extraction(holder, fast_roi_align=True, one_launch_levels=True):
        via_context = ext(feats, rois) if device == 'cuda' else None  # on the CPU the extractor keeps mmcv's path
    assert 'roi_align_levels' not in roi_pool.FAILED, roi_pool.FAILED.get('roi_align_levels')
    assert got.dtype == dtype and got.shape == (rois.shape[0], 12, 7, 7)
    assert torch.equal(got[on_a_level.to(device)], per_level), \
        f'{int((got[on_a_level.to(device)] != per_level).sum())} of {per_level.numel()} values differ'
    if via_context is not None:
        assert torch.equal(via_context, got)
    want = ext([f.float().cpu() for f in feats], rois.cpu()).to(dtype)  # mmdet's extractor, mmcv's CPU kernel
    assert torch.equal(got.cpu(), want)  # zeros where no level takes the RoI
    assert (want != 0).any() and bool((got.cpu()[~on_a_level] == 0).all())
    empty = extract_levels_one_read(ext, feats, rois[:0], float32_rois=True, one_launch=True)
    assert empty.shape == (0, 12, 7, 7)


def test_one_launch_levels_refuse_what_the_kernel_cannot_take(monkeypatch):
    """``readonly_roi_align_levels`` applies only where every level does (else ``None``: the per-level path
    runs); the kernel itself names a bad input."""
    from mmcv.ops import RoIAlign
    monkeypatch.setattr(ra, 'gradient_free_cuda', lambda *a, **k: True)
    feats = [torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 4, 4)]
    rois, levels = torch.zeros(1, 5), torch.zeros(1, dtype=torch.long)
    alike = [RoIAlign(7, 1 / 4), RoIAlign(7, 1 / 8)]
    assert ra.readonly_roi_align_levels(alike[:1], feats, rois, levels) is None  # a layer per level
    assert ra.readonly_roi_align_levels([alike[0], torch.nn.Identity()], feats, rois, levels) is None
    assert ra.readonly_roi_align_levels([RoIAlign(7, 1 / 4), RoIAlign(5, 1 / 8)], feats, rois, levels) is None
    assert ra.readonly_roi_align_levels([RoIAlign(7, 1 / 4), RoIAlign(7, 1 / 8, sampling_ratio=2)], feats, rois,
                                        levels) is None
    assert ra.readonly_roi_align_levels([RoIAlign(7, 1 / 4), RoIAlign(7, 1 / 8, pool_mode='max')], feats, rois,
                                        levels) is None
    assert ra.readonly_roi_align_levels(alike, [feats[0], feats[1].half()], rois, levels) is None
    assert ra.readonly_roi_align_levels(alike, [feats[0], torch.zeros(1, 3, 4, 4)], rois, levels) is None
    with pytest.raises(ValueError, match='level 1 is'):
        ra.roi_align_levels_f32([feats[0], torch.zeros(1, 3, 4, 4)], rois, levels, (7, 7), [0.25, 0.125], 0, True)
    with pytest.raises(ValueError, match='2 feature levels and 1 scales'):
        ra.roi_align_levels_f32(feats, rois, levels, (7, 7), [0.25], 0, True)


def test_a_failed_one_launch_falls_back_to_the_per_level_path(monkeypatch):
    """A Triton error in the one-launch extraction does not stop training: the per-level path gives the RoI
    features, one warning names the error and the setting that turns it off (``one_launch_levels=False``), and
    the one launch is not tried again."""
    from mmdet_ohem.kernels import roi_pool
    from mmdet_ohem.readonly_pass import extract_levels_one_read
    from .test_fast_roi_pool import _warnings_of
    monkeypatch.setattr(roi_pool, 'FAILED', {})
    monkeypatch.setattr(ra, 'gradient_free_cuda', lambda *a, **k: True)
    tried = []

    def broken(*args, **kwargs):
        tried.append(1)
        raise RuntimeError('PTX .version 8.7 does not support .target sm_70')

    monkeypatch.setattr(ra, 'roi_align_levels_f32', broken)
    ext = _fpn_extractor(4, finest_scale=8)
    feats, rois = _fpn_inputs(torch.Generator().manual_seed(3), 2, 4, 64, 64, 12, torch.float32)
    rois = rois[(rois[:, 3] >= rois[:, 1]) & (rois[:, 4] >= rois[:, 2])]
    out = []
    warned = _warnings_of(lambda: out.extend(
        extract_levels_one_read(ext, feats, rois, float32_rois=True, one_launch=True) for _ in range(2)))
    assert len(tried) == 1 and set(roi_pool.FAILED) == {'roi_align_levels'}
    assert len(warned) == 1 and 'Triton roi_align_levels failed on this machine (RuntimeError: PTX' in warned[0]
    assert 'the per-level path runs in its place' in warned[0] and 'one_launch_levels=False' in warned[0]
    want = ext(feats, rois)  # mmdet's extractor (the layers unpatched: mmcv's CPU kernel)
    assert all(torch.equal(o, want) for o in out)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_one_launch_levels_on_the_gpu_at_r50_fpns_scale(dtype, monkeypatch):
    """On the GPU, at R50-FPN's 800x1333 (256 channels, 2 images, 2,000 RoIs over the four levels): the one
    launch equals the per-level kernel bit for bit, with no host read once the level table is on the device."""
    from mmdet_ohem.kernels import roi_pool
    from mmdet_ohem.readonly_pass import extract_levels_one_read, one_read_extraction
    from .test_gpu_path import _HostReads
    gen = torch.Generator().manual_seed(9)
    ext = _fpn_extractor(256).cuda()
    feats, rois = _fpn_inputs(gen, 2, 256, 800, 1344, 2000, dtype)
    feats, rois = [f.cuda() for f in feats], rois.cuda()
    levels = ext.map_roi_levels(rois, 4)
    on_a_level = (levels >= 0) & (levels < 4)  # some_rois' negative width: mmdet's NaN level, no level's RoI
    assert sorted(set(levels[on_a_level].tolist())) == [0, 1, 2, 3] and int((~on_a_level).sum()) == 1
    holder = torch.nn.Module()
    holder.bbox_roi_extractor = ext
    with torch.no_grad(), one_read_extraction(holder, fast_roi_align=True):
        # (the per-level path cannot take a RoI of no level: the split by level counts would miss it)
        per_level = extract_levels_one_read(ext, feats, rois[on_a_level], float32_rois=True)
        extract_levels_one_read(ext, feats, rois, float32_rois=True, one_launch=True)
        reads = _HostReads(monkeypatch)
        got = extract_levels_one_read(ext, feats, rois, float32_rois=True, one_launch=True)
        assert reads.count == 0
        reads.paused += 1
    assert 'roi_align_levels' not in roi_pool.FAILED, roi_pool.FAILED.get('roi_align_levels')
    assert torch.equal(got[on_a_level], per_level), \
        f'{int((got[on_a_level] != per_level).sum())} of {per_level.numel()} values differ'
    assert bool((got[~on_a_level] == 0).all()) and bool((per_level != 0).any())
