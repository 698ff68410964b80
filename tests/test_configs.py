"""The config pack: every config loads and builds, says what its name claims, and trains + evaluates.

Training tests run the real configs on CPU with only what a CPU needs changed: RoIAlign for RoIPool,
VGG16 narrowed with ``shrink_vgg16`` (same architecture), tiny images, a tiny VOC-format folder made by
the test (real ``CheckedVOCDataset``, i.e. mmdet's ``VOCDataset`` with file-naming errors, real ``VOCMetric``), two iterations.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator, MutableMapping

import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmdet_ohem  # noqa: F401
from ohem_experiments.toy_voc import DEFAULT_CLASSES, generate_toy_voc, toy_voc_metainfo
from ohem_experiments.toy_vgg import shrink_vgg16, shrink_vggm
from mmdet_ohem.config_tools import drop_pretrained, rcnn_train_cfgs, use_roi_align

ROOT = Path(__file__).resolve().parents[1]
# every runnable config (``_base_/`` parts and ``_*.py`` partials excluded), and the paper pack among them
CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts and not p.name.startswith('_'))
NAMES = {p.relative_to(ROOT / 'configs').as_posix(): p for p in CONFIGS}
PAPER = [n for n in NAMES if n.split('/')[0] in ('frcn', 'ohem', 'ablation')]
PY = sys.executable


def config_model(name: str, device: str = 'cpu', narrow: bool = False):
    """Config ``name``'s model, random init (pretrained weights dropped; on the CPU RoIAlign for RoIPool,
    which mmcv 2.1 has no CPU kernel for); ``narrow``: widths cut by :func:`narrow_widths`."""
    from ._detectors import build
    cfg = Config.fromfile(str(NAMES[name]))
    drop_pretrained(cfg)
    if device == 'cpu':
        use_roi_align(cfg)
    if narrow:
        narrow_widths(cfg)
    return build(cfg, seed=0, device=device)


def narrow_widths(cfg: Config) -> Config:
    """Cuts every channel width of ``cfg``'s model (VGG16, VGGM, or ResNet with FPN), in place: the same
    layers, operators and RoI counts, a fraction of the arithmetic."""
    model = cfg.model
    kind = model.backbone.type
    if kind == 'VGG16':
        return shrink_vgg16(cfg, base_channels=8, fc_out_channels=64)
    if kind == 'VGGM':
        return shrink_vggm(cfg)
    if kind != 'ResNet' or model.get('neck', {}).get('type') != 'FPN':
        raise ValueError(f'narrow_widths: no rule for backbone {kind!r} with neck {model.get("neck")!r}')
    base, out = 8, 32  # ResNet's stage widths are base * 4 * 2**i (256..2048 at base 64)
    model.backbone.update(base_channels=base, stem_channels=base, init_cfg=None)
    model.neck.update(in_channels=[base * 4 * 2 ** i for i in range(4)], out_channels=out)
    model.rpn_head.update(in_channels=out, feat_channels=out)
    model.roi_head.bbox_roi_extractor.out_channels = out
    model.roi_head.bbox_head.update(in_channels=out, fc_out_channels=64)
    return cfg


def config_batch(model, size, num_items, num_proposals: int) -> dict:
    """A 2-image batch for ``model``; a Fast R-CNN gets ``num_proposals`` proposals per image (a fresh batch
    per step: its loss pops the proposals' boxes)."""
    from ._detectors import batch
    proposals = num_proposals if model.__class__.__name__ == 'FastRCNN' else 0
    return batch(model, 2, size, num_items, num_classes=model.roi_head.bbox_head.num_classes,
                 num_proposals=proposals)


def unique_model_configs() -> list:
    """One config per distinct ``model`` (train_cfg included): the ablation, multi-scale and test-time
    variants that change only data or evaluation settings share their model's code path."""
    seen, names = set(), []
    for name in sorted(NAMES):
        key = str(Config.fromfile(str(NAMES[name])).model)
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


def _walk(node) -> Iterator[MutableMapping]:
    if isinstance(node, MutableMapping):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _walk(v)


def load(name: str) -> Config:
    return Config.fromfile(str(NAMES[name]))


def test_the_fixed_names_exist():
    for name in ('frcn/faster_rcnn_vgg16_voc07.py', 'ohem/faster_rcnn_vgg16_ohem_voc07.py',
                 'ablation/faster_rcnn_vgg16_voc07_bglo0_noratio.py'):
        assert name in NAMES
    for base in ('models/faster_rcnn_vgg16.py', 'datasets/voc07_frcn.py'):
        assert (ROOT / 'configs/_base_' / base).is_file()
    assert len(PAPER) >= 22


# ------------------------------------------------------------------------------------------------
# Every config loads and its model builds
# ------------------------------------------------------------------------------------------------

def build_model(cfg: Config):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    return MODELS.build(copy.deepcopy(cfg.model))


@pytest.mark.parametrize('name', list(NAMES))
def test_config_loads_and_model_builds(name):
    cfg = load(name)
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports.imports[0] == 'mmdet_ohem' and not cfg.custom_imports.allow_failed_imports
    assert set(cfg.custom_imports.imports) <= {'mmdet_ohem', 'mmdet_ohem.reliability'}
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator', 'optim_wrapper',
                'param_scheduler', 'train_cfg'):
        assert key in cfg, key
    drop_pretrained(cfg)
    if cfg.model.backbone.type == 'VGG16' and cfg.model.backbone.get('base_channels', 64) == 64:
        shrink_vgg16(cfg, base_channels=8, fc_out_channels=32)  # the full fc6 is built once, in test_models
    elif cfg.model.backbone.type == 'VGGM':
        shrink_vggm(cfg)  # the full VGGM is built once, in test_vggm
    model = build_model(cfg)
    assert type(model).__name__ == cfg.model.type
    assert type(model.roi_head.bbox_sampler).__name__ == rcnn_train_cfgs(cfg)[0].sampler.type


# ------------------------------------------------------------------------------------------------
# Each config sets what its file name (and header) claims
# ------------------------------------------------------------------------------------------------

def claims(name: str) -> dict:
    """What a config must set, derived from its file name alone."""
    stem = Path(name).stem
    tokens = set(stem.split('_'))
    vggm = 'vggm' in tokens  # VGG_CNN_M_1024: same method settings, its own net (tests/test_vggm.py)
    vgg = 'vgg16' in tokens or vggm
    c = dict(model='FastRCNN' if stem.startswith('fast_rcnn') else 'FasterRCNN',
             backbone='VGGM' if vggm else 'VGG16' if vgg else 'ResNet',
             batch=1 if 'n1' in tokens else 2)
    ohem = 'ohem' in tokens
    allrois = 'allrois' in tokens
    if ohem:
        c['sampler'] = 'OHEMSampler'
    elif 'noratio' in tokens or allrois:
        c['sampler'] = 'UniformSampler'
    else:
        c['sampler'] = 'RandomSampler'
    if vgg:
        bg0 = ohem or allrois or 'bglo0' in tokens
        c['neg_iou_thr'] = (0.0, 0.5) if bg0 else (0.1, 0.5)
        c['rois_per_iter'] = 2048 if allrois else 128  # B, over N images
        c['lr'] = (0.004 if vggm else 0.003) if allrois else 0.001
    else:  # mmdet's R50-FPN config, sampler swapped only
        c['neg_iou_thr'] = 0.5
        c['rois_per_iter'] = 512 * c['batch']
        c['lr'] = 0.02
    if ohem:
        c['nms'] = None if ('nonms' in tokens or 'keepratio' in tokens) else 0.7
        c['per_class'] = 'perclass' in tokens
        c['keep_ratio'] = 'keepratio' in tokens
    if 'voc0712' in tokens:
        c.update(data='voc0712', iters=80000, milestones=[30000, 60000])
    elif 'voc07' in tokens:
        c.update(data='voc07', iters=40000, milestones=[30000])
    elif 'voc12' in tokens:
        c.update(data='voc12', iters=80000)
    elif 'coco' in tokens:
        c.update(data='coco')
    return c


def _train_datasets(cfg: Config) -> list:
    ds = cfg.train_dataloader.dataset
    while 'dataset' in ds:
        ds = ds.dataset
    return list(ds.datasets) if ds.type == 'ConcatDataset' else [ds]


@pytest.mark.parametrize('name', PAPER)
def test_config_sets_what_its_name_claims(name):
    cfg, want = load(name), claims(name)
    model, rcnn = cfg.model, rcnn_train_cfgs(cfg)[0]
    header = NAMES[name].read_text().splitlines()[0]
    assert header.startswith(('# Paper row:', '# Ablation', '# Not a paper row')), header
    assert model.type == want['model'] and model.backbone.type == want['backbone']
    assert cfg.train_dataloader.batch_size == want['batch']
    assert rcnn.sampler.type == want['sampler']
    assert rcnn.sampler.num * want['batch'] == want['rois_per_iter']
    assert rcnn.assigner.type == 'MaxIoUAssigner' and rcnn.assigner.pos_iou_thr == 0.5
    # a list here would make mmdet's MaxIoUAssigner assign no negatives at all: it must be a tuple
    assert rcnn.assigner.neg_iou_thr == want['neg_iou_thr']
    assert type(rcnn.assigner.neg_iou_thr) is type(want['neg_iou_thr'])
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(want['lr'])
    if rcnn.sampler.type == 'OHEMSampler':
        nms = rcnn.sampler.get('nms', 'default')
        if want['nms'] is None:
            assert nms is None
        else:
            assert nms.type == 'LossNMS' and nms.iou_threshold == want['nms']
            assert nms.get('per_class', False) == want['per_class']
        assert rcnn.sampler.get('keep_ratio', False) == want['keep_ratio']
        assert rcnn.sampler.get('ranking_loss', 'cls+loc') == ('cls' if want['keep_ratio'] else 'cls+loc')
    elif rcnn.sampler.type == 'RandomSampler':
        assert rcnn.sampler.pos_fraction == 0.25  # the 1:3 ratio
    if want['backbone'] == 'VGG16':
        assert model.backbone.frozen_stages == 2 and model.backbone.base_channels == 64
        assert model.roi_head.bbox_roi_extractor.roi_layer == dict(type='RoIPool', output_size=7)
        head = model.roi_head.bbox_head
        assert head.type == 'FRCNBBoxHead' and head.fc_out_channels == 4096 and head.dropout == 0.5
        assert model.backbone.init_cfg.type == head.init_cfg.type == 'VGG16Pretrained'
        assert model.test_cfg.rcnn.nms.iou_threshold == 0.3  # the paper's test NMS
    data = want.get('data')
    datasets = _train_datasets(cfg)
    for ds in datasets:  # not the paper's protocol
        assert 'bbox_min_size' not in (ds.get('filter_cfg') or {}), ds
    if data and data.startswith('voc'):
        years = {'voc07': ['VOC2007'], 'voc0712': ['VOC2007', 'VOC2012'], 'voc12': ['VOC2012']}[data]
        assert [ds.data_prefix.sub_data_root.strip('/') for ds in datasets] == years
        assert all(ds.type == 'CheckedVOCDataset' and 'metainfo' not in ds for ds in datasets)
        test_ds = cfg.test_dataloader.dataset
        if data in ('voc07', 'voc0712'):
            assert [ds.ann_file for ds in datasets] == [f'{y}/ImageSets/Main/trainval.txt' for y in years]
            assert test_ds.ann_file == 'VOC2007/ImageSets/Main/test.txt'
            ev = cfg.test_evaluator
            assert (ev.type, ev.metric, ev.eval_mode) == ('VOCMetric', 'mAP', '11points')
        resize = [t for t in datasets[0].pipeline + test_ds.pipeline if t['type'] == 'Resize'] or [
            t for p in datasets[0].pipeline + test_ds.pipeline if p['type'] == 'ProposalBroadcaster'
            for t in p.transforms if t['type'] == 'Resize']
        assert resize and all(tuple(t['scale']) == (1000, 600) and t['keep_ratio'] for t in resize)
        flips = [t for t in _walk(datasets[0].pipeline) if t.get('type') == 'RandomFlip']
        assert [f['prob'] for f in flips] == [0.5]
    if data == 'coco':
        assert model.roi_head.bbox_head.num_classes == 80 and cfg.val_evaluator.type == 'CocoMetric'
    if 'iters' in want:
        assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == want['iters']
        if 'milestones' in want:
            assert cfg.param_scheduler[0].milestones == want['milestones']
            assert cfg.param_scheduler[0].gamma == 0.1 and not cfg.param_scheduler[0].by_epoch
    if want['model'] == 'FastRCNN':
        assert cfg.train_dataloader.dataset.proposal_file and cfg.test_dataloader.dataset.proposal_file
        assert 'rpn_head' not in model


def test_switch_to_roi_align_is_one_cfg_option():
    from mmengine.config import DictAction
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(['--cfg-options', 'model.roi_head.bbox_roi_extractor.roi_layer.type=RoIAlign'])
    cfg = load('ohem/faster_rcnn_vgg16_ohem_voc07.py')
    cfg.merge_from_dict(args.cfg_options)
    assert cfg.model.roi_head.bbox_roi_extractor.roi_layer == dict(type='RoIAlign', output_size=7)


# ------------------------------------------------------------------------------------------------
# Tools: mmdet 3.3's flags, exactly
# ------------------------------------------------------------------------------------------------

def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _options(module, argv) -> dict:
    import argparse
    captured = {}
    real = argparse.ArgumentParser.parse_args

    def grab(self, *a, **k):
        captured['parser'] = self
        return real(self, argv)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, 'parse_args', grab)
        module.parse_args()
    return {tuple(a.option_strings) or (a.dest,): (a.nargs, a.const, a.default, a.choices)
            for a in captured['parser']._actions}


@pytest.mark.parametrize('tool, argv', [('train', ['c.py']), ('test', ['c.py', 'ckpt.pth'])])
def test_tools_have_mmdets_exact_flags(tool, argv):
    import mmdet
    theirs = _load_module(Path(mmdet.__file__).parent / '.mim/tools' / f'{tool}.py', f'_mmdet_{tool}')
    ours = _load_module(ROOT / 'tools' / f'{tool}.py', f'_ours_{tool}')
    assert _options(ours, argv) == _options(theirs, argv)


@pytest.mark.parametrize('script, args, tail', [
    ('dist_train.sh', ['c.py', '4', '--amp'], ['c.py', '--launcher', 'pytorch', '--amp']),
    ('dist_test.sh', ['c.py', 'k.pth', '4', '--tta'], ['c.py', 'k.pth', '--launcher', 'pytorch', '--tta'])])
def test_dist_scripts_call_torchrun_with_multinode_env(script, args, tail):
    env = dict(os.environ, PYTHON='echo', NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.9', PORT='29511')
    out = subprocess.run(['bash', str(ROOT / 'tools' / script), *args], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[:3] == ['-m', 'torch.distributed.run', '--nnodes=2']
    assert {'--node_rank=1', '--master_addr=10.0.0.9', '--nproc_per_node=4', '--master_port=29511'} <= set(out)
    assert out[-len(tail):] == tail
    assert out[-len(tail) - 1].endswith(script.replace('dist_', '').replace('.sh', '.py'))
    bad = subprocess.run(['bash', str(ROOT / 'tools' / script)], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and 'usage' in bad.stderr


# ------------------------------------------------------------------------------------------------
# A representative subset trains and evaluates on a tiny VOC folder (CPU)
# ------------------------------------------------------------------------------------------------

IMAGE = 96
SCALE = (128, 96)


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('voc')
    generate_toy_voc(root, num_trainval=4, num_test=2, image_size=IMAGE, seed=0)
    _write_proposals(root)
    return root


def _write_proposals(root: Path) -> None:
    """The proposal file format of the Fast R-CNN configs: {'JPEGImages/<id>.jpg': {'bboxes', 'scores'}}."""
    rng = np.random.default_rng(0)
    (root / 'proposals').mkdir()
    for split in ('trainval', 'test'):
        ids = (root / 'VOC2007/ImageSets/Main' / f'{split}.txt').read_text().split()
        props = {}
        for i in ids:
            xy = rng.uniform(0, IMAGE * 0.7, size=(60, 2))
            wh = rng.uniform(8, IMAGE * 0.5, size=(60, 2))
            boxes = np.concatenate([xy, np.minimum(xy + wh, IMAGE - 1)], 1).astype(np.float32)
            props[f'JPEGImages/{i}.jpg'] = dict(bboxes=boxes, scores=rng.random(60).astype(np.float32))
        with open(root / 'proposals' / f'voc_2007_{split}.pkl', 'wb') as f:
            pickle.dump(props, f)


def tiny(name: str, root: Path, work_dir: Path, roi_align: bool = True) -> Config:
    """The real config with CPU-sized data, width, iterations and workers; nothing about sampling changed."""
    cfg = load(name)
    if roi_align:
        use_roi_align(cfg)
    drop_pretrained(cfg)
    shrink_vgg16(cfg, base_channels=8, fc_out_channels=64)
    cfg.model.roi_head.bbox_head.num_classes = len(DEFAULT_CLASSES)
    if 'rpn_proposal' in cfg.model.train_cfg:
        cfg.model.rpn_head.anchor_generator.scales = [2, 4, 8]  # 32-128 px anchors for ~100 px images
        cfg.model.train_cfg.rpn_proposal.update(nms_pre=300, max_per_img=100)
        cfg.model.test_cfg.rpn.update(nms_pre=300, max_per_img=50)
    for d in _walk(cfg._cfg_dict):
        if d.get('type') == 'Resize':
            d['scale'] = SCALE
        if d.get('type') in ('VOCDataset', 'CheckedVOCDataset'):
            d.update(data_root=str(root), metainfo=toy_voc_metainfo())
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].update(num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # evaluated once, by runner.test()
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work_dir)
    cfg.launcher = 'none'
    return cfg


def train_and_test(cfg: Config):
    """Trains (2 iterations) and tests ``cfg``; returns the runner and the test metrics."""
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    for p in runner.model.parameters():
        assert torch.isfinite(p).all()
    return runner, runner.test()


@pytest.mark.slow
@pytest.mark.parametrize('name', ['frcn/faster_rcnn_vgg16_voc07.py', 'ohem/faster_rcnn_vgg16_ohem_voc07.py',
                                  'ohem/fast_rcnn_vgg16_ohem_voc07.py'])
def test_trains_and_evaluates_on_tiny_voc(name, voc_root, tmp_path):
    from mmengine.logging import MessageHub
    cfg = tiny(name, voc_root, tmp_path)
    runner, metrics = train_and_test(cfg)
    assert 0.0 <= metrics['pascal_voc/mAP'] <= 1.0, metrics  # real VOCMetric, 11 points
    assert (tmp_path / 'iter_2.pth').is_file()
    sampler = runner.model.roi_head.bbox_sampler
    assert type(sampler).__name__ == rcnn_train_cfgs(cfg)[0].sampler.type
    if 'ohem' in name:
        st = sampler.last_stats
        assert 0 < st.mined <= min(64, st.candidates)
        hub = MessageHub.get_current_instance()
        assert hub.get_scalar('train/ohem_cands').current() > 0
        assert 0 <= hub.get_scalar('train/ohem_fg_share').current() <= 1


@pytest.mark.slow
def test_tools_train_then_test_with_the_documented_roi_align_switch(voc_root, tmp_path):
    cfg = tiny('ablation/faster_rcnn_vgg16_voc07_bglo0_noratio.py', voc_root, tmp_path / 'work', roi_align=False)
    cfg_file = tmp_path / 'tiny_bglo0_noratio.py'
    cfg.dump(str(cfg_file))
    switch = ['--cfg-options', 'model.roi_head.bbox_roi_extractor.roi_layer.type=RoIAlign']
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    run = subprocess.run([PY, str(ROOT / 'tools/train.py'), str(cfg_file), '--work-dir', str(tmp_path / 'work'),
                          *switch], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = tmp_path / 'work' / 'iter_2.pth'
    assert ckpt.is_file()
    out = tmp_path / 'preds.pkl'
    run = subprocess.run([PY, str(ROOT / 'tools/test.py'), str(cfg_file), str(ckpt), '--work-dir',
                          str(tmp_path / 'work'), '--out', str(out), *switch], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'pascal_voc/mAP' in run.stdout + run.stderr
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 2 and all('pred_instances' in p for p in preds)

    # The same evaluation with 2 processes (tools/dist_test.sh; gloo on CPU): one image each, gathered back
    # in order, so the same mAP; it exits cleanly (tools/test.py destroys the process group before exit).
    from .test_reliability_runs import _free_port
    dist_out = tmp_path / 'preds_dist.pkl'
    dist_env = dict(env, PYTHON=PY, MASTER_ADDR='127.0.0.1', PORT=str(_free_port()), OMP_NUM_THREADS='1')
    run_dist = subprocess.run(['bash', str(ROOT / 'tools/dist_test.sh'), str(cfg_file), str(ckpt), '2',
                               '--work-dir', str(tmp_path / 'work_dist'), '--out', str(dist_out), *switch],
                              cwd=tmp_path, env=dist_env, capture_output=True, text=True, timeout=300)
    assert run_dist.returncode == 0, run_dist.stderr[-3000:]
    assert 'gloo threads outlived' not in run_dist.stdout + run_dist.stderr

    def map_value(text: str) -> str:
        return re.findall(r'pascal_voc/mAP: ([0-9.]+)', text)[-1]
    assert map_value(run_dist.stdout + run_dist.stderr) == map_value(run.stdout + run.stderr)
    with open(dist_out, 'rb') as f:
        preds_dist = pickle.load(f)
    assert [p['img_id'] for p in preds_dist] == [p['img_id'] for p in preds]
    for one, two in zip(preds, preds_dist):
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.allclose(one['pred_instances'][key].float(), two['pred_instances'][key].float()), key


@pytest.mark.slow
def test_every_config_trains_a_bf16_autocast_step_on_cpu():
    """Issue 10's `--amp` on every config, as far as a CPU shows it: one bfloat16-autocast training step of
    each distinct model (random init, small images, RoIAlign for RoIPool) gives a finite loss. The same code
    paths as CUDA autocast except mmcv's kernels: mmcv 2.1's CPU ``nms``/``roi_align`` have no bfloat16
    kernels, so here they run in float32, as under ``tools/train.py --amp`` on a CPU (the CUDA step,
    ``test_cuda.py::test_every_config_in_configs_trains_amp_steps``, needs no such help).

    The models are narrowed (:func:`narrow_widths`: the same layers and operators): on a CPU without native
    bfloat16 (AVX2 only) torch's bf16 matmul ran at 0.3 GFLOP/s against 70 in float32, and the 38 full-width
    models took hours there."""
    from mmdet_ohem.reliability.amp import run_mmcv_ops_in_float32_under_cpu_autocast
    run_mmcv_ops_in_float32_under_cpu_autocast()
    failures = []
    for name in unique_model_configs():
        try:
            model = config_model(name, narrow=True)
            data = config_batch(model, (128, 128) if name.startswith('toy/') else (192, 256), (3, 2), 300)
            with torch.autocast('cpu', dtype=torch.bfloat16):
                raw = model.loss(data['inputs'], data['data_samples'])
            loss, _ = model.parse_losses(raw)
            loss.backward()
            if not torch.isfinite(loss.detach()):
                failures.append(f'{name}: non-finite loss {float(loss.detach())}')
        except Exception as e:  # noqa: BLE001 (collected and reported below)
            failures.append(f'{name}: {type(e).__name__}: {e}')
    assert not failures, '\n'.join(failures)
