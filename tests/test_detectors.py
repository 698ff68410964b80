"""OHEMSampler as a drop-in for mmdet's two-stage detectors: real training steps on CPU."""
import weakref

import pytest
import torch
from mmdet.registry import TASK_UTILS
from mmengine.logging import MessageHub

from mmdet_ohem.samplers import MMDetOHEMSampler, OHEMSampler

from ._detectors import (CASCADE_FPN, DOUBLE_HEAD, FASTER_C4, FASTER_FPN, MASK_FPN, batch, build,
                         mmdet_config, sampler_inputs, train_step)


def test_registry_resolves_ours_and_keeps_mmdets():
    import mmdet_ohem  # noqa: F401
    from mmdet.models.task_modules.samplers import OHEMSampler as MMDetsOwn
    assert TASK_UTILS.get('OHEMSampler') is OHEMSampler
    assert TASK_UTILS.get('mmdet.OHEMSampler') is OHEMSampler
    assert TASK_UTILS.get('MMDetOHEMSampler') is MMDetOHEMSampler
    assert issubclass(MMDetOHEMSampler, MMDetsOwn)
    assert TASK_UTILS.get('LossNMS') is not None


# CPU cost control for the training steps: fewer RPN proposals (256 per image instead of 1000-2000) and a
# budget of 64 mined RoIs, so that mining still picks a strict subset of the candidates. The sampler type
# is the only change the build check below sees.
CASES = {
    'faster_fpn': FASTER_FPN,
    'faster_c4_shared_head': FASTER_C4,
    'mask_rcnn': MASK_FPN,
    'cascade': CASCADE_FPN,
    'double_head': DOUBLE_HEAD,
}


@pytest.mark.parametrize('case', list(CASES))
def test_mmdet_config_with_only_the_type_changed_gets_paper_ohem(case):
    model = build(mmdet_config(CASES[case]))
    heads = model.roi_head.bbox_sampler
    samplers = heads if isinstance(heads, list) else [heads]
    # mmdet's configs say RandomSampler(num=512, pos_fraction=0.25): we must NOT keep a ratio.
    assert all(isinstance(s, OHEMSampler) and s.num == 512 and not s.keep_ratio for s in samplers)
    assert all(s.nms is not None and s.nms.iou_threshold == 0.7 and s.ranking_loss == 'cls+loc'
               for s in samplers)


@pytest.mark.slow
@pytest.mark.parametrize('case', list(CASES))
def test_trains_with_mmdet_config_sampler_swapped(case):
    # C4's shared head runs ResNet's res5 on every RoI: 128 proposals keep it to seconds on CPU.
    cfg = mmdet_config(CASES[case], sampler=dict(num=64), rpn_max_per_img=128 if 'c4' in case else 256)
    model = build(cfg)
    heads = model.roi_head.bbox_sampler
    samplers = heads if isinstance(heads, list) else [heads]
    assert all(isinstance(s, OHEMSampler) for s in samplers)
    if case == 'cascade':
        assert [s.head.stage for s in samplers] == [0, 1, 2]
        assert [s.head.bbox_head for s in samplers] == list(model.roi_head.bbox_head)
    data = batch(model, with_mask=case == 'mask_rcnn')
    optim = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    for _ in range(2):
        log = train_step(model, data, optim)
        assert all(torch.isfinite(torch.tensor(v)) for v in log.values()), log
    first = samplers[0].last_stats
    assert first.candidates > 64 and first.mined == 64  # a strict subset of the proposals was mined
    # Later cascade stages see the previous stage's (refined) mined RoIs plus gt, as with any sampler.
    assert all(0 < s.last_stats.mined <= 64 for s in samplers)
    if case == 'mask_rcnn':
        assert 'loss_mask' in log
    if case == 'cascade':
        assert {'s0.loss_cls', 's1.loss_cls', 's2.loss_cls'} <= set(log)
        hub = MessageHub.get_current_instance()
        assert {'train/ohem_s0_fg_share', 'train/ohem_s2_cands'} <= set(hub.log_scalars)


def _rpn_sampler_cfg():
    cfg = mmdet_config(FASTER_FPN)
    cfg.model.train_cfg.rpn.sampler = dict(type='OHEMSampler', num=256)
    return cfg


def test_rpn_use_fails_at_build_time_with_reason():
    with pytest.raises(TypeError, match=r'RPNHead.*train_cfg\.rcnn\.sampler'):
        build(_rpn_sampler_cfg())


def test_build_logs_which_ohem_is_active():
    from ._detectors import mmlogger_records

    def builds():
        build(mmdet_config(FASTER_FPN))
        build(mmdet_config(FASTER_FPN, sampler_type='MMDetOHEMSampler'))

    text = '\n'.join(r.getMessage() for r in mmlogger_records(builds))
    assert 'mmdet_ohem.OHEMSampler' in text and 'no fg:bg ratio (pos_fraction=0.25 ignored)' in text
    assert 'loss-NMS=LossNMS(iou_threshold=0.7' in text
    assert 'mmdet built-in OHEMSampler (MMDetOHEMSampler)' in text


def _assign_and_feats(model, data, img=0):
    """Proposals, assignment and features for one image, as StandardRoIHead.loss prepares them."""
    res, gt, feats = sampler_inputs(model, data)[1][img]
    return res, gt, model.roi_head.bbox_assigner.assign(res, gt), feats


def test_ratio_mode_without_nms_matches_mmdets_ohem_sampler():
    import copy
    cfg = mmdet_config(FASTER_FPN, sampler=dict(num=64))
    model = build(cfg)
    data = batch(model, num_items=(6, 4))
    res, gt, assign, feats = _assign_and_feats(model, data)
    common = dict(num=64, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True,
                  context=model.roi_head)
    ours = OHEMSampler(**common, ranking_loss='cls', nms=None, keep_ratio=True, log_stats=False)
    theirs = MMDetOHEMSampler(**common)
    a = ours.sample(copy.deepcopy(assign), res, gt, feats=feats)
    b = theirs.sample(copy.deepcopy(assign), res, gt, feats=feats)
    assert a.pos_inds.numel() > 0 and a.neg_inds.numel() > 0
    assert sorted(a.pos_inds.tolist()) == sorted(b.pos_inds.tolist())
    assert sorted(a.neg_inds.tolist()) == sorted(b.neg_inds.tolist())
    assert sorted(zip(a.pos_inds.tolist(), a.pos_is_gt.tolist())) == \
        sorted(zip(b.pos_inds.tolist(), b.pos_is_gt.tolist()))


def test_readonly_pass_keeps_no_graph_and_backward_sees_mined_rois_only():
    cfg = mmdet_config(FASTER_FPN, sampler=dict(num=32))
    model = build(cfg)
    data = batch(model)
    fc_cls = model.roi_head.bbox_head.fc_cls
    calls, grads, readonly_outputs = [], [], []

    def fwd_hook(mod, inp, out):
        calls.append((inp[0].shape[0], torch.is_grad_enabled(), out.requires_grad))
        if not torch.is_grad_enabled():
            readonly_outputs.append(weakref.ref(out))

    h1 = fc_cls.register_forward_hook(fwd_hook)
    h2 = fc_cls.register_full_backward_hook(lambda m, gi, go: grads.append(go[0].shape[0]))
    try:
        losses = model.loss(data['inputs'], data['data_samples'])
        loss, _ = model.parse_losses(losses)
        loss.backward()
    finally:
        h1.remove()
        h2.remove()
    readonly = [c for c in calls if not c[1]]
    trained = [c for c in calls if c[1]]
    # One read-only pass for both images (mined together; one per image with batch_images=False).
    assert len(readonly) == 1 and all(not req for _, _, req in readonly)
    assert len(trained) == 1 and trained[0][2]
    mined = trained[0][0]
    assert mined <= 2 * 32 < sum(n for n, _, _ in readonly)
    assert grads == [mined]  # backward ran over the mined RoIs only
    # Nothing the read-only pass produced is still alive (no activations kept).
    assert all(ref() is None for ref in readonly_outputs)


def test_readonly_pass_leaves_batchnorm_statistics_untouched():
    cfg = mmdet_config(FASTER_FPN, sampler=dict(num=32))
    cfg.model.roi_head.bbox_head = dict(
        type='Shared4Conv1FCBBoxHead', conv_out_channels=32, fc_out_channels=64, in_channels=256,
        roi_feat_size=7, num_classes=5, norm_cfg=dict(type='BN', requires_grad=True),
        bbox_coder=cfg.model.roi_head.bbox_head.bbox_coder, reg_class_agnostic=False,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0))
    model = build(cfg)
    data = batch(model)
    res, gt, assign, feats = _assign_and_feats(model, data)
    bns = [m for m in model.roi_head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.training for m in bns)
    before = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bns]
    sres = model.roi_head.bbox_sampler.sample(assign, res, gt, feats=feats)
    assert sres.pos_inds.numel() + sres.neg_inds.numel() > 0
    for m, (mean, var, n) in zip(bns, before):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert int(m.num_batches_tracked) == n


def test_edge_cases_no_gt_no_proposals_fewer_than_num():
    from mmengine.structures import InstanceData
    cfg = mmdet_config(FASTER_FPN, sampler=dict(num=512))
    model = build(cfg)
    data = batch(model)
    res, gt, assign, feats = _assign_and_feats(model, data)
    sampler = model.roi_head.bbox_sampler
    # Fewer candidates than num: everything non-ignored comes back.
    few = InstanceData(priors=res.priors[:10])
    r = sampler.sample(model.roi_head.bbox_assigner.assign(few, gt), few, gt, feats=feats)
    assert r.pos_inds.numel() + r.neg_inds.numel() == sampler.last_stats.candidates == 10 + len(gt)
    # No gt: every candidate is background and mining still works.
    no_gt = InstanceData(bboxes=gt.bboxes[:0], labels=gt.labels[:0])
    r = sampler.sample(model.roi_head.bbox_assigner.assign(res, no_gt), res, no_gt, feats=feats)
    assert r.pos_inds.numel() == 0 and 0 < r.neg_inds.numel() <= 512
    # No proposals (and no gt): an empty result, not a crash.
    none = InstanceData(priors=res.priors[:0])
    r = sampler.sample(model.roi_head.bbox_assigner.assign(none, no_gt), none, no_gt, feats=feats)
    assert r.pos_inds.numel() == 0 and r.neg_inds.numel() == 0


@pytest.mark.slow
def test_a_few_steps_on_a_fixed_batch_lower_the_roi_loss():
    cfg = mmdet_config(FASTER_FPN, sampler=dict(num=64))
    model = build(cfg)
    data = batch(model, num_items=(4, 3))
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sampler = model.roi_head.bbox_sampler
    cand_means = []
    for _ in range(12):
        train_step(model, data, optim)
        st = sampler.last_stats
        cand_means.append(st.cand_loss / st.cand_finite)
    # Mean ranking loss over *all* candidates (read-only pass), early vs late.
    assert sum(cand_means[-3:]) / 3 < 0.7 * sum(cand_means[:3]) / 3, cand_means


@pytest.mark.parametrize('sampler_type', ['OHEMSampler', 'UniformSampler'])
def test_mined_rois_are_the_assigned_boxes_with_bg_lo(sampler_type):
    """With bg_lo = 0.1 some RoIs are ignored; every returned RoI must still carry its own box."""
    from mmdet.structures.bbox import bbox_overlaps
    from mmengine.structures import InstanceData
    cfg = mmdet_config(FASTER_FPN, sampler=dict(num=64), sampler_type=sampler_type)
    cfg.model.train_cfg.rcnn.assigner.neg_iou_thr = (0.1, 0.5)
    model = build(cfg)
    data = batch(model, num_items=(6, 4))
    res, gt, assign, feats = _assign_and_feats(model, data)
    # Add near-gt proposals so that there are foreground candidates beyond the gt boxes themselves.
    jitter = gt.bboxes + torch.randn_like(gt.bboxes) * 2
    res = InstanceData(priors=torch.cat([res.priors, jitter]))
    assign = model.roi_head.bbox_assigner.assign(res, gt)
    assert (assign.gt_inds == -1).any()  # some candidates are ignored (IoU < bg_lo)
    out = model.roi_head.bbox_sampler.sample(assign, res, gt, feats=feats)
    assert out.pos_inds.numel() > len(gt.bboxes) and out.neg_inds.numel() > 0
    pos_iou = bbox_overlaps(out.pos_priors, out.pos_gt_bboxes, is_aligned=True)
    assert float(pos_iou.min()) >= 0.5
    neg_max = bbox_overlaps(out.neg_priors, gt.bboxes).max(dim=1).values
    assert float(neg_max.min()) >= 0.1 and float(neg_max.max()) < 0.5
    # gt boxes added as proposals are flagged as such, and only they.
    is_gt = out.pos_is_gt.bool()
    assert torch.equal(out.pos_priors[is_gt], out.pos_gt_bboxes[is_gt])
