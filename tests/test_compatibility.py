"""Issue 11: OHEM trains wherever RandomSampler trains, and hides nothing.

mmdet 3.3's own two-stage configs with only the R-CNN sampler type changed (head variants), unusable
proposal boxes, a broken (NaN) box head, stateful losses, build-time setting checks and resuming with
another sampler.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from mmdet.registry import TASK_UTILS
from mmengine.logging import MessageHub
from mmengine.structures import InstanceData

from mmdet_ohem.readonly_pass import per_roi_loss
from mmdet_ohem.samplers import OHEMSampler
from mmdet_ohem.selection import invalid_boxes, select_hard_examples, select_hard_examples_ratio
from ohem_experiments.compat_survey import family_config, try_family

from ._detectors import FASTER_FPN, batch, build, mmdet_config, train_step
from .test_detectors import _assign_and_feats


def _samplers(model):
    s = model.roi_head.bbox_sampler
    return s if isinstance(s, list) else [s]


# --------------------------------------------------------------------------------------------------
# Head variants: one mechanism (forward inputs, tuple predictions, head targets, per-RoI normaliser).
# --------------------------------------------------------------------------------------------------
def test_per_roi_loss_maps_every_mmdet_loss_shape_to_candidates():
    n, p = 6, 2
    # (n,) / (n, C): all candidates; (p, 4): mmdet's loss_bbox; (4n, k): SABL's sides, RoI-major.
    assert torch.equal(per_roi_loss('loss_cls', torch.arange(6.), n, p), torch.arange(6.))
    assert torch.equal(per_roi_loss('loss_cls', torch.ones(6, 3), n, p), torch.full((6, ), 3.))
    assert torch.equal(per_roi_loss('loss_bbox', torch.ones(2, 4), n, p), torch.tensor([4., 4, 0, 0, 0, 0]))
    sabl = torch.arange(24.).reshape(24, 1).expand(24, 7)  # 4 sides x 6 RoIs, 7 buckets
    assert torch.equal(per_roi_loss('loss_bbox_cls', sabl, n, p), sabl.reshape(6, -1).sum(1))
    # SeesawLoss's loss_cls_classes covers the positives only.
    assert torch.equal(per_roi_loss('loss_cls_classes', torch.tensor([1., 2.]), n, p),
                       torch.tensor([1., 2, 0, 0, 0, 0]))
    # mmdet's zero scalar for "no foreground" contributes nothing; a loss ignoring reduction is an error.
    assert per_roi_loss('loss_bbox', torch.tensor(0.), n, 0) is None
    with pytest.raises(ValueError, match=r"'loss_x' returned a scalar"):
        per_roi_loss('loss_x', torch.tensor(1.5), n, p)
    with pytest.raises(ValueError, match=r"'loss_x' has shape \(5,\)"):
        per_roi_loss('loss_x', torch.ones(5), n, 4)


def _ghmc_config():
    cfg = mmdet_config(FASTER_FPN, sampler=dict(num=32))
    cfg.model.roi_head.bbox_head.loss_cls = dict(type='GHMC', bins=10, momentum=0.75, use_sigmoid=True,
                                                 loss_weight=1.0)
    return cfg


LOSS_CASES = {'faster': lambda: mmdet_config(FASTER_FPN), 'seesaw': lambda: family_config('seesaw'),
              'sabl': lambda: family_config('sabl'), 'ghmc': _ghmc_config}


@pytest.mark.parametrize('case', list(LOSS_CASES))
def test_readonly_losses_weigh_each_loss_as_the_training_objective(case):
    """The per-RoI cls/loc losses average, over the candidates, to the head's own training losses."""
    model = build(LOSS_CASES[case]())
    data = batch(model, with_mask=case == 'seesaw')
    res, gt, assign, feats = _assign_and_feats(model, data)
    sampler = model.roi_head.bbox_sampler
    sres = sampler.collect(copy.deepcopy(assign), res, gt).all
    assert sres.pos_inds.numel() > 0
    losses = sampler.head.readonly_losses(feats, sres.pos_priors, sres.pos_gt_bboxes, sres.pos_gt_labels,
                                          sres.neg_priors)
    from mmdet.structures.bbox import bbox2roi
    head, rois = sampler.head.bbox_head, bbox2roi([sres.priors])
    with torch.no_grad():
        out = model.roi_head._bbox_forward(feats, rois)
        targets = head.get_targets([sres], model.roi_head.train_cfg, concat=True)
        trained = head.loss(out['cls_score'], out['bbox_pred'], rois, *targets)
    cls_keys = [k for k in trained if 'loss' in k and not k.startswith('loss_bbox')]
    loc_keys = [k for k in trained if k.startswith('loss_bbox')]
    assert len(cls_keys) == (2 if case == 'seesaw' else 1) and len(loc_keys) == (2 if case == 'sabl' else 1)
    assert math.isclose(float(losses.cls.mean()), sum(float(trained[k]) for k in cls_keys), rel_tol=1e-4)
    assert math.isclose(float(losses.loc.mean()), sum(float(trained[k]) for k in loc_keys), rel_tol=1e-4)
    assert losses.loc[sres.pos_inds.numel():].abs().sum() == 0  # background has no box loss


def test_htc_readonly_pass_uses_the_semantic_features_of_the_right_image():
    """HTC's _bbox_forward takes semantic_feat: the pass reads it (and x) from the head's running loss()."""
    model = build(family_config('htc'))
    data = batch(model, with_mask=True, with_semantic=True)
    sampler = model.roi_head.bbox_sampler[0]
    assert sampler.head.extra_inputs == ('semantic_feat', )
    x = model.extract_feat(data['inputs'])
    with torch.no_grad():
        _, semantic_feat = model.roi_head.semantic_head(x)
    img = 1
    feats = [lvl[img][None] for lvl in x]
    priors = data['data_samples'][img].gt_instances.bboxes
    rois = torch.cat([priors.new_zeros(len(priors), 1), priors], dim=1)

    def loss(self, x, semantic_feat):  # stands for HTC's loss(): the locals the adapter reads
        return sampler.head.bbox_forward(feats, rois)

    with torch.no_grad():
        got = loss(model.roi_head, x, semantic_feat)['cls_score']
        want = model.roi_head._bbox_forward(
            0, x, torch.cat([rois.new_full((len(rois), 1), img), priors], 1), semantic_feat)['cls_score']
        without = model.roi_head._bbox_forward(0, x, torch.cat([rois.new_full((len(rois), 1), img), priors], 1),
                                               torch.zeros_like(semantic_feat))['cls_score']
    assert torch.allclose(got, want) and not torch.allclose(got, without)
    # Outside the head's loss() there is nothing to read: a clear error, not HTC's type_as(None).
    with pytest.raises(RuntimeError, match=r'HybridTaskCascadeRoIHead\._bbox_forward takes semantic_feat'):
        sampler.head.bbox_forward(feats, rois)


def test_htc_float32_readonly_pass_under_bf16_autocast_casts_the_extra_inputs_too():
    """Under bf16 autocast the default read-only pass runs in float32: the features and HTC's semantic_feat,
    read from the running loss() in bf16, are cast up, and the forward is the float32 one on those values."""
    from mmdet_ohem.readonly_pass import readonly_autocast
    model = build(family_config('htc'))
    data = batch(model, with_mask=True, with_semantic=True)
    sampler = model.roi_head.bbox_sampler[0]
    with torch.no_grad():
        x = model.extract_feat(data['inputs'])
        _, semantic_feat = model.roi_head.semantic_head(x)
    x, semantic_feat = tuple(lvl.bfloat16() for lvl in x), semantic_feat.bfloat16()  # as bf16 autocast has them
    img = 1
    feats = [lvl[img][None] for lvl in x]
    priors = data['data_samples'][img].gt_instances.bboxes
    rois = torch.cat([priors.new_zeros(len(priors), 1), priors], dim=1)

    def loss(self, x, semantic_feat):  # stands for HTC's loss(): the locals the adapter reads
        with readonly_autocast('cpu', 'tf32') as upcast:
            return upcast, sampler.head.bbox_forward(feats, rois, upcast)

    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            upcast, out = loss(model.roi_head, x, semantic_feat)
        want = model.roi_head._bbox_forward(0, [lvl.float() for lvl in x], torch.cat(
            [rois.new_full((len(rois), 1), img), priors], 1), semantic_feat.float())['cls_score']
    assert upcast and out['cls_score'].dtype == torch.float32 and torch.equal(out['cls_score'], want)


@pytest.mark.parametrize('family', ['pisa', 'sparse_rcnn', 'crowddet'])
def test_unsupported_heads_are_refused_at_build_naming_the_head(family):
    head = {'pisa': 'PISARoIHead', 'sparse_rcnn': 'SparseRoIHead|PseudoSampler',
            'crowddet': 'MultiInstanceRoIHead'}[family]
    with pytest.raises((TypeError, AssertionError), match=head):
        build(family_config(family))


def test_libra_config_switches_type_alone_and_logs_the_ignored_sub_samplers():
    model = build(family_config('libra'))
    sampler = model.roi_head.bbox_sampler
    assert isinstance(sampler, OHEMSampler) and set(sampler.ignored_settings) == {'pos_sampler', 'neg_sampler'}
    assert "ignored: ['neg_sampler', 'pos_sampler']" in sampler.describe()


# The three configs (and the other families) trained for two steps; RandomSampler is the control.
TRAIN_FAMILIES = ['seesaw', 'htc', 'sabl', 'grid', 'dynamic', 'libra', 'double_head', 'scnet', 'fast_rcnn']


@pytest.mark.slow
@pytest.mark.parametrize('family', TRAIN_FAMILIES)
def test_mmdet_family_trains_with_ohem_where_random_sampler_trains(family):
    assert try_family(family, 'RandomSampler') == 'ok'
    assert try_family(family, 'OHEMSampler') == 'ok'


def test_survey_reports_each_stages_selection_path():
    """The survey's per-stage record: a head on the batched path (and so, on a GPU, the captured selection
    graph) and one mined per image; on the CPU the graph never captures."""
    from ohem_experiments.compat_survey import survey_family
    faster = survey_family('faster_fpn', 'OHEMSampler')
    assert faster['results'] == {'fp32': 'ok'} and faster['peak_mib'] == {}
    assert faster['graphs'] == [{'batched': True, 'cuda_graph': True, 'captures': 0, 'replays': 0, 'fallbacks': 0,
                                 'failed': None}]
    sabl = survey_family('sabl', 'OHEMSampler')  # SABL's bucket losses: not the batched fast path
    assert sabl['results'] == {'fp32': 'ok'} and [g['batched'] for g in sabl['graphs']] == [False]
    assert survey_family('faster_fpn', 'RandomSampler')['graphs'] is None


def test_wrapper_train_step_is_a_train_step_through_an_optimizer_wrapper():
    """The step the AMP survey and the ``cuda`` tests take through mmengine's ``AmpOptimWrapper``, here through
    its plain ``OptimWrapper``: two steps give the log vars two plain SGD steps give, bit for bit."""
    from mmengine.optim import OptimWrapper
    from ohem_experiments.quick_detectors import wrapper_train_step
    logs = []
    for wrapped in (False, True):
        model = build(family_config('faster_fpn'))
        data = batch(model)
        optim = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
        wrapper = OptimWrapper(optimizer=optim)
        logs.append([wrapper_train_step(model, data, wrapper) if wrapped else train_step(model, data, optim)
                     for _ in range(2)])
    assert logs[0] == logs[1] and logs[0][1]['loss'] != logs[0][0]['loss']


def test_survey_refuses_amp_without_cuda_and_unknown_precisions(tmp_path):
    from ohem_experiments.compat_survey import main, survey_family
    with pytest.raises(ValueError, match=r"\['fp16'\] are `--amp` training .* needs CUDA; device is 'cpu'"):
        survey_family('faster_fpn', 'OHEMSampler', ('fp32', 'fp16'))
    with pytest.raises(ValueError, match=r"unknown precision\(s\) \['fp8'\]"):
        survey_family('faster_fpn', 'OHEMSampler', ('fp8', ))
    with pytest.raises(SystemExit):
        main(['--only', 'pisa', '--precisions', 'bf16'])
    # the command line: JSON and markdown written, nothing wrong (PISA refused by OHEM, failing as its control)
    assert main(['--only', 'pisa', '--json', str(tmp_path / 's.json'), '--md', str(tmp_path / 's.md')]) == 0
    import json
    res = json.loads((tmp_path / 's.json').read_text())
    assert res['device'] == 'cpu' and res['size'] == 128 and res['shipped'] is False
    assert res['results']['pisa']['OHEMSampler']['results']['fp32'].startswith('refused at build: TypeError: '
                                                                             'OHEMSampler does not support PISARoIHead')
    rows = (tmp_path / 's.md').read_text().splitlines()
    assert rows[0].startswith('| family | sampler | fp32 | peak MiB |') and len(rows) == 4
    assert rows[3].startswith('| pisa | OHEMSampler | refused at build')


def test_gpu_survey_does_not_run_a_control_that_indexes_out_of_bounds():
    """CrowdDet's control (mmdet's RandomSampler on multi-instance targets) raises an IndexError on the CPU; on
    the H200 (2026-11-27) the same index tripped a device-side assert that took the CUDA context, and every
    later family, with it. On CUDA the survey reports it as not run, builds nothing, and OHEM is still asked
    (refused at build)."""
    from ohem_experiments.compat_survey import FAMILIES, survey_family
    assert [n for n, f in FAMILIES.items() if f.no_cuda_control] == ['crowddet']
    res = survey_family('crowddet', 'RandomSampler', ('fp32', 'fp16'), device='cuda')
    assert res['results'] == {p: 'not run on CUDA: ' + FAMILIES['crowddet'].no_cuda_control for p in ('fp32', 'fp16')}
    assert res['peak_mib'] == {} and res['graphs'] is None
    assert 'MultiInsRandomSampler' in FAMILIES['crowddet'].no_cuda_control
    cpu = survey_family('crowddet', 'RandomSampler', steps=1)['results']['fp32']  # the CPU still runs it
    assert cpu.startswith('IndexError: ') and 'random_sampler.py' in cpu


def test_shipped_family_config_keeps_the_configs_budgets_and_roi_layers():
    """What the GPU survey (and ``--shipped``) builds: only the sampler type changed; the CPU survey cuts to
    64 RoIs and 128 RPN proposals, and ``mmdet_config`` swaps RoIPool for RoIAlign unless told not to."""
    from pathlib import Path

    from ohem_experiments.compat_survey import family_config
    from ohem_experiments.quick_detectors import mmdet_config
    shipped = family_config('faster_fpn', num=None, rpn_max_per_img=None, roi_align=False)
    for cfg, num, proposals in ((shipped, 512, 1000), (family_config('faster_fpn'), 64, 128)):
        assert cfg.model.train_cfg.rcnn.sampler.type == 'OHEMSampler' and cfg.model.train_cfg.rcnn.sampler.num == num
        assert cfg.model.train_cfg.rpn_proposal.max_per_img == proposals
    vgg = str(Path(__file__).resolve().parents[1] / 'configs/frcn/faster_rcnn_vgg16_voc07.py')  # RoIPool
    assert mmdet_config(vgg, roi_align=False).model.roi_head.bbox_roi_extractor.roi_layer.type == 'RoIPool'
    assert mmdet_config(vgg).model.roi_head.bbox_roi_extractor.roi_layer.type == 'RoIAlign'


def _run(results, batched=True, cuda_graph=True, captures=1, replays=1, failed=None):
    graphs = [{'batched': batched, 'cuda_graph': cuda_graph, 'captures': captures, 'replays': replays,
               'fallbacks': 0, 'failed': failed}]
    return {'results': results, 'peak_mib': {}, 'graphs': graphs}


def test_survey_problems_name_what_is_wrong():
    """OHEM must train where the control trains, the unsupported heads be refused at build, and on a GPU each
    stage mined together run its selection as a CUDA graph."""
    from ohem_experiments.compat_survey import markdown, problems
    ok, bad = {'fp32': 'ok', 'fp16': 'ok'}, {'fp32': 'ok', 'fp16': 'RuntimeError: x (a.py:1)'}
    control = {'results': ok, 'peak_mib': {}, 'graphs': None}
    assert problems({'cascade': {'RandomSampler': control, 'OHEMSampler': _run(ok)}}, 'cuda') == []
    assert problems({'cascade': {'RandomSampler': control, 'OHEMSampler': _run(bad)}}) == \
        ['cascade fp16: OHEMSampler: RuntimeError: x (a.py:1) (RandomSampler: ok)']
    # where the control fails too, it is not OHEM's failure
    failing = {'results': bad, 'peak_mib': {}, 'graphs': None}
    assert problems({'cascade': {'RandomSampler': failing, 'OHEMSampler': _run(bad)}}) == []
    assert problems({'pisa': {'OHEMSampler': _run(ok)}})[0].startswith('pisa: OHEMSampler was not refused at build')
    # the graph: required on CUDA for stages mined together, not on the CPU or for heads mined per image
    assert problems({'cascade': {'OHEMSampler': _run(ok, captures=0, replays=0)}}, 'cpu') == []
    assert problems({'sabl': {'OHEMSampler': _run(ok, batched=False, captures=0, replays=0)}}, 'cuda') == []
    assert problems({'cascade': {'OHEMSampler': _run(ok, captures=0, replays=0)}}, 'cuda') == \
        ['cascade stage 0: the selection did not run as a CUDA graph (0/0/0)']
    assert problems({'cascade': {'OHEMSampler': _run(ok, failed='RuntimeError: capture')}}, 'cuda') == \
        ['cascade stage 0: the selection did not run as a CUDA graph (1/1/0 (capture failed: RuntimeError: capture))']
    table = markdown({'cascade': {'OHEMSampler': _run(bad)}}, ['fp32', 'fp16'])
    assert table.splitlines()[2] == '| cascade | OHEMSampler | ok | RuntimeError: x (a.py:1) | - | 1/1/0 |'


# --------------------------------------------------------------------------------------------------
# Unusable proposal boxes: dropped before the read-only pass, never mined, counted; training goes on.
# --------------------------------------------------------------------------------------------------
BAD_BOXES = torch.tensor([[10., 10., float('inf'), 40.], [float('nan'), 5., 20., 20.],
                          [50., 10., 20., 40.], [10., 50., 40., 20.], [0., 0., 1e9, 1e9],
                          [-1e9, 4., 30., 30.], [10., 10., 40., -float('inf')]])


def test_invalid_boxes_rule():
    ok = torch.tensor([[0., 0., 10., 10.], [5., 5., 5., 5.], [-20., -20., 250., 250.]])
    assert invalid_boxes(BAD_BOXES).tolist() == [True, True, True, True, False, False, True]
    assert invalid_boxes(BAD_BOXES, extent=128.).all()
    assert not invalid_boxes(ok, extent=128.).any()  # zero-size and partly outside boxes are fine
    with pytest.raises(ValueError, match=r'extent .*got -1'):
        invalid_boxes(ok, extent=-1)
    # The rule written per test (each reduced on its own), against the one reduction of all tests side by side
    g = torch.Generator().manual_seed(0)
    boxes = torch.randn(4000, 4, generator=g) * 200
    special = torch.tensor([float('nan'), float('inf'), -float('inf'), 256., -128., 0., -0.])
    boxes.view(-1)[torch.randint(0, 16000, (3000, ), generator=g)] = special[torch.randint(0, 7, (3000, ), generator=g)]
    ordered = (boxes[:, 2:] >= boxes[:, :2]).all(1)
    assert torch.equal(invalid_boxes(boxes), ~(ordered & torch.isfinite(boxes).all(1)))
    assert torch.equal(invalid_boxes(boxes, 128.), ~(ordered & ((boxes >= -128.) & (boxes <= 256.)).all(1)))


def _jittered(gt: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rep = gt.repeat(k // len(gt) + 1, 1)[:k]
    b = (rep + torch.randn(rep.shape, generator=g) * 6).clamp(0, 127)
    return torch.cat([torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:])], dim=1)


def test_bad_proposals_are_never_mined_and_counted_and_training_goes_on():
    model = build(mmdet_config(FASTER_FPN, sampler=dict(num=32)))
    data = batch(model)
    optim = torch.optim.SGD(model.parameters(), lr=0.001)
    sampler = model.roi_head.bbox_sampler
    proposals = [torch.cat([_jittered(d.gt_instances.bboxes, 60, i), BAD_BOXES])
                 for i, d in enumerate(data['data_samples'])]
    mined = []
    orig = sampler.sample

    def spy(*args, **kwargs):
        res = orig(*args, **kwargs)
        mined.append(res.priors)
        return res

    sampler.sample = spy
    MessageHub.get_current_instance().update_info('iter', 10_000)  # one training iteration, as the runner sets
    try:
        x = model.extract_feat(data['inputs'])
        losses = model.roi_head.loss(x, [InstanceData(bboxes=p) for p in proposals], data['data_samples'])
    finally:
        del sampler.sample
    loss, log = model.parse_losses(losses)
    optim.zero_grad()
    loss.backward()
    optim.step()
    assert torch.isfinite(loss) and 'loss_cls' in log
    assert sampler.last_stats.bad_boxes == len(BAD_BOXES) and sampler.last_stats.mined > 0
    assert MessageHub.get_current_instance().get_scalar('train/ohem_badbox').current() == 2 * len(BAD_BOXES)
    for boxes in mined:
        assert not invalid_boxes(boxes, extent=128.).any()


@pytest.mark.slow
def test_fast_rcnn_with_given_proposals_containing_bad_boxes_trains():
    model = build(family_config('fast_rcnn'))
    data = batch(model, num_proposals=80)
    for d in data['data_samples']:
        d.proposals = InstanceData(bboxes=torch.cat([d.proposals.bboxes, BAD_BOXES]))
    optim = torch.optim.SGD(model.parameters(), lr=0.001)
    for _ in range(2):  # the RoI head renames the proposals' fields in place: a fresh copy per step
        log = train_step(model, copy.deepcopy(data), optim)
    assert all(math.isfinite(v) for v in log.values()), log
    assert model.roi_head.bbox_sampler.last_stats.bad_boxes == len(BAD_BOXES)


# --------------------------------------------------------------------------------------------------
# Non-finite read-only losses: a few are skipped; a broken head shows NaN, as with RandomSampler.
# --------------------------------------------------------------------------------------------------
def test_stray_nonfinite_losses_are_skipped_most_are_mined_first():
    boxes = torch.rand(10, 2).repeat(1, 2) * 50 + torch.tensor([0., 0., 10., 10.])
    losses = torch.linspace(1, 2, 10)
    stray = losses.clone()
    stray[[3, 7]] = float('nan')
    sel = select_hard_examples(stray, boxes, 4, None)
    assert sel.num_nonfinite == 2 and not sel.nonfinite_kept and not ({3, 7} & set(sel.indices.tolist()))
    broken = torch.full((10, ), float('nan'))
    broken[[0, 1, 2, 4]] = 1.0  # 6 of 10 non-finite: above the 50% limit
    sel = select_hard_examples(broken, boxes, 4, None)
    assert sel.nonfinite_kept and sel.num_nonfinite == 6
    assert set(sel.indices.tolist()) <= {3, 5, 6, 7, 8, 9}  # non-finite ranked first
    sel = select_hard_examples_ratio(broken, boxes, torch.arange(10) < 5, 4, 0.5)
    assert sel.nonfinite_kept and len(sel.indices) == 4
    half = losses.clone()
    half[:5] = float('inf')  # exactly the limit: still skipped
    assert not select_hard_examples(half, boxes, 4, None).nonfinite_kept


@pytest.mark.parametrize('sampler_type', ['RandomSampler', 'OHEMSampler'])
def test_nan_box_head_weight_shows_nan_loss_like_random_sampler(sampler_type):
    model = build(mmdet_config(FASTER_FPN, sampler=dict(num=32), sampler_type=sampler_type))
    data = batch(model)
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.weight[0, 0] = float('nan')
    log = train_step(model, data, torch.optim.SGD(model.parameters(), lr=0.0))
    assert math.isnan(log['loss']) and math.isnan(log['loss_cls'])
    if sampler_type == 'OHEMSampler':
        st = model.roi_head.bbox_sampler.last_stats
        assert st.nonfinite == st.candidates > 0 and st.mined > 0


# --------------------------------------------------------------------------------------------------
# Stateful losses: the read-only pass leaves every buffer as it was.
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('case', ['ghmc', 'seesaw'])
def test_readonly_pass_leaves_loss_state_untouched(case):
    model = build(_ghmc_config() if case == 'ghmc' else family_config('seesaw'))
    data = batch(model, with_mask=case == 'seesaw')
    res, gt, assign, feats = _assign_and_feats(model, data)
    name = 'acc_sum' if case == 'ghmc' else 'cum_samples'
    buf = getattr(model.roi_head.bbox_head.loss_cls, name)
    buf.fill_(3.0)  # a state that a forward would visibly move
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sres = model.roi_head.bbox_sampler.sample(assign, res, gt, feats=feats)
    assert sres.pos_inds.numel() + sres.neg_inds.numel() > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert getattr(model.roi_head.bbox_head.loss_cls, name) is buf


def test_seesaw_counts_only_the_trained_rois_after_an_ohem_iteration():
    model = build(family_config('seesaw'))
    data = batch(model, with_mask=True)
    loss_cls = model.roi_head.bbox_head.loss_cls
    before = loss_cls.cum_samples.clone()
    mined = []
    orig = model.roi_head.bbox_sampler.sample

    def spy(*args, **kwargs):
        res = orig(*args, **kwargs)
        mined.append(res)
        return res

    model.roi_head.bbox_sampler.sample = spy
    train_step(model, data, torch.optim.SGD(model.parameters(), lr=0.0))
    num_classes = loss_cls.num_classes
    want = before.clone()
    for res in mined:
        want[:num_classes] += torch.bincount(res.pos_gt_labels, minlength=num_classes).float()
        want[num_classes] += res.neg_inds.numel()
    assert torch.equal(loss_cls.cum_samples, want)  # one training step's worth, nothing from the pass


# --------------------------------------------------------------------------------------------------
# Build-time validation: strings for bools / numbers name the setting and the value.
# --------------------------------------------------------------------------------------------------
BAD_TYPED = [
    (dict(type='OHEMSampler', num=64, keep_ratio='False'), r"keep_ratio must be True or False, got 'False'"),
    (dict(type='OHEMSampler', num=64, add_gt_as_proposals='False'), r"add_gt_as_proposals .*got 'False'"),
    (dict(type='OHEMSampler', num=64, log_stats='False'), r"log_stats .*got 'False'"),
    (dict(type='OHEMSampler', num=64, keep_ratio=True, neg_pos_ub='3'), r"neg_pos_ub must be a number, got '3'"),
    (dict(type='OHEMSampler', num=64, neg_pos_ub=-2), r'neg_pos_ub must be -1 .*got -2'),
    (dict(type='OHEMSampler', num=64, pos_fraction='0.25'), r"pos_fraction must be a number, got '0.25'"),
    (dict(type='OHEMSampler', num=64, nms=dict(type='LossNMS', per_class='False')),
     r"per_class must be True or False, got 'False'"),
    (dict(type='LossNMS', per_class=1), r'LossNMS: per_class .*got 1'),
    (dict(type='OHEMSampler'), r"OHEMSampler: num \(RoIs mined per image\) is required .* dict\(type='OHEMSampler', num=512\)"),
    (dict(type='RPNOHEMSampler'), r'RPNOHEMSampler: num \(anchors mined per image\) is required'),
    (dict(type='UniformSampler', num=64, add_gt_as_proposals='False'),
     r"UniformSampler: add_gt_as_proposals .*got 'False'"),
    (dict(type='UniformSampler', num=64, neg_pos_ub='3'), r"UniformSampler: neg_pos_ub .*got '3'"),
    (dict(type='UniformSampler', num=64, pos_fraction=2), r'UniformSampler: pos_fraction .*\[0, 1\].*got 2'),
]


@pytest.mark.parametrize('cfg,match', BAD_TYPED, ids=[str(i) for i in range(len(BAD_TYPED))])
def test_mistyped_setting_fails_at_build_naming_setting_and_value(cfg, match):
    import mmdet_ohem  # noqa: F401
    with pytest.raises((TypeError, ValueError), match=match):
        TASK_UTILS.build(cfg)


def test_sampler_without_num_names_an_unsupported_head_first():
    """Sparse R-CNN's stages use PseudoSampler, which has no ``num``: swapping only its type gives the head's
    refusal (no ``num`` would make it work), not a missing argument."""
    cfg = family_config('sparse_rcnn', num=None, rpn_max_per_img=None)
    with pytest.raises(TypeError, match='OHEMSampler does not support SparseRoIHead'):
        build(cfg)


def test_mistyped_setting_fails_when_the_detector_is_built():
    with pytest.raises(TypeError, match=r"keep_ratio must be True or False, got 'False'"):
        build(mmdet_config(FASTER_FPN, sampler=dict(keep_ratio='False')))


# --------------------------------------------------------------------------------------------------
# Resuming with another sampler: the mining statistics are not resumable state.
# --------------------------------------------------------------------------------------------------
def _stats_runner(work_dir, max_iters, mine: bool, old_style: bool = False, **kw):
    """mmengine Runner on a toy model whose training step publishes mining statistics when ``mine``."""
    from mmengine.runner import Runner

    from mmdet_ohem.samplers.ohem_sampler import MiningStats, _IterationStatsLogger

    from .test_resume import ToyModel, _data

    class MiningToy(ToyModel):
        def __init__(self):
            super().__init__()
            self.stats = _IterationStatsLogger('ohem_')

        def forward(self, inputs, labels, mode='tensor'):
            if mode == 'loss' and mine:
                hub = MessageHub.get_current_instance()
                self.stats.push(MiningStats(candidates=10 + hub.get_info('iter'), mined=4, mined_fg=1))
                if old_style:  # what mmdet_ohem <= 0.2 did: a resumable scalar
                    hub.update_scalar('train/ohem_old', 1.0)
            return super().forward(inputs, labels, mode)

    return Runner(
        model=MiningToy(), work_dir=str(work_dir), experiment_name=f'exp_{work_dir}',
        train_dataloader=dict(dataset=_data(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')],
                        name=f'vis_{work_dir}'),  # mmengine keeps instances by name: one per run
        default_scope='mmengine', **kw)


def _logged(runner) -> list:
    import glob
    import json
    path = glob.glob(f'{runner.log_dir}/vis_data/scalars.json')[0]
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize('old_style', [False, True], ids=['checkpoint', 'checkpoint_from_0.2'])
def test_resume_with_another_sampler_logs_no_frozen_mining_statistics(tmp_path, old_style):
    first = _stats_runner(tmp_path, 2, mine=True, old_style=old_style)
    first.train()
    assert [r['ohem_cands'] for r in _logged(first)] == [10.0, 11.0]  # logged while OHEM runs
    saved = torch.load(tmp_path / 'iter_2.pth', weights_only=True)['message_hub']
    assert not any(k.startswith('train/ohem_c') for k in saved['log_scalars'])  # not resumable state
    assert not any(k.startswith('train/ohem_c') for k in saved['resumed_keys'])
    # Resumed with the statistics switched off (another sampler): nothing of them is logged.
    if not old_style:
        other = _stats_runner(tmp_path / 'other', 4, mine=False, resume=True,
                              load_from=str(tmp_path / 'iter_2.pth'))
        other.train()
        later = _logged(other)
        assert [r['iter'] for r in later] == [3, 4] and not any(k.startswith('ohem') for r in later for k in r)
    # A checkpoint that did carry a statistic (mmdet_ohem <= 0.2): resuming with OHEM drops it at once.
    again = _stats_runner(tmp_path / 'again', 4, mine=True, resume=True, load_from=str(tmp_path / 'iter_2.pth'))
    again.train()
    later = _logged(again)
    assert [r['ohem_cands'] for r in later] == [12.0, 13.0]
    assert not any('ohem_old' in r for r in later)
