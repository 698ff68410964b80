"""Issue 10 (OHEM on the GPU), the parts a CPU can check: both `--amp` crashes, and no host reads in sample().

* mmcv 2.1's ``batched_nms`` split path (> split_thr boxes) fails with half scores and float boxes, which
  is what an fp16-autocast RPN gives it; the VGG16 RPN (nms_pre=12000) must never take that path.
* A read-only pass autocast to another dtype than the training pass's leaves wrong-dtype weight casts in
  autocast's cache unless the cache is off; CPU autocast shows it with bf16 outside and fp16 inside.
* ``OHEMSampler.sample`` reads back one small tensor beyond the candidates' two ``nonzero`` (with the
  device-side loss-NMS forced on the CPU), and its statistics stay put until a logger reads them.
"""
import functools
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub

from mmdet_ohem.readonly_pass import RoIHeadAdapter
from mmdet_ohem.samplers import OHEMSampler
from tests.test_configs import CONFIGS, NAMES, _train_datasets, _walk

from ._detectors import FASTER_FPN, batch, build, linear_calls_by_pass, mmdet_config, sampler_inputs


def _proposals(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 900
    wh = torch.rand(n, 2, generator=g) * 100 + 4
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def test_mmcv_batched_nms_split_path_crash_and_the_configs_setting():
    """> 10,000 float boxes with half scores: mmcv's default split path fails; the VGG16 RPN's cfg does not."""
    from mmcv.ops import batched_nms
    boxes, scores = _proposals(12000)
    half = scores.half()
    level = torch.zeros(12000, dtype=torch.long)  # one RPN level, as in the VGG16 model
    with pytest.raises(RuntimeError, match='Index put requires the source and destination dtypes match'):
        batched_nms(boxes, half, level, dict(type='nms', iou_threshold=0.7))  # mmcv's default split_thr
    cfg = _config('ohem/faster_rcnn_vgg16_ohem_voc07.py')
    nms_cfg = cfg.model.train_cfg.rpn_proposal.nms.to_dict()
    dets, keep = batched_nms(boxes, half, level, nms_cfg)
    # The same boxes with the same scores as the fp32 split path keeps (order may differ among equal scores).
    ref_dets, ref_keep = batched_nms(boxes, half.float(), level, dict(type='nms', iou_threshold=0.7))
    assert set(keep.tolist()) == set(ref_keep.tolist()) and len(keep) == len(ref_keep)
    assert torch.equal(dets[:, -1], ref_dets[:, -1])


def _max_input(cfg: Config) -> tuple:
    """(long, short) side bound of the training inputs, from the train pipeline's resize steps."""
    sides = []
    for ds in _train_datasets(cfg):
        for step in _walk(list(ds.get('pipeline') or [])):
            for key in ('scale', 'scales'):
                if 'Resize' in str(step.get('type', '')) and key in step:
                    val = step[key]
                    sides += [tuple(val)] if isinstance(val[0], (int, float)) else [tuple(v) for v in val]
    assert sides, 'no Resize scale in the train pipeline'
    return max(max(s) for s in sides), max(min(s) for s in sides)


def _rpn_boxes_into_nms(cfg: Config) -> int:
    """Upper bound of the boxes the RPN hands to batched_nms in training: per level min(nms_pre, anchors)."""
    gen = cfg.model.rpn_head.anchor_generator
    per_pos = len(gen.ratios) * (len(gen.scales) if 'scales' in gen else gen.scales_per_octave)
    div = cfg.model.data_preprocessor.get('pad_size_divisor', 1)
    long_side, short_side = (math.ceil(s / div) * div for s in _max_input(cfg))
    nms_pre = cfg.model.train_cfg.rpn_proposal.nms_pre
    return sum(min(nms_pre, math.ceil(long_side / s) * math.ceil(short_side / s) * per_pos)
               for s in gen.strides)


@functools.lru_cache(maxsize=None)
def _config(name: str) -> Config:
    return Config.fromfile(str(NAMES[name]))


RPN_CONFIGS = [n for n in NAMES if 'rpn_proposal' in _config(n).model.get('train_cfg', {})]


def test_the_rpn_configs_are_all_checked():
    assert len(RPN_CONFIGS) >= 20 and 'frcn/faster_rcnn_r50_fpn_coco.py' in RPN_CONFIGS
    assert len(RPN_CONFIGS) < len(CONFIGS)  # the Fast R-CNN configs (precomputed proposals) have no RPN


@pytest.mark.parametrize('name', RPN_CONFIGS)
def test_training_rpn_stays_off_mmcvs_split_nms_path(name):
    """So that `--amp` training cannot reach the split path's dtype crash at the config's own scale."""
    cfg = _config(name)
    nms_cfg = cfg.model.train_cfg.rpn_proposal.nms
    assert _rpn_boxes_into_nms(cfg) < nms_cfg.get('split_thr', 10000), (name, _rpn_boxes_into_nms(cfg))


def test_vgg16_rpn_reaches_the_split_threshold_without_the_setting():
    """The bound above is not vacuous: VGG16 at 600 x 1000 hands 12,000 boxes to batched_nms."""
    assert _rpn_boxes_into_nms(_config('ohem/faster_rcnn_vgg16_ohem_voc07.py')) == 12000
    assert _rpn_boxes_into_nms(_config('frcn/faster_rcnn_r50_fpn_coco.py')) == 8819


@pytest.fixture(scope='module')
def tiny_fpn():
    """mmdet's R50-FPN Faster R-CNN with our sampler (64/image), 256 proposals, a 2 x 96 px batch."""
    model = build(mmdet_config(FASTER_FPN, sampler=dict(num=64), rpn_max_per_img=256))
    return model, batch(model, num_items=(4, 3), size=96)


def test_readonly_precision_contexts_under_each_training_precision():
    """Which precision each readonly_dtype gives the read-only forward, per training precision (CPU autocast
    shows the autocast side; the TF32 flag is CUDA's): the default 'tf32' keeps fp16 under fp16 autocast and
    turns autocast off (a float32 forward on float32 inputs) under bf16; 'fp32' does so under any autocast;
    None is the training precision; the training context is back afterwards."""
    from mmdet_ohem.readonly_pass import float32_inputs, readonly_autocast, readonly_upcasts
    on = functools.partial(torch.is_autocast_enabled, 'cpu')
    assert not readonly_upcasts('cpu', 'tf32') and not readonly_upcasts('cpu', torch.float32)  # float32 training
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert readonly_upcasts('cpu', 'tf32') and readonly_upcasts('cpu', torch.float32)
        assert not readonly_upcasts('cpu', None) and not readonly_upcasts('cpu', torch.float16)
        for dtype in ('tf32', torch.float32):
            with readonly_autocast('cpu', dtype) as upcast:
                assert not on() and upcast
            assert on() and torch.get_autocast_dtype('cpu') == torch.bfloat16
        with readonly_autocast('cpu', None):
            assert on() and torch.get_autocast_dtype('cpu') == torch.bfloat16
    with torch.autocast('cpu', dtype=torch.float16):
        assert not readonly_upcasts('cpu', 'tf32') and readonly_upcasts('cpu', torch.float32)
        with readonly_autocast('cpu', 'tf32'):
            assert on() and torch.get_autocast_dtype('cpu') == torch.float16
        with readonly_autocast('cpu', torch.float32):
            assert not on()
    x = [torch.ones(2, dtype=torch.bfloat16), (torch.ones(1, dtype=torch.float16), torch.arange(3)), 'a']
    y = float32_inputs({'feats': x, 'n': 1})
    assert [t.dtype for t in (y['feats'][0], *y['feats'][1])] == [torch.float32, torch.float32, torch.int64]
    assert y['feats'][2] == 'a' and y['n'] == 1 and float32_inputs(x[1][1]) is x[1][1]


@pytest.mark.parametrize('readonly_dtype', ['tf32', 'fp32'])
def test_default_readonly_pass_under_bf16_autocast_is_the_exact_float32_pass(tiny_fpn, readonly_dtype):
    """bf16 mined 97.3-99.4% of an exact float32 pass's RoIs on an H100, under the issue's >= 99%: under bf16
    autocast the default read-only pass (and 'fp32') runs in float32 on the bf16 features cast up, i.e.
    it is the exact float32 pass on the CPU, bit for bit; None (the training precision) is not."""
    from mmdet_ohem.readonly_pass import READONLY_PRECISIONS
    from mmdet_ohem.reliability.amp import run_mmcv_ops_in_float32_under_cpu_autocast
    from .test_detectors import _assign_and_feats
    run_mmcv_ops_in_float32_under_cpu_autocast()
    model, data = tiny_fpn
    res, gt, assign, feats = _assign_and_feats(model, data)
    sampler = model.roi_head.bbox_sampler
    every = sampler.collect(assign, res, gt).all
    args = (every.pos_priors, every.pos_gt_bboxes, every.pos_gt_labels, every.neg_priors)
    low = [f.bfloat16() for f in feats]  # what bf16 autocast hands the sampler
    exact = sampler.head.readonly_losses([f.float() for f in low], *args, autocast_dtype=None)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = sampler.head.readonly_losses(low, *args, autocast_dtype=READONLY_PRECISIONS[readonly_dtype])
        training = sampler.head.readonly_losses(low, *args, autocast_dtype=None)
    assert every.pos_priors.shape[0] > 0
    assert torch.equal(got.cls, exact.cls) and torch.equal(got.loc, exact.loc)
    assert not torch.equal(training.cls, exact.cls)  # a bf16 pass really differs


def test_default_readonly_pass_trains_float32_inside_bf16_autocast_training():
    """End to end (the paper's VGG16 config, tiny; images mined together): under bf16 autocast every linear
    layer of the read-only pass gets float32 inputs with autocast off, the training pass's stay autocast
    (bf16 outputs), and two steps train finite."""
    from mmdet_ohem.reliability.amp import run_mmcv_ops_in_float32_under_cpu_autocast
    run_mmcv_ops_in_float32_under_cpu_autocast()
    cfg = Config.fromfile(str(Path(__file__).parent / 'configs' / 'reliability_tiny.py'))
    cfg.model.train_cfg.rcnn.sampler.update(log_stats=False)
    model = build(cfg)
    sampler = model.roi_head.bbox_sampler
    assert sampler.readonly_dtype == 'tf32' and sampler.batched
    data = batch(model, 2, 64, (3, 2), num_classes=4)
    optim = torch.optim.SGD(model.parameters(), lr=0.001)
    with linear_calls_by_pass(model.roi_head.bbox_head, 'cpu') as seen:
        for _ in range(2):
            with torch.autocast('cpu', dtype=torch.bfloat16):
                losses = model.loss(data['inputs'], data['data_samples'])
            loss, _ = model.parse_losses(losses)
            optim.zero_grad()
            loss.backward()
            optim.step()
            assert torch.isfinite(loss)
    assert seen['readonly'] == {(torch.float32, False, False, torch.float32)}  # (TF32 is CUDA's)
    assert {enabled for _, enabled, _, _ in seen['training']} == {True}
    assert torch.bfloat16 in {out for _, _, _, out in seen['training']}


@pytest.mark.parametrize('batch_images', [True, False])
def test_readonly_dtype_other_than_the_amp_dtype_trains(batch_images):
    """Crash 2 on CPU: bf16 autocast training with an fp16 read-only pass (on a GPU: fp16 `--amp` + 'bf16'),
    mining the two images together or one at a time."""
    from mmdet_ohem.reliability.amp import run_mmcv_ops_in_float32_under_cpu_autocast
    run_mmcv_ops_in_float32_under_cpu_autocast()  # mmcv's CPU kernels take float32 only
    with torch.autocast('cpu', dtype=torch.bfloat16):  # the weight-cast cache as the plain Linear shows it
        lin = torch.nn.Linear(4, 4)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
            lin(torch.ones(1, 4))
        with pytest.raises(RuntimeError, match='same dtype'):
            lin(torch.ones(1, 4))
    cfg = Config.fromfile(str(Path(__file__).parent / 'configs' / 'reliability_tiny.py'))  # tiny VGG16 OHEM
    cfg.model.train_cfg.rcnn.sampler.update(readonly_dtype='fp16', log_stats=False, batch_images=batch_images)
    model = build(cfg)
    data = batch(model, 2, 64, (3, 2), num_classes=4)
    optim = torch.optim.SGD(model.parameters(), lr=0.001)
    calls = []
    one, many = RoIHeadAdapter.readonly_losses, RoIHeadAdapter.readonly_losses_batch

    def spy_one(self, *args, **kwargs):
        calls.append(args[-1] if len(args) > 5 else kwargs.get('autocast_dtype'))
        return one(self, *args, **kwargs)

    def spy_many(self, batch, autocast_dtype=None, *args, **kwargs):
        calls.extend([autocast_dtype] * len(batch.sizes))
        return many(self, batch, autocast_dtype, *args, **kwargs)

    RoIHeadAdapter.readonly_losses, RoIHeadAdapter.readonly_losses_batch = spy_one, spy_many
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            losses = model.loss(data['inputs'], data['data_samples'])
        loss, _ = model.parse_losses(losses)
        loss.backward()
        optim.step()
    finally:
        RoIHeadAdapter.readonly_losses, RoIHeadAdapter.readonly_losses_batch = one, many
    assert model.roi_head.bbox_sampler.batched is batch_images
    assert calls == [torch.float16, torch.float16] and torch.isfinite(loss)


def test_readonly_losses_without_syncs_equal_mmdets_head_loss(tiny_fpn):
    """The sync-free loss evaluation gives bit-identical per-RoI losses to BBoxHead.loss."""
    import mmdet_ohem.readonly_pass as rp
    from .test_detectors import _assign_and_feats
    model, data = tiny_fpn
    res, gt, assign, feats = _assign_and_feats(model, data)
    sampler = model.roi_head.bbox_sampler
    every = sampler.collect(assign, res, gt).all
    args = (feats, every.pos_priors, every.pos_gt_bboxes, every.pos_gt_labels, every.neg_priors)
    assert every.pos_priors.shape[0] > 0
    fast = sampler.head.readonly_losses(*args)
    orig = rp._uses_mmdet_bbox_loss
    rp._uses_mmdet_bbox_loss = lambda head: False
    try:
        slow = sampler.head.readonly_losses(*args)
    finally:
        rp._uses_mmdet_bbox_loss = orig
    assert torch.equal(fast.cls, slow.cls) and torch.equal(fast.loc, slow.loc)


class _HostReads:
    """Counts the calls that read a tensor back to the host (on a GPU each one is a synchronisation)."""

    METHODS = ('item', 'tolist', 'cpu', 'numpy', '__bool__', '__int__', '__float__', '__index__',
               'nonzero', 'unique', 'masked_select')

    def __init__(self, monkeypatch):
        self.count, self.paused = 0, 0
        for name in self.METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._counting(getattr(torch.Tensor, name)))
        # A tensor made from Python data on a GPU is copied from the host and waits for it: a sync too.
        monkeypatch.setattr(torch.Tensor, 'new_tensor', self._counting(torch.Tensor.new_tensor))
        for name in ('nonzero', 'unique', 'masked_select', 'tensor', 'as_tensor'):
            monkeypatch.setattr(torch, name, self._counting(getattr(torch, name)))
        monkeypatch.setattr(torch.Tensor, '__getitem__', self._counting(torch.Tensor.__getitem__, masks_only=True))
        monkeypatch.setattr(torch.Tensor, '__setitem__', self._counting(torch.Tensor.__setitem__, masks_only=True))

    def _counting(self, fn, masks_only=False):
        def inner(*args, **kwargs):
            if not self.paused and (not masks_only or self._has_mask(args[1])):
                self.count += 1
            self.paused += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.paused -= 1
        return inner

    @staticmethod
    def _has_mask(index):
        items = index if isinstance(index, tuple) else (index, )
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)



@pytest.mark.parametrize('nms', [dict(type='LossNMS', iou_threshold=0.7), None])
@pytest.mark.parametrize('batch_images', [True, False])
def test_sample_reads_back_one_small_tensor_beyond_the_candidates_nonzero(monkeypatch, nms, batch_images, tiny_fpn):
    import mmdet_ohem.selection.select as select_mod
    model, data = tiny_fpn
    from .test_detectors import _assign_and_feats
    res, gt, _, feats = _assign_and_feats(model, data)
    ours = OHEMSampler(num=32, context=model.roi_head, nms=nms, batch_images=batch_images)
    reference = OHEMSampler(num=32, context=model.roi_head, nms=nms, log_stats=False, batch_images=False)
    want = reference.sample(model.roi_head.bbox_assigner.assign(res, gt), res, gt, feats=feats)

    MessageHub.get_instance(f'issue10-reads-{nms is None}-{batch_images}')  # a fresh hub
    monkeypatch.setattr(select_mod, 'resolve_method', lambda method, device, n: 'device')  # the GPU path
    assign = model.roi_head.bbox_assigner.assign(res, gt)
    reads = _HostReads(monkeypatch)
    got = ours.sample(assign, res, gt, feats=feats)
    got.pos_inds  # the RoI head reads the result: a deferred one is mined now
    # The read-only pass's FPN level counts (one read instead of mmdet's nonzero per level) and the one read
    # that sizes the result; one image at a time, the candidates' two nonzero() besides (RandomSampler
    # makes them too, and two unique()). The box coder's constants were copied to the device by `reference`.
    assert reads.count == (2 if batch_images else 4)
    monkeypatch.undo()
    # The same selection as the host path, positives and negatives in the same order.
    assert torch.equal(got.pos_inds, want.pos_inds) and torch.equal(got.neg_inds, want.neg_inds)
    # The statistics came with that one read (Python numbers; no read of their own), equal to the host
    # path's, which stay device tensors until the logger reads them.
    st, ref = ours.last_stats, reference.last_stats
    assert isinstance(st.suppressed, int) and isinstance(st.mined_loss, float)
    assert isinstance(ref.suppressed, torch.Tensor) and isinstance(ref.mined_loss, torch.Tensor)
    assert (st.suppressed, st.nonfinite, st.cand_finite, st.mined, st.mined_fg) == \
        (int(ref.suppressed), int(ref.nonfinite), int(ref.cand_finite), ref.mined, ref.mined_fg)
    assert st.mined_loss == pytest.approx(float(ref.mined_loss), rel=1e-5)
    assert st.cand_loss == pytest.approx(float(ref.cand_loss), rel=1e-5)


def test_two_images_mined_together_read_back_once(monkeypatch, tiny_fpn):
    """Both images of a batch: ONE read for the two selections and one for the read-only pass's FPN level
    counts, nothing else (no nonzero() gathers the candidates: every row goes through, the others masked);
    the same RoIs as mining each image alone."""
    import mmdet_ohem.selection.select as select_mod
    model, data = tiny_fpn
    _, images = sampler_inputs(model, data)
    alone = OHEMSampler(num=32, context=model.roi_head, log_stats=False, batch_images=False)
    want = [alone.sample(model.roi_head.bbox_assigner.assign(r, gt), r, gt, feats=f) for r, gt, f in images]
    together = OHEMSampler(num=32, context=model.roi_head, log_stats=False)
    monkeypatch.setattr(select_mod, 'resolve_method', lambda method, device, n: 'device')  # the GPU path
    assigns = [model.roi_head.bbox_assigner.assign(r, gt) for r, gt, _ in images]
    reads = _HostReads(monkeypatch)
    got = [together.sample(a, r, gt, feats=f) for a, (r, gt, f) in zip(assigns, images)]
    assert reads.count == 0 and len(together._pending) == 2  # nothing mined yet, nothing read
    got[1].neg_inds  # the first read of any result mines both
    assert reads.count == 2 and not together._pending
    monkeypatch.undo()
    for g, w in zip(got, want):
        assert torch.equal(g.pos_inds, w.pos_inds) and torch.equal(g.neg_inds, w.neg_inds)
        assert torch.equal(g.pos_gt_labels, w.pos_gt_labels) and torch.equal(g.priors, w.priors)


def test_statistics_are_read_back_once_when_logged(tiny_fpn):
    """Keys and meaning as before; nothing read until the hub is read; one history entry per iteration."""
    model, data = tiny_fpn
    from .test_detectors import _assign_and_feats
    res, gt, _, feats = _assign_and_feats(model, data)
    hub = MessageHub.get_instance('issue10-stats')
    hub.update_info('iter', 7)
    sampler = OHEMSampler(num=32, context=model.roi_head)
    logger = sampler._stats_logger
    flushes = []
    orig_flush = logger.flush

    def counting_flush():
        pending = sum(r.dirty for r in logger._records)
        if pending:
            flushes.append(pending)  # a read-back of `pending` iterations
        orig_flush()
    logger.flush = counting_flush
    per_image = []
    for img in (0, 1):
        res, gt, _, feats = _assign_and_feats(model, data, img)
        sampler.sample(model.roi_head.bbox_assigner.assign(res, gt), res, gt, feats=feats)
        per_image.append(sampler.last_stats)
    assert flushes == []  # nothing read back yet
    cands = hub.get_scalar('train/ohem_cands')
    assert float(cands.current()) == (per_image[0].candidates + per_image[1].candidates) / 2
    assert flushes == [1]  # one read for the whole iteration
    mined = sum(s.mined for s in per_image)
    assert float(hub.get_scalar('train/ohem_fg_share').current()) == sum(s.mined_fg for s in per_image) / mined
    assert hub.get_scalar('train/ohem_mined_rl').current() == pytest.approx(
        float(sum(s.mined_loss for s in per_image)) / mined)
    assert hub.get_scalar('train/ohem_cand_rl').current() == pytest.approx(
        float(sum(s.cand_loss for s in per_image)) / float(sum(s.cand_finite for s in per_image)))
    assert hub.get_scalar('train/ohem_nms_supp').current() == pytest.approx(
        float(sum(s.suppressed for s in per_image)) / 2)
    assert float(hub.get_scalar('train/ohem_nonfinite').current()) == 0
    assert len(cands.data[0]) == 1 and flushes == [1]
    hub.update_info('iter', 8)
    sampler.sample(model.roi_head.bbox_assigner.assign(res, gt), res, gt, feats=feats).pos_inds  # read: mined
    assert len(cands.data[0]) == 2  # one entry per iteration
    # A checkpoint of the hub holds plain mmengine buffers.
    import copy
    from mmengine.logging import HistoryBuffer
    assert type(copy.deepcopy(cands)) is HistoryBuffer and len(copy.deepcopy(cands).data[0]) == 2


@pytest.mark.parametrize('layer', ['RoIAlign', 'RoIPool'])
def test_mmcv_roi_layers_take_bfloat16_features(layer):
    """bf16 `--amp`: mmcv's kernels have no bfloat16 build; the compat fix computes in float32."""
    import mmcv.ops
    from mmcv.ops.roi_align import roi_align
    feats = torch.randn(1, 4, 16, 16)
    rois = torch.tensor([[0., 1., 1., 9., 9.], [0., 2., 3., 15., 12.]])
    if layer == 'RoIPool':
        if not torch.cuda.is_available():
            pytest.skip('mmcv 2.1 has no CPU RoIPool kernel')
        feats, rois = feats.cuda(), rois.cuda()
    module = getattr(mmcv.ops, layer)(output_size=3, spatial_scale=1.0)
    with pytest.raises(RuntimeError):  # mmcv's own function, the unwrapped path
        (roi_align if layer == 'RoIAlign' else mmcv.ops.roi_pool)(feats.bfloat16(), rois.bfloat16(), 3, 1.0)
    x = feats.bfloat16().requires_grad_()
    out = module(x, rois.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, module(x.detach().float(), rois.bfloat16().float()).bfloat16())
    out.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    assert module(feats, rois).dtype == torch.float32  # other dtypes: mmcv's path, unchanged


def test_tf32_readonly_precision_touches_only_cuda_float32_matmuls():
    """'tf32' (the default): TF32 matmuls inside the block for a float32 forward on CUDA, and the flag back
    afterwards (also after an error); nothing on the CPU. The flag is a host setting: checkable here."""
    from mmdet_ohem.readonly_pass import readonly_autocast
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    with readonly_autocast('cuda', 'tf32'):
        assert matmul.allow_tf32
    assert matmul.allow_tf32 == before
    with pytest.raises(KeyError):
        with readonly_autocast('cuda', 'tf32'):
            raise KeyError('boom')
    assert matmul.allow_tf32 == before
    with readonly_autocast('cpu', 'tf32'):
        assert matmul.allow_tf32 == before


@pytest.mark.parametrize('pos_weight', [-1, 2.0])
def test_fast_targets_equal_mmdets_get_targets(tiny_fpn, pos_weight):
    """The read-only pass's sync-free targets are BBoxHead.get_targets' (labels, weights, deltas), bit for bit."""
    from mmdet.structures.bbox import get_box_tensor
    from .test_detectors import _assign_and_feats
    model, data = tiny_fpn
    res, gt, assign, _ = _assign_and_feats(model, data)
    sampler = model.roi_head.bbox_sampler
    every = sampler.collect(assign, res, gt).all
    assert every.pos_priors.shape[0] > 0 and sampler.readonly_dtype == 'tf32'
    cfg = sampler.head.train_cfg
    old = cfg.pos_weight
    cfg.pos_weight = pos_weight
    try:
        fast = sampler.head._fast_targets(get_box_tensor(every.pos_priors), get_box_tensor(every.neg_priors),
                                          every.pos_gt_bboxes, every.pos_gt_labels)
        want = sampler.head.bbox_head.get_targets([every], cfg, concat=True)
    finally:
        cfg.pos_weight = old
    labels, label_weights, pos_deltas, unused = fast
    want_labels, want_label_weights, want_targets, want_box_weights = want
    num_pos = every.pos_priors.shape[0]
    assert labels.dtype == want_labels.dtype and torch.equal(labels, want_labels)
    if pos_weight == -1:  # every label weight is 1: none passed
        assert label_weights is None and torch.equal(want_label_weights, torch.ones_like(want_label_weights))
    else:
        assert label_weights.dtype == want_label_weights.dtype and torch.equal(label_weights, want_label_weights)
    assert pos_deltas.dtype == want_targets.dtype and torch.equal(pos_deltas, want_targets[:num_pos])
    # What the sync-free loss relies on: no box targets for negatives, box weights 1 exactly on positives.
    assert unused is None and not want_targets[num_pos:].any()
    assert torch.equal(want_box_weights, (torch.arange(len(want_labels)) < num_pos)[:, None].expand_as(
        want_box_weights).to(want_box_weights.dtype))


@pytest.mark.parametrize('scale', [None, 1.5])
def test_one_read_extraction_equals_mmdets(monkeypatch, scale):
    """The read-only pass's FPN RoI extraction: one host read for the level counts instead of a nonzero per
    level, the same features bit for bit (a level without RoIs included), and only for mmdet's own class."""
    from mmdet.registry import MODELS
    from mmdet_ohem.readonly_pass import extract_levels_one_read, one_read_extraction
    torch.manual_seed(0)
    ext = MODELS.build(dict(type='SingleRoIExtractor', out_channels=8, featmap_strides=[4, 8, 16, 32],
                            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0)))
    feats = [torch.randn(2, 8, 64 // s, 96 // s) for s in (1, 2, 4, 8)]
    xy = torch.rand(60, 2) * torch.tensor([90., 60.])
    wh = torch.rand(60, 2) * 40 + 1  # up to 41 px: levels 0 and 1 only, levels 2 and 3 unused
    rois = torch.cat([torch.randint(0, 2, (60, 1)).float(), xy, xy + wh], dim=1)
    want = ext(feats, rois, scale)
    reads = _HostReads(monkeypatch)
    got = extract_levels_one_read(ext, feats, rois, scale)
    assert reads.count == 1
    monkeypatch.undo()
    assert torch.equal(got, want)
    assert int((ext.map_roi_levels(rois, 4) >= 2).sum()) == 0  # the unused levels were unused
    with one_read_extraction(torch.nn.Module()):  # no box extractor: nothing to swap
        pass
    holder = torch.nn.Module()
    holder.bbox_roi_extractor = ext
    with one_read_extraction(holder):
        assert torch.equal(ext(feats, rois, scale), want) and 'forward' in vars(ext)
    assert 'forward' not in vars(ext)  # mmdet's forward again
    assert torch.equal(extract_levels_one_read(ext, feats, rois[:0]), ext(feats, rois[:0]))


def _level_cases(ext, num_levels: int, device: str = 'cpu') -> torch.Tensor:
    """RoIs whose areas are every float32 within 2,048 ulps of each level bound, random areas from 0 to 10**7,
    and the edge cases: zero, negative and NaN widths, infinite and huge areas."""
    from mmdet_ohem.readonly_pass import _level_bounds
    bounds = _level_bounds(ext, num_levels, torch.device(device))[1:-1]
    near = (bounds.view(torch.int32)[:, None] + torch.arange(-2048, 2049, device=device)).view(torch.float32)
    g = torch.Generator().manual_seed(0)
    areas = torch.cat([near.flatten(), (torch.rand(20000, generator=g) ** 4 * 1e7).to(device)])
    rois = torch.zeros(len(areas), 5, device=device)
    rois[:, 1:3] = torch.rand(len(areas), 2, generator=g).to(device) * 100
    rois[:, 3] = rois[:, 1] + areas  # w = area (x2 - x1 rounds: the area is w * h of these coordinates)
    rois[:, 4] = rois[:, 2] + 1
    nan, inf = float('nan'), float('inf')
    edge = torch.tensor([[0, 5, 5, 5, 9], [0, 5, 5, 4, 9], [0, 5, 5, 9, 4], [0, nan, 0, 1, 1], [0, 0, 0, inf, 1],
                         [0, -inf, 0, inf, 1], [0, 0, 0, 3e30, 3e30], [0, 0, 0, 1e-30, 1e-30], [0, 5, 5, 5, inf]],
                        device=device)
    return torch.cat([rois, edge])


@pytest.mark.parametrize('num_levels,finest_scale', [(4, 56), (5, 56), (3, 40), (1, 56)])
def test_map_roi_levels_buckets_the_area_as_mmdets_levels(num_levels, finest_scale, monkeypatch):
    """The read-only pass maps float32 RoIs to FPN levels by bucketing the area (6 operators, not 14), the
    bounds found with mmdet's own method: the same level as ``SingleRoIExtractor.map_roi_levels`` for every
    float32 area near each bound and for random areas; where mmdet's level is undefined (NaN: a negative
    width or a NaN coordinate) outside the levels too. Other dtypes run mmdet's method."""
    from mmdet.registry import MODELS
    from mmdet_ohem.readonly_pass import _level_bounds, map_roi_levels
    ext = MODELS.build(dict(type='SingleRoIExtractor', out_channels=8, featmap_strides=[4, 8, 16, 32, 64][:num_levels],
                            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                            finest_scale=finest_scale))
    rois = _level_cases(ext, num_levels)
    want, got = ext.map_roi_levels(rois, num_levels), map_roi_levels(ext, rois, num_levels)
    defined = (want >= 0) & (want < num_levels)
    assert torch.equal(got[defined], want[defined])
    assert not ((got[~defined] >= 0) & (got[~defined] < num_levels)).any() and (~defined).sum() == 4  # x2 < x1, y2 < y1, NaN, 0 * inf
    if num_levels > 1:
        assert _level_bounds(ext, num_levels, torch.device('cpu'))[1].item() ** 0.5 == pytest.approx(2 * finest_scale)
    half = rois[:100].half()
    assert torch.equal(map_roi_levels(ext, half, num_levels), ext.map_roi_levels(half, num_levels))
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    monkeypatch.setattr(SingleRoIExtractor, 'map_roi_levels', SingleRoIExtractor.map_roi_levels)  # restored after
    from mmdet_ohem.compat.fp32_roi_levels import float32_roi_levels
    float32_roi_levels()  # the opt-in fix (the same on float32 RoIs): still bucketed, the same levels
    assert getattr(SingleRoIExtractor.map_roi_levels, '_mmdet_ohem_fp32', False)
    assert torch.equal(map_roi_levels(ext, rois, num_levels)[defined], want[defined])
    monkeypatch.setattr(SingleRoIExtractor, 'map_roi_levels', lambda self, rois, n: torch.zeros(len(rois),
                                                                                               dtype=torch.long))
    assert not map_roi_levels(ext, rois, num_levels).any()  # another function patched in: that one
    monkeypatch.undo()
    ext.map_roi_levels = lambda rois, n: torch.zeros(len(rois), dtype=torch.long)  # its own method: that one
    assert not map_roi_levels(ext, rois, num_levels).any()


class _RecordingRoILayer(torch.nn.Module):
    """Stands in for an mmcv RoI layer: records the RoIs it gets and returns each RoI's level index and
    first coordinate, in the features' dtype."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level, self.output_size, self.seen = level, (1, 1), []

    def forward(self, feats, rois):
        self.seen.append(rois)
        return torch.stack([torch.full_like(rois[:, 1], self.level), rois[:, 1]], 1).to(feats.dtype)[..., None, None]


@pytest.mark.parametrize('levels', [4, 1])
def test_float32_rois_extraction_keeps_the_coordinates_and_maps_levels_in_float32(levels):
    """``fast_roi_align``'s extraction (``float32_rois=True``) on float16 feature maps: the RoI layers get the
    float32 RoIs mmdet would round to float16, and the FPN levels come from them. mmdet's own (float16)
    mapping computes the area in float16, which overflows above 65,504: a 300x300 RoI goes to the coarsest
    level there, to level 2 in float32 (the exact forward's level)."""
    from mmdet.registry import MODELS
    from mmdet_ohem.readonly_pass import extract_levels_one_read
    ext = MODELS.build(dict(type='SingleRoIExtractor', out_channels=2, featmap_strides=[4, 8, 16, 32][:levels],
                            roi_layer=dict(type='RoIAlign', output_size=1, sampling_ratio=0)))
    ext.roi_layers = torch.nn.ModuleList(_RecordingRoILayer(i) for i in range(levels))
    feats = [torch.zeros(1, 2, 4, 4, dtype=torch.float16) for _ in range(levels)]
    rois = torch.tensor([[0, 10.3, 20.1, 40.7, 60.9],       # 30x41 px: level 0
                         [0, 1000.3, 0.0, 1300.3, 300.0],   # 300x300 px: level 2 (fp16: 3)
                         [0, 0.1, 0.0, 600.1, 600.0]])      # 600x600 px: level 3
    got = extract_levels_one_read(ext, feats, rois, float32_rois=True)
    assert got.dtype == torch.float16 and got.shape == (3, 2, 1, 1)
    assert all(r.dtype == torch.float32 for layer in ext.roi_layers for r in layer.seen)
    assert got[:, 1, 0, 0].tolist() == rois[:, 1].half().tolist()  # each RoI's own row, in its order
    if levels == 4:
        assert got[:, 0, 0, 0].tolist() == [0, 2, 3]
        assert ext.map_roi_levels(rois.half(), 4).tolist() == [0, 3, 3]  # mmdet's float16 mapping
        seen = torch.cat([r for layer in ext.roi_layers for r in layer.seen])
        assert sorted(seen[:, 1].tolist()) == sorted(rois[:, 1].tolist())  # not rounded to float16
        for layer in ext.roi_layers:
            layer.seen.clear()
        extract_levels_one_read(ext, feats, rois)  # without: mmdet's float16 RoIs and levels
        assert [len(layer.seen) for layer in ext.roi_layers] == [1, 0, 0, 1]
        assert all(r.dtype == torch.float16 for layer in ext.roi_layers for r in layer.seen)
    assert extract_levels_one_read(ext, feats, rois[:0], float32_rois=True).shape == (0, 2, 1, 1)


def test_float32_rois_only_where_the_kernel_runs(monkeypatch):
    """With ``fast_roi_align`` (the default) the read-only extraction keeps float32 RoIs and levels only for
    CUDA features, where the Triton kernel runs; on the CPU (e.g. bf16 ``--amp`` there) mmcv's layers take
    the RoIs in the features' dtype, mapped to levels as mmdet maps them, so the CPU's read-only pass is the
    same whatever the setting says."""
    from types import SimpleNamespace

    import mmdet_ohem.readonly_pass as rp
    from mmdet.registry import MODELS
    from mmdet_ohem.kernels import triton_available
    ext = MODELS.build(dict(type='SingleRoIExtractor', out_channels=2, featmap_strides=[4, 8],
                            roi_layer=dict(type='RoIAlign', output_size=1, sampling_ratio=0)))
    holder = SimpleNamespace(bbox_roi_extractor=ext)
    seen = []
    monkeypatch.setattr(rp, 'extract_levels_one_read', lambda ext, feats, rois, scale=None, float32_rois=False,
                        one_launch=False: seen.append(float32_rois))
    cpu, gpu = [torch.zeros(1, 2, 4, 4)], [SimpleNamespace(is_cuda=True)]  # the stand-in is never read
    rois = torch.zeros(1, 5)
    for fast in (True, False):
        with rp.one_read_extraction(holder, fast_roi_align=fast):
            ext(cpu, rois)
            ext(gpu, rois)
    assert 'forward' not in vars(ext)
    # float32 RoIs on CUDA features with the layers patched (Triton installed), never on the CPU
    assert seen == [False, triton_available(), False, False]


def test_fast_roi_align_on_the_cpu_is_mmcvs_float32_pass(tiny_fpn, monkeypatch):
    """``fast_roi_align=True`` off a GPU: the RoIAlign layers fall back to mmcv's (on RoIs cast to the
    features' dtype), so in float32 the read-only losses are those of ``fast_roi_align=False``, bit for bit;
    the setting is type-checked and shown in the build log's description."""
    from mmdet.registry import TASK_UTILS
    from .test_detectors import _assign_and_feats
    model, data = tiny_fpn
    res, gt, assign, feats = _assign_and_feats(model, data)
    sampler = model.roi_head.bbox_sampler
    every = sampler.collect(assign, res, gt).all
    args = (feats, every.pos_priors, every.pos_gt_bboxes, every.pos_gt_labels, every.neg_priors)
    import mmdet_ohem.kernels.roi_align as ra
    from mmdet_ohem.kernels import triton_available
    tried, orig = [], ra.readonly_roi_align
    monkeypatch.setattr(ra, 'readonly_roi_align', lambda *a: tried.append(a[2].dtype) or orig(*a))
    runs, default = [], sampler.head.fast_roi_align
    assert default  # the default since 2026-11-27's sixteenth session
    for fast in (True, False):
        sampler.head.fast_roi_align = fast
        try:
            runs.append(sampler.head.readonly_losses(*args))
        finally:
            sampler.head.fast_roi_align = default
    assert torch.equal(runs[0].cls, runs[1].cls) and torch.equal(runs[0].loc, runs[1].loc)
    if triton_available():  # the layers were patched: each level's call tried the kernel first
        assert tried and set(tried) == {torch.float32}
    built = TASK_UTILS.build(dict(type='OHEMSampler', num=64), default_args=dict(context=model.roi_head))
    assert built.head.fast_roi_align and 'fast_roi_align=True' in built.describe()
    built = TASK_UTILS.build(dict(type='OHEMSampler', num=64, fast_roi_align=False), default_args=dict(
        context=model.roi_head))
    assert not built.head.fast_roi_align and 'fast_roi_align=False' in built.describe()
    with pytest.raises(TypeError, match="fast_roi_align must be True or False, got 'yes'"):
        TASK_UTILS.build(dict(type='OHEMSampler', num=64, fast_roi_align='yes'),
                         default_args=dict(context=model.roi_head))


def test_one_launch_levels_setting(tiny_fpn):
    """``one_launch_levels`` (on by default): type-checked, reaches the read-only pass, shown in the build log's
    description, and changes nothing on the CPU (the extraction takes the one-launch
    path on CUDA features only)."""
    from mmdet.registry import TASK_UTILS
    from .test_detectors import _assign_and_feats
    model, data = tiny_fpn
    res, gt, assign, feats = _assign_and_feats(model, data)
    built = TASK_UTILS.build(dict(type='OHEMSampler', num=64, one_launch_levels=False),
                             default_args=dict(context=model.roi_head))
    assert not built.head.one_launch_levels and 'one_launch_levels=False' in built.describe()
    on = TASK_UTILS.build(dict(type='OHEMSampler', num=64), default_args=dict(context=model.roi_head))
    assert on.head.one_launch_levels and 'one_launch_levels=True' in on.describe()
    every = built.collect(assign, res, gt).all
    args = (feats, every.pos_priors, every.pos_gt_bboxes, every.pos_gt_labels, every.neg_priors)
    a, b = built.head.readonly_losses(*args), on.head.readonly_losses(*args)
    assert torch.equal(a.cls, b.cls) and torch.equal(a.loc, b.loc)
    with pytest.raises(TypeError, match="one_launch_levels must be True or False, got 1"):
        TASK_UTILS.build(dict(type='OHEMSampler', num=64, one_launch_levels=1),
                         default_args=dict(context=model.roi_head))


def test_opt_in_float32_roi_levels_fixes_mmdets_fp16_area_overflow(monkeypatch, tmp_path):
    """mmdet_ohem.compat.fp32_roi_levels (opt-in, by import or custom_imports): under fp16 autocast mmdet's
    extractor maps a 300x300 px RoI to the coarsest level (its float16 area overflows); with the fix it maps
    it to level 2, as float32 training does, through the extractor's forward too; float32 RoIs map as
    before; idempotent. ``import mmdet_ohem`` alone does not apply it."""
    import importlib
    import sys

    importlib.import_module('mmdet_ohem')
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    from mmdet.registry import MODELS
    assert not getattr(SingleRoIExtractor.map_roi_levels, '_mmdet_ohem_fp32', False)
    ext = MODELS.build(dict(type='SingleRoIExtractor', out_channels=2, featmap_strides=[4, 8, 16, 32],
                            roi_layer=dict(type='RoIAlign', output_size=1, sampling_ratio=0)))
    ext.roi_layers = torch.nn.ModuleList(_RecordingRoILayer(i) for i in range(4))
    rois = torch.tensor([[0, 10.3, 20.1, 40.7, 60.9], [0, 1000.3, 0.0, 1300.3, 300.0], [0, 0.1, 0.0, 600.1, 600.0]])
    feats = [torch.zeros(1, 2, 4, 4, dtype=torch.float16) for _ in range(4)]

    def levels_through_forward():
        return ext(feats, rois)[:, 0, 0, 0].tolist()  # each RoI's level, in the RoIs' order

    with torch.autocast('cpu', dtype=torch.float16):
        assert ext.map_roi_levels(rois.half(), 4).tolist() == [0, 3, 3]
        assert levels_through_forward() == [0, 3, 3]  # mmdet's forward casts to float16 itself
    want32 = ext.map_roi_levels(rois, 4)
    monkeypatch.setattr(SingleRoIExtractor, 'map_roi_levels', SingleRoIExtractor.map_roi_levels)  # restored after
    cfg = tmp_path / 'opt_in.py'  # the documented opt-in: a config's custom_imports
    cfg.write_text("custom_imports = dict(imports=['mmdet_ohem', 'mmdet_ohem.compat.fp32_roi_levels'], "
                   "allow_failed_imports=False)\n")
    first = 'mmdet_ohem.compat.fp32_roi_levels' not in sys.modules
    Config.fromfile(str(cfg))
    assert getattr(SingleRoIExtractor.map_roi_levels, '_mmdet_ohem_fp32', False) or not first
    module = importlib.import_module('mmdet_ohem.compat.fp32_roi_levels')
    module.float32_roi_levels()
    module.float32_roi_levels()  # idempotent: wrapped once
    assert getattr(SingleRoIExtractor.map_roi_levels, '_mmdet_ohem_fp32', False)
    assert not getattr(SingleRoIExtractor.map_roi_levels.__wrapped__, '_mmdet_ohem_fp32', False)
    with torch.autocast('cpu', dtype=torch.float16):
        assert ext.map_roi_levels(rois.half(), 4).tolist() == [0, 2, 3]
        assert levels_through_forward() == [0, 2, 3]
    assert torch.equal(ext.map_roi_levels(rois, 4), want32)
