"""RPN hard-anchor mining (``RPNOHEMSampler`` + ``AnchorOHEMMixin``): the rule, the loss, real training."""
import copy
import json
from pathlib import Path

import pytest
import torch
from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import cat_boxes
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.structures import InstanceData

import mmdet_ohem  # noqa: F401  (registers the types)
from mmdet_ohem.config_tools import drop_pretrained, use_roi_align
from mmdet_ohem.models import OHEMRPNHead
from mmdet_ohem.models.ohem_anchor_head import anchor_losses
from mmdet_ohem.samplers import OHEMSampler, RPNOHEMSampler
from mmdet_ohem.selection import select_hard_examples

from ._detectors import batch, build, train_step


@pytest.fixture(autouse=True)
def _mmdet_scope():
    """Registry builds here resolve in mmdet's scope, whatever scope an earlier test's Runner left current."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield

REPO = Path(__file__).resolve().parents[1]
MINER = dict(type='RPNOHEMSampler', num=32, nms=dict(type='LossNMS', iou_threshold=0.7))


def rpn_cfg(sampler=None, **head):
    """A small mmdet RPNHead (two levels, stride 8/16) with mmdet's Faster R-CNN RPN training settings."""
    train = dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                               match_low_quality=True, ignore_iof_thr=-1),
                 allowed_border=-1, pos_weight=-1, debug=False)
    if sampler is not None:
        train['sampler'] = sampler
    cfg = dict(type='RPNHead', in_channels=8, feat_channels=8,
               anchor_generator=dict(type='AnchorGenerator', scales=[2, 4], ratios=[0.5, 1.0, 2.0], strides=[8, 16]),
               bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=[1.0] * 4),
               loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
               loss_bbox=dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0), train_cfg=train)
    cfg.update(head)
    return cfg


def inputs(n=2, size=64):
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(n, 8, size // s, size // s, generator=g) for s in (8, 16)]
    gts = [InstanceData(bboxes=torch.tensor([[4., 6., 30., 40.], [30., 20., 60., 50.]]), labels=torch.zeros(2).long()),
           InstanceData(bboxes=torch.tensor([[10., 10., 50., 34.]]), labels=torch.zeros(1).long())][:n]
    metas = [dict(img_shape=(size, size), pad_shape=(size, size), batch_input_shape=(size, size))] * n
    return feats, gts, metas


def loss_of(head, feats, gts, metas):
    cls_scores, bbox_preds = head(feats)
    return head.loss_by_feat(cls_scores, bbox_preds, gts, metas)


def all_anchor_losses(head, feats, gts, metas):
    """Every non-ignored anchor's loss, via a twin head with mmdet's PseudoSampler (all anchors, no mining)."""
    twin = MODELS.build(rpn_cfg())  # no sampler -> PseudoSampler
    twin.load_state_dict(head.state_dict())
    with torch.no_grad():
        cls_scores, bbox_preds = twin(feats)
    sizes = [s.shape[-2:] for s in cls_scores]
    anchor_list, valid = twin.get_anchors(sizes, metas, device='cpu')
    labels, lw, bt, bw, _ = twin.get_targets(anchor_list, valid, gts, metas)
    cat = lambda xs: torch.cat(xs, 1)  # noqa: E731
    anchors = torch.stack([cat_boxes(a) for a in anchor_list])
    lc, lb = anchor_losses(twin, cls_scores, bbox_preds, anchors, cat(labels), cat(lw), cat(bt), cat(bw))
    return anchors, cat(labels), cat(lw), lc, lb


def test_sampler_in_train_cfg_gives_rpnhead_the_miner():
    head = MODELS.build(rpn_cfg(MINER))
    assert type(head) is OHEMRPNHead and isinstance(head, RPNHead)
    assert isinstance(head.sampler, RPNOHEMSampler) and head.sampler.context is head
    # Same parameters (state-dict keys) as mmdet's RPNHead: checkpoints load either way.
    assert head.state_dict().keys() == MODELS.build(rpn_cfg()).state_dict().keys()
    assert type(MODELS.build(rpn_cfg(MINER, type='OHEMRPNHead'))) is OHEMRPNHead


def test_selection_is_the_pure_rule_on_the_same_per_anchor_losses():
    head = MODELS.build(rpn_cfg(MINER))
    feats, gts, metas = inputs()
    loss_of(head, feats, gts, metas)
    mined = head.last_mining['mined']
    anchors, labels, lw, lc, lb = all_anchor_losses(head, feats, gts, metas)
    torch.testing.assert_close(head.last_mining['loss_cls'], lc)
    torch.testing.assert_close(head.last_mining['loss_bbox'], lb)
    for i in range(2):
        cand = torch.nonzero(lw[i] > 0).flatten()
        assert cand.numel() > 32  # mining picks a strict subset
        sel = select_hard_examples((lc + lb)[i, cand], anchors[i, cand], 32, 0.7)
        assert torch.equal(mined[i], cand[sel.indices])
        assert mined[i].numel() == 32
    stats = head.sampler.last_stats
    assert stats.candidates == int((lw[1] > 0).sum()) and stats.mined == 32
    assert stats.mined_fg == int((labels[1, mined[1]] == 0).sum())


def test_reduced_rpn_loss_is_the_mined_per_anchor_loss_over_avg_factor():
    head = MODELS.build(rpn_cfg(MINER))
    feats, gts, metas = inputs()
    losses = loss_of(head, feats, gts, metas)
    reduced = sum(losses['loss_rpn_cls']) + sum(losses['loss_rpn_bbox'])
    m = head.last_mining
    per_anchor = m['loss_cls'] + m['loss_bbox']
    mined_sum = sum(per_anchor[i, idx].sum() for i, idx in enumerate(m['mined']))
    torch.testing.assert_close(reduced.detach(), mined_sum / m['avg_factor'])
    # mmdet's SamplingResult count: max(#pos, 1) + max(#neg, 1) per image (label 0 = foreground)
    labels = all_anchor_losses(head, feats, gts, metas)[1]
    num_pos = [int((labels[i, idx] == 0).sum()) for i, idx in enumerate(m['mined'])]
    assert m['avg_factor'] == sum(max(p, 1) + max(32 - p, 1) for p in num_pos)
    assert reduced.requires_grad


def test_a_few_steps_lower_the_all_anchor_loss():
    head = MODELS.build(rpn_cfg(MINER))
    head.init_weights()
    feats, gts, metas = inputs()
    opt = torch.optim.SGD(head.parameters(), lr=0.05)

    def all_anchor_mean():
        _, _, lw, lc, lb = all_anchor_losses(head, feats, gts, metas)
        return float((lc + lb)[lw > 0].mean())

    before = all_anchor_mean()
    for _ in range(5):
        losses = loss_of(head, feats, gts, metas)
        loss = sum(losses['loss_rpn_cls']) + sum(losses['loss_rpn_bbox'])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all_anchor_mean() < before


@pytest.mark.parametrize('loss_bbox', [dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0),
                                       dict(type='L1Loss', loss_weight=1.0)])
def test_a_batch_without_positive_anchors_trains_on(loss_bbox):
    """Images without gt boxes: no anchor is positive, and mmdet's box loss then returns one 0-dim sum
    instead of per-anchor losses. The miner mines background only and the step trains."""
    head = MODELS.build(rpn_cfg(MINER, loss_bbox=loss_bbox))
    feats, _, metas = inputs()
    empty = [InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long()) for _ in range(2)]
    losses = loss_of(head, feats, empty, metas)
    loss = sum(losses['loss_rpn_cls']) + sum(losses['loss_rpn_bbox'])
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    m = head.last_mining
    assert m['loss_bbox'].shape == m['loss_cls'].shape and not m['loss_bbox'].any()
    assert [idx.numel() for idx in m['mined']] == [32, 32]
    assert head.sampler.last_stats.mined_fg == 0


def test_log_keys_have_their_own_prefix():
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 12345)
    head = MODELS.build(rpn_cfg(MINER))
    feats, gts, metas = inputs()
    loss_of(head, feats, gts, metas)
    keys = {k for k in hub.log_scalars if k.startswith('train/rpn_ohem_')}
    assert keys == {f'train/rpn_ohem_{k}' for k in ('cands', 'nms_supp', 'fg_share', 'mined_rl', 'cand_rl',
                                                    'nonfinite')}
    assert all('/' not in k[len('train/'):] for k in keys)
    assert hub.get_scalar('train/rpn_ohem_cands').current() > 32


@pytest.mark.parametrize('bad, word', [
    (dict(num=0), 'num'), (dict(num=2.5), 'num'), (dict(add_gt_as_proposals=True), 'add_gt_as_proposals'),
    (dict(ranking_loss='focal'), "'focal'"), (dict(nms=dict(type='LossNMS', iou_threshold=1.5)), '1.5'),
    (dict(nonfinite='ignore'), "'ignore'"), (dict(keep_ratio=True, pos_fraction=2), 'pos_fraction'),
    (dict(neg_pos_ub=None), 'neg_pos_ub'), (dict(neg_pos_ub='3'), 'neg_pos_ub'),
    (dict(keep_ratio='False'), 'keep_ratio'), (dict(log_stats='no'), 'log_stats')])
def test_bad_settings_fail_at_build_naming_the_value(bad, word):
    # ValueError for a value out of range, TypeError for a wrong type (a string where a bool belongs)
    with pytest.raises((ValueError, TypeError), match=word if word.startswith("'") else f'{word}.*'):
        MODELS.build(rpn_cfg(dict(MINER, **bad)))


def test_unknown_setting_names_it():
    with pytest.raises(TypeError, match='loss_key'):
        TASK_UTILS.build(dict(MINER, loss_key='loss_cls'))


def test_refuses_heads_it_cannot_serve():
    class RoIHeadLike:
        bbox_head = None

    with pytest.raises(TypeError, match='not one.*OHEMSampler'):
        TASK_UTILS.build(MINER, default_args=dict(context=RoIHeadLike()))

    @MODELS.register_module(force=True)
    class _OwnTargetsRPN(RPNHead):
        def get_targets(self, *args, **kwargs):
            return super().get_targets(*args, **kwargs)

    with pytest.raises(TypeError, match='overrides AnchorHead.get_targets'):
        MODELS.build(rpn_cfg(MINER, type='_OwnTargetsRPN'))
    with pytest.raises(TypeError, match="OHEMRPNHead needs .*RPNOHEMSampler.*RandomSampler"):
        MODELS.build(rpn_cfg(dict(type='RandomSampler', num=256, pos_fraction=0.5), type='OHEMRPNHead'))


def test_plain_rpn_head_without_the_miner_is_untouched():
    head = MODELS.build(rpn_cfg(dict(type='RandomSampler', num=256, pos_fraction=0.5)))
    assert type(head) is RPNHead


def _ours(name: str, vgg: bool = False) -> Config:
    """One of our configs, CPU-sized: no downloads, RoIAlign, fewer proposals and RoIs."""
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    if vgg:
        from ohem_experiments.toy_vgg import shrink_vgg16
        shrink_vgg16(cfg, base_channels=8, fc_out_channels=64)
        cfg.model.rpn_head.anchor_generator.scales = [1.5, 2.5, 3.5]  # 24-56 px anchors for 96 px images
        cfg.model.roi_head.bbox_head.num_classes = 5
    drop_pretrained(cfg)
    use_roi_align(cfg)
    cfg.model.train_cfg.rpn_proposal.max_per_img = 256
    cfg.model.train_cfg.rcnn.sampler.num = 64
    return cfg


CASES = {
    'r50_fpn_rpn_ohem': ('rpn_ohem/faster_rcnn_r50_fpn_rpn_ohem_coco.py', False, 'RandomSampler'),
    'r50_fpn_both': ('rpn_ohem/faster_rcnn_r50_fpn_ohem_rpn_ohem_coco.py', False, 'OHEMSampler'),
    'vgg16_rpn_ohem': ('rpn_ohem/faster_rcnn_vgg16_rpn_ohem_voc07.py', True, 'RandomSampler'),
    'vgg16_both': ('rpn_ohem/faster_rcnn_vgg16_ohem_rpn_ohem_voc07.py', True, 'OHEMSampler'),
}


@pytest.mark.parametrize('case', list(CASES))
def test_configs_put_the_miner_in_train_cfg_rpn(case):
    name, _, rcnn = CASES[case]
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    s = cfg.model.train_cfg.rpn.sampler
    assert (s.type, s.num, s.keep_ratio, s.nms.iou_threshold) == ('RPNOHEMSampler', 256, False, 0.7)
    assert 'pos_fraction' not in s and cfg.model.rpn_head.type == 'RPNHead'
    assert cfg.model.train_cfg.rcnn.sampler.type == rcnn


@pytest.mark.slow
@pytest.mark.parametrize('case', list(CASES))
def test_faster_rcnn_trains_real_steps_with_the_rpn_miner(case):
    name, vgg, rcnn = CASES[case]
    model = build(_ours(name, vgg))
    assert type(model.rpn_head) is OHEMRPNHead
    assert type(model.roi_head.bbox_sampler).__name__ == rcnn
    if rcnn == 'OHEMSampler':
        assert isinstance(model.roi_head.bbox_sampler, OHEMSampler)
    data = batch(model, size=96 if vgg else 128, num_classes=5)
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    before = copy.deepcopy(model.rpn_head.state_dict())
    for _ in range(2):
        logs = train_step(model, data, optim)
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
        s = model.rpn_head.sampler.last_stats
        assert s.mined == 256 < s.candidates
    assert any(not torch.equal(before[k], v) for k, v in model.rpn_head.state_dict().items())


def test_rpn_ohem_preset_rows_and_recall_request():
    from ohem_experiments.table1 import PRESETS, plan_jobs
    preset = PRESETS['rpn_ohem']
    jobs = plan_jobs(preset, [0, 1], REPO / 'work_dirs' / 'unused', iters=4, root=REPO)
    # seed-major: a sweep cut off part-way leaves complete pairs
    assert [j.name for j in jobs] == ['rcnn_ohem__seed-0', 'rpn_rcnn_ohem__seed-0', 'rpn_ohem__seed-0',
                                      'rcnn_ohem__seed-1', 'rpn_rcnn_ohem__seed-1', 'rpn_ohem__seed-1']
    assert all(j.extra['proposal_recall'] == dict(num=300, ious=[0.5, 0.7]) for j in jobs)
    samplers = {j.extra['row']: (j.cfg.model.train_cfg.rpn.sampler.type, j.cfg.model.train_cfg.rcnn.sampler.type)
                for j in jobs}
    assert samplers == {'rcnn_ohem': ('RandomSampler', 'OHEMSampler'),
                        'rpn_rcnn_ohem': ('RPNOHEMSampler', 'OHEMSampler'),
                        'rpn_ohem': ('RPNOHEMSampler', 'RandomSampler')}
    assert all(j.cfg.model.test_cfg.rpn.max_per_img >= 300 for j in jobs)  # recall@300 sees 300 proposals
    assert preset.pairs == (('rpn_rcnn_ohem', 'rcnn_ohem'), ('rpn_ohem', 'rcnn_ohem'))


def test_rpn_ohem_table_has_paired_maps_and_recall(tmp_path):
    from ohem_experiments.runs import RunResult
    from ohem_experiments.table1 import PRESETS, plan_jobs, write_table
    preset = PRESETS['rpn_ohem']
    jobs = plan_jobs(preset, [0, 1], tmp_path, iters=4, root=REPO)
    maps = {'rcnn_ohem': (0.50, 0.60), 'rpn_rcnn_ohem': (0.55, 0.65), 'rpn_ohem': (0.40, 0.45)}
    results = {j.name: RunResult(name=j.name, work_dir=str(j.work_dir), config_hash=j.digest,
                                 metrics={'pascal_voc/mAP': maps[j.extra['row']][j.extra['seed']],
                                          'rpn/recall@300_iou0.5': 0.9,
                                          'rpn/recall@300_iou0.7': 0.5 + j.extra['seed'] / 10},
                                 final_loss=1.0, s_per_iter=0.1, train_seconds=1.0, test_seconds=1.0, iters=4,
                                 extra=dict(j.extra)) for j in jobs}
    paths = write_table(preset, jobs, results, tmp_path, chart=False)
    data = json.loads(paths['json'].read_text())
    pairs = {(p['ohem'], p['frcn']): p['test'] for p in data['pairs']}
    assert pairs[('rpn_rcnn_ohem', 'rcnn_ohem')]['mean_diff'] == pytest.approx(0.05)
    assert pairs[('rpn_ohem', 'rcnn_ohem')]['wins'] == 0 and pairs[('rpn_ohem', 'rcnn_ohem')]['losses'] == 2
    rec = {r['key']: r['recall'] for r in data['rows']}
    assert rec['rpn_ohem']['rpn/recall@300_iou0.7']['mean'] == pytest.approx(0.55)
    assert rec['rpn_ohem']['rpn/recall@300_iou0.7']['half_width'] == pytest.approx(12.7062 * 0.0707107 / 2 ** 0.5,
                                                                                    rel=1e-4)  # t(0.975, 1)
    md = paths['md'].read_text()
    assert '| RPN-mining row | R-CNN-only row |' in md and '| rpn_rcnn_ohem | rcnn_ohem | 2 | 5.0 |' in md
    assert 'rpn/recall@300_iou0.5 | rpn/recall@300_iou0.7 |' in md and '| 90.0 [90.0, 90.0] | 55.0 [' in md


def test_proposal_recall_counts_gts_covered_by_the_top_proposals():
    from mmdet.structures import DetDataSample
    from ohem_experiments.proposal_recall import RECALL_KEY, proposal_recall

    class FakeRPN:
        def predict(self, feats, samples, rescale):
            return [InstanceData(bboxes=torch.tensor([[0., 0., 10., 10.], [50., 50., 60., 60.]]),
                                 scores=torch.tensor([0.9, 0.1]))]

    class FakeDetector(torch.nn.Module):
        rpn_head = FakeRPN()

        def data_preprocessor(self, batch, training):
            return batch

        def extract_feat(self, x):
            return x

    sample, other = DetDataSample(), DetDataSample()
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[0., 0., 10., 10.], [50., 50., 61., 61.]]))
    other.gt_instances = InstanceData(bboxes=torch.tensor([[100., 100., 120., 120.]]))  # missed by both
    loader = [dict(inputs=None, data_samples=[sample]), dict(inputs=None, data_samples=[other])]
    assert proposal_recall(FakeDetector(), loader, num=300, ious=(0.5, 0.9)) == {
        RECALL_KEY(300, 0.5): pytest.approx(2 / 3), RECALL_KEY(300, 0.9): pytest.approx(1 / 3)}
    assert proposal_recall(FakeDetector(), loader[:1], num=1, ious=(0.5, )) == {RECALL_KEY(1, 0.5): 0.5}


@pytest.mark.slow
def test_rpn_ohem_preset_runs_end_to_end(tmp_path):
    """tools/sweep.py --preset rpn_ohem on tiny data: 2 rows x 2 seeds, 2 iterations, worker processes."""
    import importlib.util

    from ohem_experiments.json_logs import load_json_log
    from ohem_experiments.toy_voc import generate_toy_voc
    spec = importlib.util.spec_from_file_location('sweep_tool', REPO / 'tools/sweep.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    generate_toy_voc(tmp_path / 'data', num_trainval=4, num_test=2, image_size=64)
    out = tmp_path / 'table'
    results = tool.main(['--preset', 'rpn_ohem', '--rows', 'rcnn_ohem,rpn_ohem', '--seeds', '0-1', '--iters', '2',
                         '--workers', '2', '--threads', '1', '--data-root', str(tmp_path / 'data'), '--out', str(out)])
    assert sorted(results) == ['rcnn_ohem__seed-0', 'rcnn_ohem__seed-1', 'rpn_ohem__seed-0', 'rpn_ohem__seed-1']
    for name, r in results.items():
        assert 0.0 <= r.map <= 1.0
        assert 0.0 <= r.metrics['rpn/recall@300_iou0.5'] <= 1.0 and 'rpn/recall@300_iou0.7' in r.metrics
        logged = {k for rec in load_json_log(Path(r.extra['log_dir'])) for k in rec}
        # the RPN miner's diagnostics reach the json log of the runs that use it, and only those
        assert ('rpn_ohem_fg_share' in logged) == name.startswith('rpn_ohem'), name
    md = (out / 'table.md').read_text()
    assert '| rpn_ohem | rcnn_ohem | 2 |' in md and 'rpn/recall@300_iou0.5' in md


def test_benchmark_times_the_rpn_miner_against_the_same_r_cnn_sampler():
    from ohem_experiments.benchmark.detectors import WithRPNMiner, describe_variant, prepare, swap_sampler
    prep = prepare('r50_fpn', ['random', 'rpn_ohem'], 64, batch_size=1, num_items=(2, ))
    plain, mined = prep.samplers['random'], prep.samplers['rpn_ohem']
    assert isinstance(mined, WithRPNMiner) and isinstance(mined.rpn, RPNOHEMSampler) and mined.rpn.num == 256
    assert type(plain.rcnn) is type(mined.rcnn) and type(plain.rpn).__name__ == 'RandomSampler'
    swap_sampler(prep.model, mined)
    assert prep.model.rpn_head.sampler is mined.rpn and prep.model.roi_head.bbox_sampler is mined.rcnn
    swap_sampler(prep.model, plain)
    assert prep.model.rpn_head.sampler is plain.rpn
    assert describe_variant('rpn_ohem') == 'RandomSampler + RPN miner (RPNOHEMSampler)'
    assert describe_variant('ours_rpn_ohem').endswith(' + RPN miner (RPNOHEMSampler)')
    assert 'RPN' not in describe_variant('random')


@pytest.mark.parametrize('toy, real', [('toy_rpn_ohem', 'rpn_ohem/faster_rcnn_vgg16_rpn_ohem_voc07.py'),
                                       ('toy_ohem_rpn_ohem', 'rpn_ohem/faster_rcnn_vgg16_ohem_rpn_ohem_voc07.py')])
def test_toy_configs_keep_the_real_training_settings(toy, real):
    t = Config.fromfile(str(REPO / 'configs' / 'toy' / f'{toy}.py'))
    r = Config.fromfile(str(REPO / 'configs' / real))
    assert t.model.train_cfg == r.model.train_cfg
    assert t.train_dataloader.batch_size == r.train_dataloader.batch_size
    assert t.model.backbone.base_channels == 8 and t.model.rpn_head.anchor_generator.scales == [1.5, 2.5, 3.5]
    assert t.model.roi_head.bbox_roi_extractor.roi_layer.type == 'RoIAlign'


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_miner_on_gpu_is_the_pure_rule_and_matches_the_cpu_loss():
    torch.manual_seed(0)
    head = MODELS.build(rpn_cfg(MINER))
    feats, gts, metas = inputs()
    cpu = loss_of(head, feats, gts, metas)
    cpu_mined = [m.clone() for m in head.last_mining['mined']]
    head = head.cuda()
    gpu = loss_of(head, [f.cuda() for f in feats], [g.to('cuda') for g in gts], metas)
    m = head.last_mining
    anchors = torch.stack([cat_boxes(a) for a in head.get_anchors(
        [f.shape[-2:] for f in feats], metas, device='cuda')[0]])
    for i, mined in enumerate(m['mined']):
        cand = torch.nonzero(m['loss_cls'][i] > 0).flatten()  # BCE > 0 exactly where the weight is 1
        sel = select_hard_examples((m['loss_cls'] + m['loss_bbox'])[i, cand], anchors[i, cand], 32, 0.7)
        assert torch.equal(mined, cand[sel.indices])
        assert len(set(mined.tolist()) ^ set(cpu_mined[i].tolist())) <= 2  # float ties may differ at the edge
    if all(torch.equal(a.cpu(), b) for a, b in zip(m['mined'], cpu_mined)):
        for key in ('loss_rpn_cls', 'loss_rpn_bbox'):
            torch.testing.assert_close(sum(gpu[key]).cpu(), sum(cpu[key]).detach(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize('head, why', [('GARPNHead', 'overrides AnchorHead.get_anchors'),
                                       ('StageCascadeRPNHead', 'overrides AnchorHead.get_targets'),
                                       ('ATSSHead', 'overrides AnchorHead.get_targets'),
                                       ('FCOSHead', 'not one'), ('RPNHead', None), ('RetinaHead', None)])
def test_which_mmdet_heads_the_miner_serves(head, why):
    from mmdet_ohem.models.ohem_anchor_head import check_head
    cls = MODELS.get(head)
    instance = cls.__new__(cls)  # the check looks at the class only
    if why is None:
        check_head(instance)
    else:
        with pytest.raises(TypeError, match=why):
            check_head(instance)
