"""Issue 10 on a CUDA GPU: `--amp` training steps, GPU-vs-CPU selection, host synchronisations, benchmark.

Every test here is marked ``cuda`` and skipped without a GPU; ``tools/gpu_check.sh`` runs them on the lent
GPU machine (see docs/benchmark.md).
"""
import json
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmdet_ohem.config_tools import drop_pretrained
from mmdet_ohem.samplers import OHEMSampler
from mmdet_ohem.selection import select_hard_examples

from ._detectors import batch, build, linear_calls_by_pass, mined_selections, sampler_inputs

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parents[1]
VGG_OHEM = 'configs/ohem/faster_rcnn_vgg16_ohem_voc07.py'
VGG_FRCN = 'configs/frcn/faster_rcnn_vgg16_voc07.py'
R50_OHEM = 'configs/ohem/faster_rcnn_r50_fpn_ohem_coco.py'


def _model(config: str):
    """The config's detector on the GPU, random init (no download), train mode."""
    cfg = Config.fromfile(str(ROOT / config))
    drop_pretrained(cfg)
    return build(cfg, seed=0, device='cuda')


@pytest.fixture(scope='module')
def vgg_ohem():
    model = _model(VGG_OHEM)
    # The configs' own scale: shorter side 600, longer side 1000 (VOC); VOC has 20 classes.
    return model, batch(model, 2, (600, 1000), (6, 4), num_classes=20)


def _amp_steps(model, data, dtype: str, steps: int = 2) -> list:
    """``steps`` iterations through mmengine's AmpOptimWrapper, exactly what ``tools/train.py --amp`` uses."""
    from mmengine.optim import AmpOptimWrapper
    from ohem_experiments.quick_detectors import wrapper_train_step
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9),
                              dtype=dtype)
    return [wrapper_train_step(model, data, wrapper)['loss'] for _ in range(steps)]


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
@pytest.mark.parametrize('readonly_dtype', ['tf32', None, 'fp32', 'bf16', 'fp16'])
def test_vgg16_ohem_config_trains_with_amp_at_600px(vgg_ohem, dtype, readonly_dtype):
    """Both crashes of the issue: mmcv's split NMS (12,000 RPN boxes) and a read-only autocast of another dtype."""
    model, data = vgg_ohem
    sampler = model.roi_head.bbox_sampler
    assert isinstance(sampler, OHEMSampler)
    default, sampler.readonly_dtype = sampler.readonly_dtype, readonly_dtype
    try:
        losses = _amp_steps(model, data, dtype)
    finally:
        sampler.readonly_dtype = default
    assert all(torch.isfinite(torch.tensor(losses)))
    assert 0 < sampler.last_stats.mined <= 64


def test_default_tf32_readonly_pass_in_fp32_training():
    """fp32 training steps with the default read-only precision: TF32 matmuls inside the read-only pass
    only (the flag is back to what it was afterwards), finite losses."""
    model = _model(VGG_OHEM)
    data = batch(model, 2, (600, 1000), (6, 4), num_classes=20)
    sampler = model.roi_head.bbox_sampler
    assert sampler.readonly_dtype == 'tf32'
    assert not torch.backends.cuda.matmul.allow_tf32
    seen = []
    orig = torch.nn.functional.linear

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return orig(*args, **kwargs)

    torch.nn.functional.linear = spy
    try:
        optim = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        for _ in range(2):
            loss, _ = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
            optim.zero_grad()
            loss.backward()
            optim.step()
            assert torch.isfinite(loss)
    finally:
        torch.nn.functional.linear = orig
    assert not torch.backends.cuda.matmul.allow_tf32
    assert True in seen and False in seen  # TF32 in the read-only pass, exact fp32 in the training pass


def test_default_readonly_pass_is_float32_with_tf32_under_bf16_amp(vgg_ohem):
    """bf16 AMP steps: the default read-only pass's fc layers take float32 inputs with autocast off and TF32
    matmuls allowed (bf16 mined < 99% of an exact pass's RoIs), the training pass's stay bf16 autocast with
    the flag as it was; finite losses."""
    model, data = vgg_ohem
    sampler = model.roi_head.bbox_sampler
    assert sampler.readonly_dtype == 'tf32' and sampler.batched
    before = torch.backends.cuda.matmul.allow_tf32
    with linear_calls_by_pass(model.roi_head.bbox_head, 'cuda') as seen:
        losses = _amp_steps(model, data, 'bfloat16')
    assert all(torch.isfinite(torch.tensor(losses)))
    assert seen['readonly'] == {(torch.float32, False, True, torch.float32)}
    assert {(on, tf32) for _, on, tf32, _ in seen['training']} == {(True, before)}
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
@pytest.mark.parametrize('readonly_dtype', ['fp32', 'bf16', 'fp16'])
def test_r50_fpn_ohem_trains_with_amp_and_any_readonly_dtype(dtype, readonly_dtype):
    """R50-FPN at 800 x 1333: a read-only dtype other than the AMP dtype goes through the multi-level
    extraction (its concatenation under a nested autocast of the other dtype failed on the CPU)."""
    model = _model(R50_OHEM)
    model.roi_head.bbox_sampler.readonly_dtype = readonly_dtype
    num_classes = model.roi_head.bbox_head.num_classes
    losses = _amp_steps(model, batch(model, 2, (800, 1333), (6, 4), num_classes=num_classes), dtype)
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize('config', [VGG_FRCN, R50_OHEM])
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_other_configs_train_with_amp(config, dtype):
    """The FRCN baseline (RandomSampler, the same RPN) and our R50-FPN config at 800 x 1333."""
    model = _model(config)
    size = (800, 1333) if 'r50' in config else (600, 1000)
    num_classes = model.roi_head.bbox_head.num_classes
    losses = _amp_steps(model, batch(model, 2, size, (6, 4), num_classes=num_classes), dtype)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_gpu_mines_the_cpu_references_rois():
    """On the same inputs, the device loss-NMS on the GPU returns the host reference's selection on the CPU."""
    from ohem_experiments.benchmark.nms_timing import proposal_like_boxes
    for seed in range(20):
        boxes, losses = proposal_like_boxes(2000, seed=seed)
        if seed % 2:  # ties: losses on a coarse grid
            losses = (losses * 8).round() / 8
        g = torch.Generator().manual_seed(seed)
        is_pos = torch.rand(2000, generator=g) < 0.1
        labels = torch.randint(0, 20, (2000, ), generator=g)
        for num, thr, lab in ((64, 0.7, None), (512, 0.7, None), (64, 0.7, labels), (128, None, None)):
            cpu = select_hard_examples(losses, boxes, num, thr, lab, is_pos=is_pos, method='host')
            gpu = select_hard_examples(losses.cuda(), boxes.cuda(), num, thr,
                                       lab.cuda() if lab is not None else None, is_pos=is_pos.cuda())
            assert gpu.indices.tolist() == cpu.indices.tolist(), (seed, num, thr)
            assert gpu.num_pos == cpu.num_pos and int(gpu.num_suppressed) == int(cpu.num_suppressed)


def test_sampler_on_gpu_mines_what_the_cpu_selection_mines(vgg_ohem):
    """A real read-only pass on the GPU (both images mined together and the selection as a CUDA graph, the
    defaults); its losses, on the CPU, give the same RoIs through the host path, image by image."""
    model, data = vgg_ohem
    calls = mined_selections(model, data)
    assert len(calls) == 2  # one selection per image
    for losses, boxes, args, kwargs, gpu_indices, device in calls:
        assert device.type == 'cuda'
        cpu = select_hard_examples(losses, boxes, *args, **{**kwargs, 'method': 'host'})
        assert cpu.indices.tolist() == gpu_indices.tolist()


def _mined_with_and_without(model, data, setting: str, module, kernel: str, dtype=None) -> list:
    """``mined_selections`` twice from the same seed (the same dropout masks), with the sampler's read-only
    kernel ``setting`` on and off (restored after), under fp16/bf16 autocast ``dtype`` or float32; checks that
    ``module.kernel`` ran exactly in the first run. Returns the two runs' selections."""
    head = model.roi_head.bbox_sampler.head
    default, calls, orig = getattr(head, setting), [], getattr(module, kernel)

    def spy(*args, **kwargs):
        out = orig(*args, **kwargs)
        calls.append(1)  # after it returned: a kernel that raised fell back to mmcv's layer, unseen here
        return out

    runs = []
    for fast in (True, False):
        setattr(head, setting, fast)
        setattr(module, kernel, spy)
        try:
            torch.manual_seed(0)
            with torch.autocast('cuda', dtype=dtype or torch.float16, enabled=dtype is not None):
                runs.append(mined_selections(model, data))
        finally:
            setattr(module, kernel, orig)
            setattr(head, setting, default)
        assert bool(calls) == fast, (setting, dtype, fast)
        calls.clear()
    from mmdet_ohem.kernels.roi_pool import FAILED
    assert not FAILED, FAILED  # no Triton path fell back to mmcv's layer
    return runs


def _assert_same_losses_and_rois(runs, dtype=None) -> None:
    for (l1, b1, _, _, i1, _), (l2, b2, _, _, i2, _) in zip(*runs):
        assert torch.equal(b1, b2) and torch.equal(l1, l2), dtype
        assert i1.tolist() == i2.tolist(), dtype


def test_fast_roi_pool_mines_the_rois_mmcvs_roi_pool_mines(vgg_ohem):
    """The VGG16 OHEM config (RoIPool) at 600 px: the read-only pass with the Triton RoIPool (the default) and
    with mmcv's layer give the same read-only losses, bit for bit, so the same RoIs, in float32 and under
    fp16 autocast; the Triton kernel really ran."""
    import mmdet_ohem.kernels.roi_pool as rp
    model, data = vgg_ohem
    assert model.roi_head.bbox_sampler.head.fast_roi_pool  # the default
    for dtype in (None, torch.float16):
        _assert_same_losses_and_rois(
            _mined_with_and_without(model, data, 'fast_roi_pool', rp, 'roi_pool_from_bounds', dtype), dtype)


def test_fast_roi_align_in_the_readonly_pass_of_r50_fpn():
    """``fast_roi_align=True`` (the default) on the R50-FPN OHEM config at 800x1333: the float32-arithmetic
    Triton RoIAlign ran in the read-only pass (four FPN levels). In float32 training mmcv's layer computes in
    float32 too, so the losses agree to float32 rounding (fused multiply-adds differ) and the mined RoIs are
    the same but for near-ties; under fp16 autocast the kernel takes float32 RoIs and mmcv fp16 ones, so
    only finite losses over the same candidates are checked here (the agreement with an exact float32 pass
    is measured by ``readonly_agreement``). The FPN levels one at a time (``one_launch_levels=False``), so that
    the per-level kernel is the one compared with mmcv's layer; the default's one launch gives its values bit
    for bit (``test_one_launch_levels_mine_the_rois_of_the_per_level_kernel_on_r50_fpn``)."""
    import mmdet_ohem.kernels.roi_align as ra
    model = _model(R50_OHEM)
    data = batch(model, 2, (800, 1333), (6, 4))
    assert model.roi_head.bbox_sampler.head.fast_roi_align  # the default since it passed on the H200 (2026-11-27)
    model.roi_head.bbox_sampler.head.one_launch_levels = False  # (this test's own model)
    fast, mmcv = _mined_with_and_without(model, data, 'fast_roi_align', ra, 'roi_align_f32')
    for (l1, b1, _, _, i1, _), (l2, b2, _, _, i2, _) in zip(fast, mmcv):
        assert torch.equal(b1, b2) and torch.allclose(l1, l2, rtol=1e-4, atol=1e-5)
        assert len(set(i1.tolist()) & set(i2.tolist())) >= 0.99 * len(i2)
    fast, mmcv = _mined_with_and_without(model, data, 'fast_roi_align', ra, 'roi_align_f32', torch.float16)
    for (l1, b1, _, _, _, _), (l2, b2, _, _, _, _) in zip(fast, mmcv):
        assert torch.equal(b1, b2) and l1.shape == l2.shape and torch.isfinite(l1).all()


def test_one_launch_levels_mine_the_rois_of_the_per_level_kernel_on_r50_fpn():
    """``one_launch_levels=True`` (the default) on the R50-FPN OHEM config at 800x1333: the FPN levels aligned
    in one launch give the read-only losses of the per-level kernel bit for bit, so the same RoIs, in float32
    and under fp16 and bf16 autocast; the one-launch kernel really ran."""
    import mmdet_ohem.kernels.roi_align as ra
    model = _model(R50_OHEM)
    data = batch(model, 2, (800, 1333), (6, 4))
    assert model.roi_head.bbox_sampler.head.one_launch_levels  # on by default
    for dtype in (None, torch.float16, torch.bfloat16):
        _assert_same_losses_and_rois(
            _mined_with_and_without(model, data, 'one_launch_levels', ra, 'roi_align_levels_f32', dtype), dtype)


@pytest.mark.parametrize('num_levels', [4, 5])
def test_map_roi_levels_on_the_gpu_is_mmdets(num_levels):
    """The bucketed FPN level mapping on CUDA (bounds found with mmdet's method on the GPU, its log2): mmdet's
    ``map_roi_levels`` on CUDA, for every float32 area near each bound, random areas and the edge cases."""
    from mmdet.registry import MODELS
    from mmdet_ohem.readonly_pass import map_roi_levels
    from .test_gpu_path import _level_cases
    ext = MODELS.build(dict(type='SingleRoIExtractor', out_channels=8, featmap_strides=[4, 8, 16, 32, 64][:num_levels],
                            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0)))
    rois = _level_cases(ext, num_levels, 'cuda')
    want, got = ext.map_roi_levels(rois, num_levels), map_roi_levels(ext, rois, num_levels)
    defined = (want >= 0) & (want < num_levels)
    assert torch.equal(got[defined], want[defined])
    assert not ((got[~defined] >= 0) & (got[~defined] < num_levels)).any()


def _count_syncs(fn, where=None) -> int:
    from ohem_experiments.benchmark.timing import count_syncs
    torch.cuda.synchronize()
    with count_syncs('cuda', where) as n:
        fn()
    return n[0]


@pytest.mark.parametrize('cuda_graph', [True, False])
def test_sample_makes_no_more_host_syncs_than_random_sampler(vgg_ohem, cuda_graph):
    """VGG16 (one feature level, so mmdet's RoI extractor makes no syncs of its own), both images of the
    batch: ours samples both and mines them together when the RoI head reads a result; with the selection
    as a CUDA graph (the default; captured in the warm-up) and eager."""
    from mmdet.models.task_modules.samplers import RandomSampler
    model, data = vgg_ohem
    _, images = sampler_inputs(model, data)
    ours = OHEMSampler(num=64, context=model.roi_head, cuda_graph=cuda_graph)
    theirs = RandomSampler(num=64, pos_fraction=0.25, context=model.roi_head)
    assign = model.roi_head.bbox_assigner.assign

    def ours_step(assigns):
        got = [ours.sample(a, res, gt, feats=feats) for a, (res, gt, feats) in zip(assigns, images)]
        got[0].pos_inds  # what the RoI head reads first: mines both images

    def theirs_step(assigns):
        for a, (res, gt, _) in zip(assigns, images):
            theirs.sample(a, res, gt)

    for _ in range(2):  # warm-up (lazy CUDA initialisation syncs)
        ours_step([assign(res, gt) for res, gt, _ in images])
        theirs_step([assign(res, gt) for res, gt, _ in images])
    a1 = [assign(res, gt) for res, gt, _ in images]
    a2 = [assign(res, gt) for res, gt, _ in images]
    where_ours, where_theirs = [], []
    n_ours = _count_syncs(lambda: ours_step(a1), where_ours)
    n_theirs = _count_syncs(lambda: theirs_step(a2), where_theirs)
    print(f'host syncs for the 2 images of a batch: OHEMSampler (cuda_graph={cuda_graph}) {n_ours} at {where_ours}; '
          f'RandomSampler {n_theirs} at {where_theirs}')
    assert n_ours <= n_theirs
    if cuda_graph:
        assert ours._graphs.captures == 1 and ours._graphs.replays == 3 and ours._graphs.failed is None


def test_benchmark_code_path_on_cuda(tmp_path):
    """The benchmark's CUDA path end to end: events, profiled breakdown, sync counts, memory, AMP."""
    from ohem_experiments.benchmark.cli import main
    out = tmp_path / 'bench.json'
    main(['--device', 'cuda', '--models', 'r50_fpn', '--size', '256', '384', '--iters', '2', '--warmup', '1',
          '--precision', 'fp32', 'fp16', '--variants', 'random', 'mmdet_ohem', 'ours', 'ours_exact', 'ours_bf16',
          'ours_per_image', 'ours_graph',
          '--nms-sizes', '2000', '--nms-repeats', '2', '--out', str(out)])
    saved = json.loads(out.read_text())
    assert [r['precision'] for r in saved['models']] == ['fp32', 'fp16']
    for r in saved['models']:
        t = r['timings']
        assert all(len(v['times_s']) == 2 and len(v['cuda_peak_mb']) == 2 for v in t.values())
        assert t['ours']['parts_median_s']['readonly'] > 0 and t['random']['parts_median_s']['readonly'] == 0
        assert all(len(v['syncs_per_iter']) == 1 for v in t.values())
        assert r['memory']['ours']['peak_mb'] > 0
    methods = {row['method'] for row in saved['nms']}
    assert 'ours (host loop), max_keep=512' in methods


def _config_amp_steps(name: str, device: str = 'cuda', size=None) -> list:
    """One fp16 (GradScaler) and one bf16 AMP training step of config ``name``'s model, random init."""
    from tests.test_configs import config_batch, config_model
    model = config_model(name, device)
    if size is None:
        size = (800, 1333) if 'r50' in name else (128, 128) if name.startswith('toy/') else (600, 1000)
    losses = []
    for dtype in ('float16', 'bfloat16'):  # a fresh batch each: Fast R-CNN's loss pops its proposals' boxes
        losses += _amp_steps(model, config_batch(model, size, (6, 4), 2000), dtype, steps=1)
    return losses


def test_every_config_in_configs_trains_amp_steps():
    """Issue 10: `--amp` (fp16 and bf16) trains every config in configs/ on the GPU (one config per distinct
    model, at its training scale), with the default read-only precision."""
    import time
    failures, rows = [], []
    from tests.test_configs import unique_model_configs
    for name in unique_model_configs():
        t = time.perf_counter()
        try:
            losses = _config_amp_steps(name)
            ok = all(torch.isfinite(torch.tensor(losses)))
            rows.append(f'{name}: {"ok" if ok else "NON-FINITE"} {[round(v, 3) for v in losses]}')
            if not ok:
                failures.append(name)
        except Exception as e:  # noqa: BLE001 (collected and reported below)
            rows.append(f'{name}: {type(e).__name__}: {e}')
            failures.append(name)
        rows[-1] += f' ({time.perf_counter() - t:.1f}s)'
        torch.cuda.empty_cache()
    print('\n'.join(rows))
    assert not failures, failures


def test_captured_selection_graph_mines_the_cpu_references_rois():
    """The selection as a captured CUDA graph (``cuda_graph=True``): a capture only for rows wider than every
    graph kept, replays of narrower rows over stale buffer columns (in the narrowest graph wide enough), and
    per image the host reference's RoIs on the CPU."""
    from ohem_experiments.benchmark.nms_timing import proposal_like_boxes

    from mmdet_ohem.selection import SelectionGraphs, select_hard_examples_padded
    graphs = SelectionGraphs()
    # widths 768 then 1024 for each budget: four captures (the fourth drops the least recently used, 768 for
    # budget 64); 990-1024 replay the 1024 graph over stale columns, 500 the narrowest graph kept for its budget
    for seed, n in enumerate((700, 1000, 990, 1010, 1024, 500)):
        rows = [proposal_like_boxes(n, seed=2 * seed + b) for b in range(2)]
        boxes = torch.stack([r[0] for r in rows]).float()
        losses = torch.stack([r[1] for r in rows]).float()
        if seed % 2:
            losses = (losses * 8).round() / 8  # ties
        g = torch.Generator().manual_seed(seed)
        valid = torch.rand(2, n, generator=g) > 0.1
        is_pos = torch.rand(2, n, generator=g) < 0.15
        for num in (64, 512):
            got = select_hard_examples_padded(losses.cuda(), boxes.cuda(), num, 0.7, None, 'skip', is_pos.cuda(),
                                              valid=valid.cuda(), graphs=graphs)
            for b in range(2):
                cpu = select_hard_examples(losses[b], boxes[b], num, 0.7, None, 'skip', is_pos[b], method='host',
                                           valid=valid[b])
                assert got[b].indices.tolist() == cpu.indices.tolist(), (seed, num, b)
                assert got[b].num_pos == cpu.num_pos and int(got[b].num_suppressed) == int(cpu.num_suppressed)
    assert graphs.failed is None, graphs.failed
    assert graphs.captures == 4 and graphs.replays == 12  # (768, 1024) x (64, 512)
    print(f'selection graphs: {graphs.captures} captures, {graphs.replays} replays, {graphs.fallbacks} fallbacks')


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_vgg16_ohem_trains_amp_steps_with_the_selection_as_a_cuda_graph(vgg_ohem, dtype):
    """``cuda_graph=True`` under `--amp`: captured once, replayed each step, the RoIs the CPU selection
    mines from the same losses."""
    model, data = vgg_ohem
    sampler = model.roi_head.bbox_sampler
    from mmdet_ohem.selection import SelectionGraphs
    default, sampler._graphs = sampler._graphs, SelectionGraphs(on_failure=sampler._graph_failed)
    try:
        losses = _amp_steps(model, data, dtype, steps=3)
        graphs = sampler._graphs
        calls = mined_selections(model, data)
    finally:
        sampler._graphs = default
    assert graphs.failed is None, graphs.failed
    assert graphs.captures >= 1 and graphs.replays >= 3
    assert all(torch.isfinite(torch.tensor(losses)))
    for losses_b, boxes, args, kwargs, gpu_indices, device in calls:
        cpu = select_hard_examples(losses_b, boxes, *args, **{**kwargs, 'method': 'host'})
        assert cpu.indices.tolist() == gpu_indices.tolist()


def test_selection_graph_follows_dynamic_rcnns_smooth_l1_beta():
    """A captured CUDA graph replays the numbers it was captured with. Dynamic R-CNN's head moves its SmoothL1
    ``beta`` during training; after it does, the selection (a graph of its own, its key holding the loss
    settings) mines the RoIs the host selection mines from losses computed eagerly with the new beta."""
    import copy
    from ._detectors import mmdet_config
    model = build(mmdet_config('dynamic_rcnn/dynamic-rcnn_r50_fpn_1x_coco.py'), seed=0, device='cuda')
    data = batch(model, 2, (800, 1333), (6, 4))
    sampler, loss_bbox = model.roi_head.bbox_sampler, model.roi_head.bbox_head.loss_bbox
    for beta in (loss_bbox.beta, 0.02):
        loss_bbox.beta = beta  # what DynamicRoIHead.update_hyperparameters does every 100 iterations
        calls = mined_selections(model, copy.deepcopy(data))
        assert len(calls) == 2
        for losses, boxes, args, kwargs, indices, device in calls:
            assert device.type == 'cuda'
            cpu = select_hard_examples(losses, boxes, *args, **{**kwargs, 'method': 'host'})
            assert cpu.indices.tolist() == indices.tolist(), f'beta {beta}'
    graphs = sampler._graphs
    assert graphs.failed is None and graphs.captures == 2 and graphs.replays == 2, vars(graphs)


def test_mmdet_families_train_with_ohem_on_the_gpu():
    """Issue 11's survey on the GPU: each of mmdet 3.3's two-stage families, built from its shipped config
    with only the sampler type changed (its own RoI budget, RPN proposals and RoI layers; no pretrained
    weights), trains two steps in fp32 and two each under fp16 and bf16 ``--amp`` (mmengine's
    AmpOptimWrapper) at 800x1333 with OHEMSampler's defaults wherever RandomSampler does; the families
    OHEM does not support are refused at build. Stages mined together ran the selection as a captured CUDA
    graph, and no capture failed (:func:`compat_survey.problems`). ``OHEM_FAMILIES_OUT`` (a folder): the
    table and JSON are written there (``tools/gpu_check.sh``'s ``families`` step)."""
    import os
    import time
    from ohem_experiments.compat_survey import FAMILIES, PRECISIONS, REFUSED, markdown, problems, survey_family
    out = os.environ.get('OHEM_FAMILIES_OUT')
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
    results = {}
    for name in FAMILIES:
        t = time.perf_counter()
        results[name] = {s: survey_family(name, s, PRECISIONS, 'cuda', 2, (800, 1333), shipped=True)
                         for s in ('RandomSampler', 'OHEMSampler')}
        ohem, random = results[name]['OHEMSampler'], results[name]['RandomSampler']
        print(f'{name}: ' + ', '.join(f'{p} {ohem["results"][p]} (random: {random["results"][p]})' for p in PRECISIONS)
              + f', graphs {ohem["graphs"]} ({time.perf_counter() - t:.1f}s)', flush=True)
        if out:  # after each family: a run cut off by the step's time limit keeps the rows it finished
            (Path(out) / 'families.md').write_text(markdown(results, PRECISIONS))
            (Path(out) / 'families.json').write_text(json.dumps(results, indent=1))
    print(markdown(results, PRECISIONS))
    found = problems(results, 'cuda')
    assert not found, '\n'.join(found)
    # the control trains everywhere but in the families it needs its own sampler for (as on the CPU)
    control = {n: per['RandomSampler']['results'] for n, per in results.items() if n not in REFUSED}
    assert all(r == 'ok' for per in control.values() for r in per.values()), control
    assert all(r.startswith('not run on CUDA') for r in results['crowddet']['RandomSampler']['results'].values())
