"""Issue 10: all images of a batch mined together (``OHEMSampler(batch_images=True)``, the default).

``sample()`` returns a :class:`DeferredSamplingResult`; the RoI head's first read of a result mines every
pending image in one read-only forward and one batched selection. These tests check that this gives the
RoIs of mining each image alone, that the deferred result behaves as a ``SamplingResult`` everywhere, and
that what cannot be batched falls back to one image at a time.
"""
import copy
import pickle

import pytest
import torch
from mmdet.models.task_modules.samplers import SamplingResult

from mmdet_ohem.readonly_pass import BatchRows, batch_feature_view
from mmdet_ohem.samplers import OHEMSampler
from mmdet_ohem.samplers.ohem_sampler import DeferredSamplingResult

from ._detectors import (CASCADE_FPN, FASTER_FPN, batch, build, mined_selections, mmdet_config, sampler_inputs,
                         train_three_steps)


@pytest.fixture(scope='module')
def fpn():
    model = build(mmdet_config(FASTER_FPN, sampler=dict(num=48), rpn_max_per_img=200))
    return model, batch(model, num_items=(4, 3), size=96)


def _images(model, data):
    """Both images' proposals, gt and features, as StandardRoIHead.loss hands them to the sampler."""
    return sampler_inputs(model, data)


def _sample_all(sampler, model, images):
    assign = model.roi_head.bbox_assigner.assign
    return [sampler.sample(assign(res, gt), res, gt, feats=feats) for res, gt, feats in images]


def _same(a, b):
    return (torch.equal(a.pos_inds, b.pos_inds) and torch.equal(a.neg_inds, b.neg_inds)
            and torch.equal(a.pos_gt_labels, b.pos_gt_labels) and torch.equal(a.pos_priors, b.pos_priors)
            and torch.equal(a.neg_priors, b.neg_priors) and a.avg_factor == b.avg_factor)


def test_batch_feature_view_rebuilds_the_batch_without_copying():
    x = [torch.randn(3, 4, 5, 6), torch.randn(3, 4, 2, 3)]
    per_image = [[lvl[i][None] for lvl in x] for i in (0, 2)]
    levels, index = batch_feature_view(per_image)
    assert index == [0, 2]
    for lvl, full in zip(levels, x):
        assert lvl.data_ptr() == full.data_ptr() and torch.equal(lvl, full)  # images 0..2, a view
    levels, index = batch_feature_view([[lvl[i][None] for lvl in x] for i in (2, 1)])
    assert index == [1, 0] and torch.equal(levels[0], x[0][1:])
    # All images of the batch, as mmdet's heads hand them: the batch tensors themselves, no new view
    levels, index = batch_feature_view([[lvl[i][None] for lvl in x] for i in (0, 1, 2)])
    assert index == [0, 1, 2] and all(lvl is full for lvl, full in zip(levels, x))
    # Views that are not mmdet's (a view of a view of another shape): the storage-based path finds the batch
    wide = torch.randn(3, 8, 5, 6)
    narrow = wide[:, :4]
    levels, index = batch_feature_view([[narrow[i][None]] for i in (0, 1)])
    assert all(torch.equal(levels[0][k], narrow[i]) for k, i in zip(index, (0, 1)))
    # Not slices of one batch (copies, or levels that disagree): None, and the caller concatenates.
    assert batch_feature_view([[lvl[i][None].clone() for lvl in x] for i in (0, 1)]) is None
    mixed = [[x[0][0][None], x[1][1][None]], [x[0][1][None], x[1][0][None]]]
    assert batch_feature_view(mixed) is None


def _rows(sampler, model, images, feats=None):
    """Every row of both images' candidate lists as the sampler hands them to the batched pass, and per
    image its candidates (mmdet's gathering: ``collect``) for the per-image pass."""
    from mmdet.structures.bbox import get_box_tensor
    boxes, gt_boxes, labels, is_pos, alls = [], [], [], [], []
    for res, gt, _ in images:
        assign = model.roi_head.bbox_assigner.assign(res, gt)
        alls.append(sampler.collect(copy.deepcopy(assign), res, gt).all)
        priors, _ = sampler.with_gt(assign, res, gt)
        boxes.append(get_box_tensor(priors))
        gt_boxes.append(get_box_tensor(gt.bboxes)[(assign.gt_inds - 1).clamp(min=0)])
        is_pos.append(assign.gt_inds > 0)
        labels.append(torch.where(is_pos[-1], assign.labels, model.roi_head.bbox_head.num_classes))
    rows = BatchRows(feats or [f for _, _, f in images], [b.shape[0] for b in boxes], torch.cat(boxes),
                     torch.cat(gt_boxes), torch.cat(labels), torch.cat(is_pos))
    return rows, alls


def test_batched_readonly_losses_equal_the_per_image_pass(fpn):
    """Every row of both images in one pass (image after image, in candidate-list order, nothing gathered):
    each positive and negative row gets the loss the per-image pass gives that candidate."""
    model, data = fpn
    _, images = _images(model, data)
    sampler = OHEMSampler(num=48, context=model.roi_head, log_stats=False)
    rows, alls = _rows(sampler, model, images)
    for max_rois in (2560, 37):  # one forward, or many chunks across the image boundary
        flat = sampler.head.readonly_losses_batch(rows, None, max_rois)
        assert flat.cls.shape == flat.loc.shape == (sum(rows.sizes), )
        start = 0
        for size, a, (_, _, feats) in zip(rows.sizes, alls, images):
            alone = sampler.head.readonly_losses(feats, a.pos_priors, a.pos_gt_bboxes, a.pos_gt_labels,
                                                 a.neg_priors)
            order = torch.cat([a.pos_inds, a.neg_inds]) + start  # the per-image pass's rows: positives first
            torch.testing.assert_close(flat.cls[order], alone.cls)
            torch.testing.assert_close(flat.loc[order], alone.loc)
            assert not flat.loc[start + a.neg_inds].any()  # no box loss off the positives
            start += size
    # Copies of the features (not slices of one batch) are stacked: the same losses.
    copied, _ = _rows(sampler, model, images, [[f.clone() for f in feats] for _, _, feats in images])
    torch.testing.assert_close(sampler.head.readonly_losses_batch(copied).cls, flat.cls)
    # The forward alone and RowRanking (what a CUDA graph captures with the selection): the same values.
    outputs, whole = sampler.head.readonly_forward_batch(rows), sampler.head.readonly_losses_batch(rows)
    for mode in ('cls', 'loc', 'cls+loc'):
        front = sampler.head.row_ranking(mode)
        assert torch.equal(front(front.rows(*outputs, rows)), whole.ranking(mode))
    with pytest.raises(ValueError, match="ranking_loss must be one of 'cls', 'loc', 'cls\\+loc', got 'cls\\+box'"):
        sampler.head.row_ranking('cls+box')


def test_batched_pass_precisions_under_bf16_autocast(fpn):
    """Images mined together under bf16 autocast: the default read-only pass (and 'fp32') is the exact
    float32 pass on the bf16 features cast up, bit for bit, in one chunk or many; an fp16 pass (nested
    autocast of the other dtype) runs through the R50-FPN's multi-level extraction, whose concatenation
    autocast refused ("Unexpected floating ScalarType in at::autocast::prioritize")."""
    from mmdet_ohem.reliability.amp import run_mmcv_ops_in_float32_under_cpu_autocast
    run_mmcv_ops_in_float32_under_cpu_autocast()
    model, data = fpn
    _, images = _images(model, data)
    sampler = OHEMSampler(num=48, context=model.roi_head, log_stats=False)
    low = [[f.bfloat16() for f in feats] for _, _, feats in images]
    rows, _ = _rows(sampler, model, images, low)
    ext = model.roi_head.bbox_roi_extractor
    finest, ext.finest_scale = ext.finest_scale, 16  # 96 px images: RoIs on every level, not level 0 alone
    try:
        levels = ext.map_roi_levels(torch.cat([rows.boxes.new_zeros(len(rows.boxes), 1), rows.boxes], 1), 4)
        assert len(levels.unique()) > 1
        cast_up = _rows(sampler, model, images, [[f.float() for f in fs] for fs in low])[0]
        # the exact pass in the same chunks: a matmul's last bits may depend on its number of rows (they do on
        # some CPUs' BLAS), which is not what this compares
        exact = {m: sampler.head.readonly_losses_batch(cast_up, None, m) for m in (2560, 37)}
        with torch.autocast('cpu', dtype=torch.bfloat16):
            for dtype, max_rois in (('tf32', 2560), ('tf32', 37), (torch.float32, 2560)):
                got = sampler.head.readonly_losses_batch(rows, dtype, max_rois)
                assert torch.equal(got.cls, exact[max_rois].cls) and torch.equal(got.loc, exact[max_rois].loc)
            fp16 = sampler.head.readonly_losses_batch(rows, torch.float16)
            training = sampler.head.readonly_losses_batch(rows, None)
    finally:
        ext.finest_scale = finest
    torch.testing.assert_close(exact[37].cls, exact[2560].cls)  # chunks change at most the last bits
    exact = exact[2560]
    assert torch.isfinite(fp16.cls).all() and not torch.equal(fp16.cls, exact.cls)
    assert not torch.equal(training.cls, exact.cls)


@pytest.mark.parametrize('nms', [dict(type='LossNMS', iou_threshold=0.7), None])
def test_images_mined_together_get_the_rois_of_mining_each_alone(fpn, nms):
    model, data = fpn
    _, images = _images(model, data)
    alone = _sample_all(OHEMSampler(num=48, context=model.roi_head, nms=nms, batch_images=False), model, images)
    together = OHEMSampler(num=48, context=model.roi_head, nms=nms)
    got = _sample_all(together, model, images)
    assert all(type(g) is DeferredSamplingResult and not g.materialized for g in got)
    assert isinstance(got[0], SamplingResult) and len(together._pending) == 2
    assert got[1].num_pos >= 1  # any read mines both
    assert all(g.materialized for g in got) and not together._pending
    for g, w in zip(got, alone):
        assert type(w) is SamplingResult and _same(g, w)
    assert together.last_stats is not None and together.last_stats.mined == got[1].pos_inds.numel() + \
        got[1].neg_inds.numel()


@pytest.mark.parametrize('batch_images', [True, False])
def test_selection_spy_sees_every_image(fpn, batch_images):
    """The spy of the cuda test ``test_sampler_on_gpu_mines_what_the_cpu_selection_mines`` sees one selection
    per image whichever way the images are mined (it had followed only the per-image call and saw nothing
    once images were mined together), and each equals the host method's on the same inputs."""
    from mmdet_ohem.selection import select_hard_examples
    model, data = fpn
    sampler = model.roi_head.bbox_sampler
    before = sampler.batch_images
    sampler.batch_images = batch_images
    try:
        calls = mined_selections(model, data)
    finally:
        sampler.batch_images = before
    assert len(calls) == 2
    for losses, boxes, args, kwargs, indices, _ in calls:
        assert indices.numel() > 0
        assert select_hard_examples(losses, boxes, *args, **{**kwargs, 'method': 'host'}).indices.tolist() == \
            indices.tolist()


def test_deferred_result_behaves_as_a_sampling_result(fpn):
    model, data = fpn
    _, images = _images(model, data)
    alone = _sample_all(OHEMSampler(num=48, context=model.roi_head, batch_images=False, log_stats=False),
                        model, images)
    for how in ('repr', 'to', 'deepcopy', 'pickle', 'info', 'priors'):
        got = _sample_all(OHEMSampler(num=48, context=model.roi_head, log_stats=False), model, images)
        if how == 'repr':
            assert 'pos_inds' in repr(got[0])
        elif how == 'to':
            assert got[0].to('cpu') is got[0]
        elif how == 'deepcopy':
            got = [copy.deepcopy(g) for g in got]
        elif how == 'pickle':
            got = [pickle.loads(pickle.dumps(g)) for g in got]
        elif how == 'info':
            assert got[1].info['num_pos'] == got[1].num_pos
        else:
            assert got[0].priors.shape[0] == got[0].pos_inds.numel() + got[0].neg_inds.numel()
        for g, w in zip(got, alone):
            assert _same(g, w), how
        assert not hasattr(got[0], '_ohem_sampler') and not hasattr(got[0], 'no_such_attribute')


def test_a_new_forward_mines_what_is_still_pending(fpn):
    """Results nobody read before the next batch's sample() are mined with their own features."""
    model, data = fpn
    _, images = _images(model, data)
    _, again = _images(model, data)  # another forward: other feature storage
    sampler = OHEMSampler(num=48, context=model.roi_head, log_stats=False)
    first = _sample_all(sampler, model, images[:1])
    assert not first[0].materialized
    second = _sample_all(sampler, model, again[1:])
    assert first[0].materialized and not second[0].materialized
    alone = _sample_all(OHEMSampler(num=48, context=model.roi_head, batch_images=False, log_stats=False),
                        model, [images[0], again[1]])
    assert _same(first[0], alone[0]) and _same(second[0], alone[1])


def test_a_failed_batch_raises_on_every_result(fpn):
    model, data = fpn
    _, images = _images(model, data)
    sampler = OHEMSampler(num=48, context=model.roi_head, nonfinite='raise', log_stats=False)
    head = model.roi_head.bbox_head
    saved = head.fc_cls.weight.detach().clone()
    try:
        with torch.no_grad():
            head.fc_cls.weight.fill_(float('nan'))
        got = _sample_all(sampler, model, images)
        with pytest.raises(FloatingPointError, match='non-finite'):
            got[0].pos_inds
        with pytest.raises(RuntimeError, match='mining this batch failed.*FloatingPointError'):
            got[1].pos_inds
    finally:
        with torch.no_grad():
            head.fc_cls.weight.copy_(saved)
    assert not sampler._pending


def test_batching_is_used_only_where_it_applies(fpn):
    model, _ = fpn
    assert OHEMSampler(num=8, context=model.roi_head).batched
    assert not OHEMSampler(num=8, context=model.roi_head, batch_images=False).batched
    assert not OHEMSampler(num=8, context=model.roi_head, keep_ratio=True).batched  # ratio mode: per image
    with pytest.raises(TypeError, match="batch_images must be True or False, got 'yes'"):
        OHEMSampler(num=8, context=model.roi_head, batch_images='yes')
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match=f'readonly_batch_rois must be a positive int, got {bad!r}'):
            OHEMSampler(num=8, context=model.roi_head, readonly_batch_rois=bad)


@pytest.mark.parametrize('name', [FASTER_FPN, CASCADE_FPN])
def test_training_steps_with_images_mined_together_equal_one_at_a_time(name):
    """Three real optimisation steps of Faster / Cascade R-CNN (every stage mined) with each setting, from
    the same weights: the same losses (Shared2FC heads: no dropout, so the read-only pass is deterministic)."""
    logs = {}
    for flag in (True, False):
        model, logs[flag] = train_three_steps(name, dict(num=48, batch_images=flag))
        samplers = model.roi_head.bbox_sampler
        assert all(s.batched is flag for s in (samplers if isinstance(samplers, list) else [samplers]))
    for a, b in zip(logs[True], logs[False]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k


def test_submodules_walks_as_modules_does():
    """The read-only pass's module walk (``submodules``, no prefix strings): ``list(module.modules())``'s modules in
    its order, a shared module once, an unset child skipped."""
    from mmdet_ohem.readonly_pass import submodules
    shared = torch.nn.Linear(2, 2)
    net = torch.nn.Sequential(shared, torch.nn.Sequential(torch.nn.ReLU(), shared), torch.nn.ModuleList([shared]))
    net.register_module('empty', None)
    assert [id(m) for m in submodules(net)] == [id(m) for m in net.modules()] and len(submodules(net)) == 5
