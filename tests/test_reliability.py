"""Reliability, end to end and in-process: bad settings, odd training batches, datasets, checkpoints.

The subprocess runs (kill + resume, 2-process gloo, --amp) are in ``test_reliability_runs.py``.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
from mmdet.registry import DATASETS, TASK_UTILS
from mmengine.logging import MessageHub
from mmengine.structures import InstanceData

from ._detectors import FASTER_FPN, batch, build, mmdet_config, train_step

# --------------------------------------------------------------------------------------------------
# Bad settings: an error at build time that names the setting and the value.
# --------------------------------------------------------------------------------------------------
BAD_SAMPLER_SETTINGS = {
    'num_zero': (dict(num=0), ValueError, r'num .*got 0'),
    'num_negative': (dict(num=-8), ValueError, r'num .*got -8'),
    'num_float': (dict(num=64.0), ValueError, r'num .*got 64\.0'),
    'nms_threshold_zero': (dict(nms=dict(type='LossNMS', iou_threshold=0.0)), ValueError,
                           r'iou_threshold .*\(0, 1\].*got 0\.0'),
    'nms_threshold_above_one': (dict(nms=dict(type='LossNMS', iou_threshold=1.5)), ValueError,
                                r'iou_threshold .*\(0, 1\].*got 1\.5'),
    'unknown_ranking_loss': (dict(ranking_loss='focal'), ValueError, r"ranking_loss .*got 'focal'"),
    'ratio_fraction_above_one': (dict(keep_ratio=True, pos_fraction=1.5), ValueError,
                                 r'pos_fraction .*\[0, 1\].*got 1\.5'),
    'ratio_fraction_negative': (dict(keep_ratio=True, pos_fraction=-0.25), ValueError,
                                r'pos_fraction .*got -0\.25'),
    'unknown_setting': (dict(loss_key='loss_cls'), TypeError, r"unknown setting.*'loss_key'"),
}


@pytest.mark.parametrize('case', list(BAD_SAMPLER_SETTINGS))
def test_bad_sampler_setting_fails_at_detector_build(case):
    settings, exc, match = BAD_SAMPLER_SETTINGS[case]
    cfg = mmdet_config(FASTER_FPN, sampler=settings)
    with pytest.raises(exc, match=match):
        build(cfg)


def test_bad_sampler_setting_fails_through_task_utils_build():
    with pytest.raises(ValueError, match=r'iou_threshold .*got -0\.3'):
        TASK_UTILS.build(dict(type='LossNMS', iou_threshold=-0.3))
    with pytest.raises(ValueError, match=r"readonly_dtype .*got 'int8'"):
        TASK_UTILS.build(dict(type='OHEMSampler', num=64, readonly_dtype='int8'))
    with pytest.raises(ValueError, match=r"nonfinite .*got 'ignore'"):
        TASK_UTILS.build(dict(type='OHEMSampler', num=64, nonfinite='ignore'))
    # Valid settings but no RoI head to mine for: the reason, not an AttributeError later.
    with pytest.raises(TypeError, match=r'two-stage RoI head, but it was built for None'):
        TASK_UTILS.build(dict(type='OHEMSampler', num=64))


def test_one_stage_detector_use_fails_at_build_time_with_reason():
    from mmengine.config import Config

    from mmdet_ohem.config_tools import drop_pretrained
    from mmdet_ohem.config_tools import config_path
    cfg = drop_pretrained(Config.fromfile(config_path('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py')))
    cfg.model.train_cfg.sampler = dict(type='OHEMSampler', num=256)
    with pytest.raises(TypeError, match=r'built for RetinaHead.*train_cfg\.rcnn\.sampler.*no RoI network'):
        build(cfg)


# --------------------------------------------------------------------------------------------------
# Odd training batches: real training steps of Faster R-CNN R50-FPN (mmdet's config, OHEM swapped in).
# --------------------------------------------------------------------------------------------------
def _finite(log: dict) -> bool:
    return all(torch.isfinite(torch.tensor(v)) for v in log.values())


def _roi_step(model, data, proposals, optim) -> dict:
    """One real training step of the RoI head on given proposals (one ``(k, 4)`` tensor per image)."""
    x = model.extract_feat(data['inputs'])
    rpn_results = [InstanceData(bboxes=p) for p in proposals]
    losses = model.roi_head.loss(x, rpn_results, data['data_samples'])
    loss, log_vars = model.parse_losses(losses)
    optim.zero_grad()
    loss.backward()
    optim.step()
    return {k: float(v) for k, v in log_vars.items()}


def _jitter(gt: torch.Tensor, n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` random boxes inside a ``size`` image, a third of them near the gt boxes."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * (size - 20)
    boxes = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 40], 1).clamp(max=size - 1)
    if len(gt):
        near = gt.repeat((n // 3) // len(gt) + 1, 1)[:n // 3]
        boxes[:near.shape[0]] = near + torch.randn(near.shape, generator=g) * 2
    return boxes


@pytest.fixture(scope='module')
def frcnn():
    """Faster R-CNN R50-FPN with OHEM (num=32): model, a 2-image 96 px batch and an optimizer."""
    torch.manual_seed(0)
    model = build(mmdet_config(FASTER_FPN, sampler=dict(num=32), rpn_max_per_img=200))
    data = batch(model, size=96, num_items=(3, 2))
    optim = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    return model, data, optim


def _gts(data) -> list:
    return [s.gt_instances.bboxes.tensor if hasattr(s.gt_instances.bboxes, 'tensor') else s.gt_instances.bboxes
            for s in data['data_samples']]


@pytest.mark.slow
def test_trains_on_image_without_gt_boxes(frcnn):
    model, data, optim = frcnn
    data = copy.deepcopy(data)
    gt0 = data['data_samples'][0].gt_instances
    data['data_samples'][0].gt_instances = gt0[gt0.labels < -1]  # empty, same fields
    log = train_step(model, data, optim)
    assert _finite(log), log
    sampler = model.roi_head.bbox_sampler
    assert sampler.last_stats.mined > 0


@pytest.mark.slow
def test_trains_on_image_without_proposals_and_fewer_candidates_than_num(frcnn):
    model, data, optim = frcnn
    gts = _gts(data)
    sampler = model.roi_head.bbox_sampler
    # Image 0: no proposals at all (its gt boxes are still candidates); image 1: 5 proposals < num=32.
    proposals = [gts[0].new_zeros((0, 4)), _jitter(gts[1], 5, 96, seed=1)]
    log = _roi_step(model, data, proposals, optim)
    assert _finite(log), log
    assert sampler.last_stats.candidates == 5 + len(gts[1]) and sampler.last_stats.mined == 5 + len(gts[1])
    # Both images without proposals and without gt: nothing to mine anywhere, still a finite step.
    empty = copy.deepcopy(data)
    for s in empty['data_samples']:
        s.gt_instances = s.gt_instances[s.gt_instances.labels < -1]
    log = _roi_step(model, empty, [g.new_zeros((0, 4)) for g in gts], optim)
    assert _finite(log), log
    assert sampler.last_stats.candidates == 0


@pytest.mark.slow
def test_trains_with_degenerate_zero_area_proposals(frcnn):
    model, data, optim = frcnn
    gts = _gts(data)
    proposals = []
    for i, g in enumerate(gts):
        p = _jitter(g, 60, 96, seed=10 + i)
        p[::3, 2] = p[::3, 0]  # zero width
        p[1::3, 3] = p[1::3, 1]  # zero height
        proposals.append(p)
    log = _roi_step(model, data, proposals, optim)
    assert _finite(log), log
    st = model.roi_head.bbox_sampler.last_stats
    assert st.nonfinite == 0 and 0 < st.mined <= 32


@pytest.mark.slow
def test_trains_when_the_assigner_ignores_every_candidate(frcnn):
    """bg_lo = 0.1 ignores RoIs with IoU < 0.1; far-away proposals and no gt-as-proposals: nothing left."""
    from mmdet.models.task_modules import MaxIoUAssigner

    from mmdet_ohem.selection import box_iou
    model, data, optim = frcnn
    sampler = model.roi_head.bbox_sampler
    far = torch.tensor([[0., 0., 1., 1.], [0., 0., 2., 1.], [1., 0., 2., 2.]])
    assert all(float(box_iou(far, g).max()) < 0.1 for g in _gts(data))
    old_assigner, old_add_gt = model.roi_head.bbox_assigner, sampler.add_gt_as_proposals
    model.roi_head.bbox_assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.5), min_pos_iou=0.5,
                                                  match_low_quality=False)
    sampler.add_gt_as_proposals = False
    try:
        log = _roi_step(model, data, [far.clone(), far.clone()], optim)
    finally:
        model.roi_head.bbox_assigner, sampler.add_gt_as_proposals = old_assigner, old_add_gt
    assert _finite(log), log
    assert sampler.last_stats.candidates == 0 and sampler.last_stats.mined == 0


def _nan_corner_features(model, data, corner: int = 4):
    """Backbone+neck features with NaN in the top-left ``corner`` cells of the finest level (read-only input).

    Only the finest level: the small poisoned RoIs are pooled from it, and a few stray NaN RoIs is the case
    under test (on the coarse levels 4 cells cover most of the image, so most RoIs would be NaN, which
    OHEM then reports as NaN instead of skipping: test_compatibility.py).
    """
    x = list(model.extract_feat(data['inputs']))
    x[0].data[..., :corner, :corner] = float('nan')
    return x


@pytest.mark.slow
@pytest.mark.parametrize('policy', ['skip', 'raise'])
def test_nonfinite_readonly_losses_never_decide_the_ranking(frcnn, policy):
    """RoIs over NaN features get NaN read-only losses: skipped (logged) or an error; never mined."""
    model, data, optim = frcnn
    sampler = model.roi_head.bbox_sampler
    gts = _gts(data)
    poisoned = [torch.tensor([[0., 0., 30., 30.], [2., 2., 40., 24.], [0., 4., 20., 50.]])]  # touch the NaN corner
    proposals = [torch.cat([poisoned[0], _jitter(g, 40, 96, seed=20 + i)]) for i, g in enumerate(gts)]
    old = sampler.nonfinite
    sampler.nonfinite = policy
    try:
        x = _nan_corner_features(model, data)
        results = [InstanceData(bboxes=p) for p in proposals]
        if policy == 'raise':
            with pytest.raises(FloatingPointError, match='non-finite ranking losses'):
                model.roi_head.loss(x, results, data['data_samples'])
            return
        mined_boxes = []
        orig_sample = sampler.sample

        def spy(*args, **kwargs):
            res = orig_sample(*args, **kwargs)
            mined_boxes.append(res.priors)  # the mined boxes, positives then negatives
            return res

        sampler.sample = spy
        try:
            losses = model.roi_head.loss(x, results, data['data_samples'])
        finally:
            del sampler.sample
        loss, log = model.parse_losses(losses)
        optim.zero_grad()
        loss.backward()
    finally:
        sampler.nonfinite = old
    assert torch.isfinite(loss), log  # only finite-loss RoIs were trained on
    assert sampler.last_stats.nonfinite > 0
    hub = MessageHub.get_current_instance()
    assert hub.get_scalar('train/ohem_nonfinite').current() > 0
    for boxes in mined_boxes:  # no mined RoI reaches into the NaN corner (4 cells * stride >= 16 px)
        assert not any(torch.equal(b, p) for b in boxes for p in poisoned[0])


def test_readonly_pass_under_bf16_autocast_ranks_on_finite_float32_losses(frcnn):
    model, data, _ = frcnn
    gts = _gts(data)
    x = model.extract_feat(data['inputs'])
    feats = [lvl[:1].detach() for lvl in x]
    sampler = model.roi_head.bbox_sampler
    res = InstanceData(priors=_jitter(gts[0], 80, 96, seed=3))
    gt = data['data_samples'][0].gt_instances
    assign = model.roi_head.bbox_assigner.assign(res, gt)
    pos, neg = assign.gt_inds > 0, assign.gt_inds == 0
    args = (feats, res.priors[pos], gts[0][assign.gt_inds[pos] - 1], assign.labels[pos], res.priors[neg])
    full = sampler.head.readonly_losses(*args).ranking('cls+loc')
    bf16 = sampler.head.readonly_losses(*args, autocast_dtype=torch.bfloat16).ranking('cls+loc')
    assert int(pos.sum()) > 0 and full.numel() == bf16.numel() == int((pos | neg).sum()) > 10
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    # bf16 has ~3 significant digits: the ranking is close to float32's, not necessarily identical.
    k = 10
    overlap = len(set(full.topk(k).indices.tolist()) & set(bf16.topk(k).indices.tolist()))
    assert overlap >= k - 3, (full, bf16)
    assert torch.allclose(full, bf16, rtol=0.1, atol=0.05)


@pytest.mark.slow
def test_full_training_steps_with_bf16_readonly_pass_stay_finite():
    model = build(mmdet_config(FASTER_FPN, sampler=dict(num=32, readonly_dtype='bf16'), rpn_max_per_img=200))
    data = batch(model, size=64, num_items=(3, 2))
    optim = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    log = train_step(model, data, optim)
    assert _finite(log), log
    st = model.roi_head.bbox_sampler.last_stats
    assert st.nonfinite == 0 and st.mined > 0 and st.cand_finite == st.candidates


# --------------------------------------------------------------------------------------------------
# Dataset: a malformed VOC annotation or a missing image names the file.
# --------------------------------------------------------------------------------------------------
@pytest.fixture()
def toy_voc(tmp_path):
    from ohem_experiments.toy_voc import generate_toy_voc
    generate_toy_voc(tmp_path, num_trainval=4, num_test=1, image_size=64, seed=0)
    return tmp_path


def _voc_cfg(root, **kw) -> dict:
    from ohem_experiments.toy_voc import toy_voc_metainfo
    return dict(type='CheckedVOCDataset', data_root=str(root), ann_file='VOC2007/ImageSets/Main/trainval.txt',
                data_prefix=dict(sub_data_root='VOC2007/'), metainfo=toy_voc_metainfo(), pipeline=[], **kw)


def _first_id(root) -> str:
    return (root / 'VOC2007/ImageSets/Main/trainval.txt').read_text().split()[0]


def test_intact_toy_voc_loads_through_the_checked_dataset(toy_voc):
    from mmdet_ohem.reliability import CheckedVOCDataset
    ds = DATASETS.build(_voc_cfg(toy_voc))
    assert isinstance(ds, CheckedVOCDataset) and len(ds) > 0
    from mmdet.datasets import VOCDataset
    assert DATASETS.get('VOCDataset') is VOCDataset  # mmdet's own name stays mmdet's class


MALFORMED_XML = {
    'not_well_formed': (lambda s: s[:len(s) // 2], r'ParseError'),
    'missing_bndbox': (lambda s: s.replace('<bndbox>', '<box>').replace('</bndbox>', '</box>'),
                       r'required element'),
    'non_numeric_coordinate': (lambda s: s.replace('<xmin>', '<xmin>abc', 1), r'not a number'),
}


@pytest.mark.parametrize('case', list(MALFORMED_XML))
def test_malformed_voc_annotation_names_the_file(toy_voc, case):
    from mmdet_ohem.reliability import AnnotationError
    edit, detail = MALFORMED_XML[case]
    xml = toy_voc / 'VOC2007' / 'Annotations' / f'{_first_id(toy_voc)}.xml'
    if case != 'not_well_formed':
        assert '<object>' in xml.read_text(), 'toy image without objects; pick another seed'
    xml.write_text(edit(xml.read_text()))
    with pytest.raises(AnnotationError, match=rf'{xml.name}.*{detail}') as err:
        DATASETS.build(_voc_cfg(toy_voc))
    assert str(xml) in str(err.value)


def test_missing_annotation_file_names_the_file(toy_voc):
    from mmdet_ohem.reliability import AnnotationError
    xml = toy_voc / 'VOC2007' / 'Annotations' / f'{_first_id(toy_voc)}.xml'
    xml.unlink()
    with pytest.raises(AnnotationError, match=rf'annotation file .*{xml.name} not found'):
        DATASETS.build(_voc_cfg(toy_voc))


def test_missing_image_names_the_file_at_build_time(toy_voc):
    from mmdet_ohem.reliability import MissingImageError
    img = toy_voc / 'VOC2007' / 'JPEGImages' / f'{_first_id(toy_voc)}.jpg'
    img.unlink()
    with pytest.raises(MissingImageError, match=rf'1 of \d+ images .*{img.name}'):
        DATASETS.build(_voc_cfg(toy_voc))
    # Opt-out keeps mmdet's behaviour (the pipeline fails later, when it reaches the image).
    assert len(DATASETS.build(_voc_cfg(toy_voc, check_images=False))) > 0


# --------------------------------------------------------------------------------------------------
# Checkpoints: a truncated or corrupt file gives a clear error naming it.
# --------------------------------------------------------------------------------------------------
def _save_runner_style_checkpoint(path) -> None:
    """What mmengine's Runner saves: weights, optimizer, message hub (HistoryBuffer + numpy), meta."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    model = torch.nn.Linear(64, 64)
    hub = {'log_scalars': {'train/loss': HistoryBuffer(np.arange(5.0), np.ones(5))}}
    torch.save({'meta': {'iter': 2, 'seed': 0}, 'state_dict': model.state_dict(),
                'optimizer': torch.optim.SGD(model.parameters(), lr=0.1).state_dict(), 'message_hub': hub},
               path)


@pytest.mark.parametrize('damage', ['truncated_half', 'truncated_tail', 'empty', 'bytes_flipped'])
def test_damaged_checkpoint_gives_a_clear_error_naming_the_file(tmp_path, damage):
    from mmengine.runner import CheckpointLoader
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmdet_ohem.reliability import CorruptCheckpointError
    good, bad = tmp_path / 'iter_1.pth', tmp_path / 'iter_2.pth'
    _save_runner_style_checkpoint(good)
    _save_runner_style_checkpoint(bad)
    data = bad.read_bytes()
    if damage == 'truncated_half':
        data = data[:len(data) // 2]
    elif damage == 'truncated_tail':
        data = data[:-30]
    elif damage == 'empty':
        data = b''
    else:  # flip bytes in the middle of the tensor data: the zip directory is intact, a CRC is not
        mid = len(data) // 2
        data = data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:]
    bad.write_bytes(data)
    assert CheckpointLoader.load_checkpoint(str(good))['meta']['iter'] == 2  # intact files load as before
    with pytest.raises(CorruptCheckpointError, match=r'truncated or corrupt') as err:
        _load_checkpoint(str(bad), map_location='cpu')  # what Runner.resume / load_from call
    msg = str(err.value)
    assert str(bad) in msg and f'{len(data)} bytes' in msg and 'iter_1.pth' in msg


def test_intact_checkpoint_errors_are_not_relabelled(tmp_path):
    """weights_only still refuses arbitrary objects; that is not reported as a corrupt file."""
    import pickle

    from mmengine.runner import CheckpointLoader

    from mmdet_ohem.reliability import CorruptCheckpointError
    path = tmp_path / 'odd.pth'
    torch.save({'state_dict': {}, 'payload': os.path.join}, path)  # a function: not allow-listed
    with pytest.raises(pickle.UnpicklingError) as err:
        CheckpointLoader.load_checkpoint(str(path))
    assert not isinstance(err.value, CorruptCheckpointError)


def test_auto_resume_falls_back_to_the_newest_intact_checkpoint_when_last_checkpoint_is_unusable(tmp_path, caplog):
    """A run killed while saving leaves ``last_checkpoint`` empty (mmengine rewrites it in place) or naming a
    file that is gone (``max_keep_ckpts`` deletes before saving): ``--resume`` then takes the newest intact
    ``iter_N.pth``, skipping a truncated one and ``best_*.pth``, and says so; with a usable or no
    ``last_checkpoint`` it leaves mmengine's auto-resume alone; with nothing intact left it names the file."""
    from mmdet_ohem.reliability import auto_resume_fallback
    record = tmp_path / 'last_checkpoint'
    assert auto_resume_fallback(str(tmp_path)) is None  # nothing to resume: mmengine starts afresh
    for i, name in enumerate(['iter_2.pth', 'iter_4.pth', 'iter_6.pth', 'best_coco_bbox_mAP_iter_6.pth']):
        _save_runner_style_checkpoint(tmp_path / name)
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    (tmp_path / 'iter_6.pth').write_bytes((tmp_path / 'iter_6.pth').read_bytes()[:100])  # killed mid-save
    os.utime(tmp_path / 'iter_6.pth', (1002, 1002))
    record.write_text(str(tmp_path / 'iter_4.pth'))
    assert auto_resume_fallback(str(tmp_path)) is None  # it names an existing file: mmengine's path
    record.write_text('s3://bucket/run/iter_4.pth')
    assert auto_resume_fallback(str(tmp_path)) is None  # remote: mmengine's file backends

    record.write_text('')
    assert auto_resume_fallback(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    record.write_text(str(tmp_path / 'iter_8.pth') + '\n')
    assert auto_resume_fallback(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    with open(record) as f:  # the record is left as it was: nothing is lost
        assert f.read().strip() == str(tmp_path / 'iter_8.pth')

    for name in ('iter_2.pth', 'iter_4.pth'):
        (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError) as err:
        auto_resume_fallback(str(tmp_path))
    msg = str(err.value)
    assert str(record) in msg and 'iter_8.pth, which does not exist' in msg and 'iter_6.pth: ' in msg \
        and 'delete' in msg


def test_mined_rois_keep_their_own_boxes_with_ignored_candidates(frcnn):
    """Every mined RoI's box is the one the assigner labelled: fg overlaps its gt >= 0.5, bg < 0.5.

    With bg_lo = 0.1 some candidates are ignored, so the sampler's indices and mmdet's reordered
    ``SamplingResult.priors`` (positives then negatives, ignored dropped) would disagree if mixed up.
    """
    from mmdet.models.task_modules import MaxIoUAssigner
    from mmdet.structures.bbox import bbox_overlaps
    model, data, _ = frcnn
    sampler = model.roi_head.bbox_sampler
    gts = _gts(data)
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.5), min_pos_iou=0.5, match_low_quality=False)
    x = model.extract_feat(data['inputs'])
    for img, g in enumerate(gts):
        res = InstanceData(priors=_jitter(g, 90, 96, seed=30 + img))
        gt = data['data_samples'][img].gt_instances
        assign = assigner.assign(res, gt)
        assert int((assign.gt_inds < 0).sum()) > 0  # some RoIs are ignored
        r = sampler.sample(assign, res, gt, feats=[lvl[img][None].detach() for lvl in x])
        assert r.pos_inds.numel() > 0 and r.neg_inds.numel() > 0
        pos_iou = bbox_overlaps(r.pos_priors, r.pos_gt_bboxes, is_aligned=True)
        assert bool((pos_iou >= 0.5).all()), pos_iou
        neg_iou = bbox_overlaps(r.neg_priors, g).max(dim=1).values
        assert bool(((neg_iou >= 0.1) & (neg_iou < 0.5)).all()), neg_iou
        assert torch.equal(r.pos_is_gt.bool(), (r.pos_inds < len(g)))


def test_cpu_distributed_setup_refuses_launchers_it_cannot_start():
    from mmdet_ohem.reliability import prepare_cpu_distributed
    cfg = {}
    assert prepare_cpu_distributed(cfg, 'none') is False and cfg == {}
    if torch.cuda.is_available():
        pytest.skip('with CUDA, mmengine starts distributed training itself')
    with pytest.raises(RuntimeError, match=r'--launcher slurm needs CUDA.*torchrun'):
        prepare_cpu_distributed(cfg, 'slurm')
    env = {k: os.environ.pop(k) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')
           if k in os.environ}
    try:
        with pytest.raises(RuntimeError, match=r'missing \['):
            prepare_cpu_distributed(cfg, 'pytorch')
    finally:
        os.environ.update(env)


_SHUTDOWN_SCRIPT = r'''
import gc, sys, tempfile
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from mmdet_ohem.reliability import gloo_threads, shutdown_distributed
keep = sys.argv[1] == 'keep'
assert shutdown_distributed() is False  # no process group: nothing to do
dist.init_process_group('gloo', init_method=f'file://{tempfile.mkstemp()[1]}', rank=0, world_size=1)
model = DistributedDataParallel(torch.nn.Linear(4, 2))
model(torch.randn(3, 4)).sum().backward()
gathered = [None]
dist.all_gather_object(gathered, {'rank': 0})  # as mmengine's hooks do at the end of a run
print('before', gloo_threads(), flush=True)
if not keep:
    del model
print('shutdown', shutdown_distributed(), 'after', gloo_threads(), flush=True)
if keep:
    del model  # the group goes with it, its threads idle
    gc.collect()
'''


@pytest.mark.parametrize('release', ['release', 'keep'])
def test_shutdown_distributed_joins_gloo_threads_before_exit_or_warns(tmp_path, release):
    """``tools/train.py`` and ``tools/test.py`` end distributed runs with ``shutdown_distributed``: gloo's
    worker threads, which could abort the exit by releasing a collective's tensors while Python finalizes,
    are joined (0 left) once the DDP wrapper is released; when something still holds the group it says so."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=f'{root}{os.pathsep}{os.environ.get("PYTHONPATH", "")}', OMP_NUM_THREADS='1')
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        env.pop(k, None)
    out = subprocess.run([sys.executable, '-c', _SHUTDOWN_SCRIPT, release], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(' ', 1) for line in out.stdout.splitlines())
    assert int(lines['before']) >= 2, out.stdout  # gloo's worker threads and its transport loop
    if release == 'release':
        assert lines['shutdown'] == 'True after 0', out.stdout
        assert 'outlived' not in out.stdout + out.stderr
    else:
        assert lines['shutdown'].startswith('True after ') and lines['shutdown'] != 'True after 0', out.stdout
        assert 'gloo threads outlived destroy_process_group(): something still holds the process group' in (
            out.stdout + out.stderr)
