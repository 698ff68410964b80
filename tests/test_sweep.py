"""Sweep machinery: grid expansion, config edits, per-cell work dirs, resume, tables and charts."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from mmengine.config import Config

from ohem_experiments.config_edits import is_ohem, set_data_root, set_iters
from ohem_experiments.json_logs import load_json_log, median_time, tail_mean
from ohem_experiments.runs import RunResult, config_hash, load_finished
from ohem_experiments.sweep import NA, apply_cell, expand_grid, parse_axis_values, run_sweep


def base_cfg(sampler: str = 'RandomSampler') -> Config:
    """A minimal two-stage config skeleton (what the edits touch), as in configs/frcn."""
    rcnn = dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.5), min_pos_iou=0.5),
                sampler=dict(type=sampler, num=64, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True))
    if sampler == 'OHEMSampler':
        rcnn['sampler'].update(nms=dict(type='LossNMS', iou_threshold=0.7), keep_ratio=False)
    return Config(dict(
        model=dict(type='FasterRCNN', train_cfg=dict(rcnn=rcnn)),
        train_dataloader=dict(batch_size=2, dataset=dict(type='VOCDataset', data_root='data/VOCdevkit/',
                                                         ann_file='x.txt')),
        val_dataloader=dict(dataset=dict(type='VOCDataset', data_root='data/VOCdevkit/', ann_file='y.txt')),
        test_dataloader=dict(dataset=dict(type='VOCDataset', data_root='data/VOCdevkit/', ann_file='y.txt')),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=40000),
        param_scheduler=[dict(type='LinearLR', by_epoch=False, begin=0, end=500),
                         dict(type='MultiStepLR', by_epoch=False, begin=0, end=40000, milestones=[30000])],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=10000))))


def test_grid_is_the_product_in_canonical_order():
    cells = expand_grid({'bg_lo': [0.0, 0.1], 'ohem': [True, False]}, base_is_ohem=False)
    assert [c.as_dict for c in cells] == [
        {'bg_lo': 0.0, 'ohem': True}, {'bg_lo': 0.0, 'ohem': False},
        {'bg_lo': 0.1, 'ohem': True}, {'bg_lo': 0.1, 'ohem': False}]
    assert [c.name for c in cells] == ['bg_lo-0__ohem-on', 'bg_lo-0__ohem-off', 'bg_lo-0.1__ohem-on',
                                       'bg_lo-0.1__ohem-off']
    # canonical order: B is applied after N whatever the order given
    cells = expand_grid({'B': [128], 'N': [1, 2]}, base_is_ohem=True)
    assert [list(c.as_dict) for c in cells] == [['N', 'B'], ['N', 'B']]


def test_ohem_only_axes_collapse_where_ohem_is_off():
    cells = expand_grid({'ohem': [True, False], 'nms': [0.7, None], 'ranking_loss': ['cls+loc', 'cls']},
                        base_is_ohem=False)
    assert len(cells) == 4 + 1
    off = [c for c in cells if c.as_dict['ohem'] is False]
    assert len(off) == 1 and off[0].as_dict['nms'] == NA and off[0].name == 'ohem-off'
    assert len({c.name for c in cells}) == len(cells)
    # without an ohem axis the base config decides
    assert len(expand_grid({'nms': [0.5, 0.7]}, base_is_ohem=False)) == 1
    assert len(expand_grid({'nms': [0.5, 0.7]}, base_is_ohem=True)) == 2


def test_bad_grids_are_rejected():
    with pytest.raises(ValueError, match="'lr'"):
        expand_grid({'lr': [0.1]}, base_is_ohem=True)
    with pytest.raises(ValueError, match="'bg_lo'"):
        expand_grid({'bg_lo': []}, base_is_ohem=True)


def test_parse_axis_values():
    assert parse_axis_values('bg_lo=0,0.1') == ('bg_lo', [0, 0.1])
    assert parse_axis_values('ohem=on,off') == ('ohem', [True, False])
    assert parse_axis_values('nms=0.7,none') == ('nms', [0.7, None])
    assert parse_axis_values('ranking_loss=cls+loc,cls') == ('ranking_loss', ['cls+loc', 'cls'])
    with pytest.raises(ValueError, match='AXIS=V1'):
        parse_axis_values('bg_lo')


def _sampler(cfg):
    return cfg.model.train_cfg.rcnn.sampler


def test_apply_cell_edits_the_config():
    base = base_cfg('RandomSampler')
    cells = {c.name: c for c in expand_grid(
        {'N': [1], 'B': [64], 'bg_lo': [0.0], 'ohem': [True, False], 'ratio': [False], 'nms': [None]}, False)}
    ohem = apply_cell(base, cells['N-1__B-64__bg_lo-0__ohem-on__ratio-off__nms-none'])
    assert ohem.train_dataloader.batch_size == 1
    assert ohem.model.train_cfg.rcnn.assigner.neg_iou_thr == (0.0, 0.5)
    s = _sampler(ohem)
    assert s.type == 'OHEMSampler' and s.num == 64 and s.keep_ratio is False and s.nms is None
    plain = apply_cell(base, cells['N-1__B-64__bg_lo-0__ohem-off__ratio-off'])
    assert _sampler(plain).type == 'UniformSampler' and _sampler(plain).num == 64
    # the base is untouched
    assert _sampler(base).type == 'RandomSampler' and base.train_dataloader.batch_size == 2
    # OHEM off from an OHEM base: Fast R-CNN's RandomSampler (1:3), without OHEM-only keys
    off = apply_cell(base_cfg('OHEMSampler'), expand_grid({'ohem': [False]}, True)[0])
    assert dict(_sampler(off)) == dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1,
                                       add_gt_as_proposals=True)
    keep = apply_cell(base_cfg('OHEMSampler'), expand_grid({'ratio': [True], 'ranking_loss': ['cls']}, True)[0])
    assert _sampler(keep).keep_ratio is True and _sampler(keep).ranking_loss == 'cls'


@pytest.mark.parametrize('grid, match', [
    ({'B': [100], 'N': [3]}, 'multiple of N=3'),
    ({'bg_lo': [0.6]}, 'bg_lo=0.6'),
    ({'nms': [1.5]}, 'nms'),
    ({'ranking_loss': ['hinge']}, "'hinge'"),
    ({'iters': [0]}, 'iters'),
])
def test_bad_axis_values_name_the_value(grid, match):
    cell = expand_grid(grid, base_is_ohem=True)[0]
    with pytest.raises(ValueError, match=match):
        apply_cell(base_cfg('OHEMSampler'), cell)


def test_set_iters_rescales_the_schedule_and_data_root():
    cfg = set_iters(base_cfg(), 400)
    assert cfg.train_cfg.max_iters == 400 and cfg.train_cfg.val_interval == 400
    assert cfg.param_scheduler[1].milestones == [300] and cfg.param_scheduler[0].end == 5
    assert cfg.default_hooks.checkpoint.interval == 100
    set_data_root(cfg, 'data/toy_voc')
    assert {cfg[k].dataset.data_root for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')} == \
        {'data/toy_voc/'}


def _fake_log(work_dir: Path, losses, stamp='20260101_000000'):
    d = work_dir / stamp / 'vis_data'
    d.mkdir(parents=True)
    lines = [json.dumps(dict(iter=i + 1, step=i + 1, lr=0.01, loss=l, time=0.5 + 0.01 * i, data_time=0.0))
             for i, l in enumerate(losses)]
    lines.append(json.dumps({'pascal_voc/mAP': 0.5, 'step': len(losses)}))
    (d / f'{stamp}.json').write_text('\n'.join(lines) + '\n')
    return work_dir / stamp


class FakeTrainer:
    """Stands in for train_and_evaluate: writes a json log and result.json, records the calls."""

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def __call__(self, cfg, work_dir, name=None, clock=None, extra=None):
        self.calls.append(name)
        if name == self.fail_on:
            raise RuntimeError('interrupted')
        assert cfg.resume is True  # interrupted cells continue from their checkpoint
        log_dir = _fake_log(Path(work_dir), [2.0, 1.5, 1.0, 0.5])
        records = load_json_log(log_dir)
        ohem = is_ohem(cfg)
        result = RunResult(name=name, work_dir=str(work_dir), config_hash=config_hash(cfg),
                           metrics={'pascal_voc/mAP': 0.6 if ohem else 0.5},
                           final_loss=tail_mean(records), s_per_iter=median_time(records), train_seconds=1.0,
                           test_seconds=0.1, iters=4, extra=dict(extra or {}, log_dir=str(log_dir)))
        result.save()
        return result


def test_run_sweep_resumes_and_writes_tables(tmp_path: Path):
    grid = {'ohem': [True, False], 'bg_lo': [0.0, 0.1]}
    trainer = FakeTrainer(fail_on='bg_lo-0.1__ohem-on')
    with pytest.raises(RuntimeError, match='interrupted'):
        run_sweep(base_cfg(), grid, tmp_path, train_fn=trainer, log=lambda s: None)
    assert trainer.calls == ['bg_lo-0__ohem-on', 'bg_lo-0__ohem-off', 'bg_lo-0.1__ohem-on']
    assert load_finished(tmp_path / 'cells' / 'bg_lo-0__ohem-on') is not None
    assert load_finished(tmp_path / 'cells' / 'bg_lo-0.1__ohem-on') is None
    # rerun: the two finished cells are skipped, the interrupted one and the last one run
    trainer = FakeTrainer()
    outcomes = run_sweep(base_cfg(), grid, tmp_path, train_fn=trainer, log=lambda s: None)
    assert trainer.calls == ['bg_lo-0.1__ohem-on', 'bg_lo-0.1__ohem-off']
    assert [o.skipped for o in outcomes] == [True, True, False, False]
    # a third run trains nothing
    trainer = FakeTrainer()
    run_sweep(base_cfg(), grid, tmp_path, train_fn=trainer, log=lambda s: None)
    assert trainer.calls == []
    # a changed base config invalidates the cells (different hash) and clears their old files
    changed = set_iters(base_cfg(), 1000)
    trainer = FakeTrainer()
    run_sweep(changed, {'ohem': [True]}, tmp_path, train_fn=trainer, log=lambda s: None)
    assert trainer.calls == ['ohem-on']
    rows = list(csv.DictReader((tmp_path / 'results.csv').open()))
    assert [r['cell'] for r in rows] == ['ohem-on'] and float(rows[0]['mAP']) == 0.6
    md = (tmp_path / 'results.md').read_text()
    assert md.splitlines()[0].startswith('| cell | ohem | mAP | final_loss | s_per_iter |')
    assert (tmp_path / 'results.png').read_bytes()[:4] == b'\x89PNG'


def test_results_table_of_full_grid(tmp_path: Path):
    grid = {'ohem': [True, False], 'bg_lo': [0.0, 0.1]}
    run_sweep(base_cfg(), grid, tmp_path, train_fn=FakeTrainer(), log=lambda s: None)
    rows = list(csv.DictReader((tmp_path / 'results.csv').open()))
    assert [(r['bg_lo'], r['ohem'], r['mAP']) for r in rows] == [
        ('0.0', 'True', '0.6'), ('0.0', 'False', '0.5'), ('0.1', 'True', '0.6'), ('0.1', 'False', '0.5')]
    assert float(rows[0]['final_loss']) == pytest.approx(0.5)  # last 10% of 4 points = the last one
    assert float(rows[0]['s_per_iter']) == pytest.approx(0.52)  # median of 0.51, 0.52, 0.53


def test_resumed_logs_are_joined(tmp_path: Path):
    _fake_log(tmp_path, [4.0, 3.0, 2.0], stamp='20260101_000000')
    second = tmp_path / '20260101_000100' / 'vis_data'
    second.mkdir(parents=True)
    second.joinpath('20260101_000100.json').write_text(
        '\n'.join(json.dumps(dict(iter=i, loss=1.0 / i, lr=0.01)) for i in (3, 4)) + '\n')
    from ohem_experiments.json_logs import curve
    steps, _ = curve(load_json_log(tmp_path), 'loss')
    assert steps == [1, 2, 3, 4]


@pytest.mark.slow
def test_sweep_cli_trains_a_real_cell_and_skips_it_on_rerun(tmp_path: Path):
    """tools/sweep.py on a toy config: one real 2-iteration cell, then a rerun that trains nothing."""
    import importlib.util

    from ohem_experiments.toy_voc import generate_toy_voc
    spec = importlib.util.spec_from_file_location('sweep_tool', Path(__file__).parents[1] / 'tools/sweep.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    generate_toy_voc(tmp_path / 'data', num_trainval=4, num_test=2, image_size=64)
    argv = ['configs/toy/toy_ohem.py', '--out', str(tmp_path / 'sweep'), '--data-root', str(tmp_path / 'data'),
            '--axis', 'iters=2', '--axis', 'nms=none', '--threads', '1']
    outcomes = tool.main(argv)
    assert [(o.cell.name, o.skipped) for o in outcomes] == [('iters-2__nms-none', False)]
    result = outcomes[0].result
    assert result.iters == 2 and 0.0 <= result.map <= 1.0
    cfg = Config.fromfile(next(Path(result.work_dir).glob('*.py')))  # the config mmengine dumped
    assert cfg.model.train_cfg.rcnn.sampler.nms is None  # the cell's edit reached the trained config
    again = tool.main(argv)
    assert [o.skipped for o in again] == [True] and again[0].result.train_seconds == result.train_seconds
    assert 'iters-2__nms-none' in (tmp_path / 'sweep' / 'results.md').read_text()


def test_ohem_off_on_the_real_toy_config_gives_the_1_to_3_random_sampler():
    """``--axis ohem=on,off`` on configs/toy/toy_ohem.py (the --help example): the OHEM configs carry no
    pos_fraction (_base_/ohem_rcnn.py), and 'off' must still build Fast R-CNN's 1:3 RandomSampler."""
    from mmdet.registry import TASK_UTILS
    from mmdet.utils import register_all_modules
    register_all_modules()
    root = Path(__file__).resolve().parents[1]
    base = Config.fromfile(str(root / 'configs/toy/toy_ohem.py'))
    assert 'pos_fraction' not in base.model.train_cfg.rcnn.sampler
    cells = {c.name: c for c in expand_grid({'ohem': [True, False]}, is_ohem(base))}
    off = apply_cell(base, cells['ohem-off'])
    s = _sampler(off)
    assert (s.type, s.num, s.pos_fraction, s.neg_pos_ub) == ('RandomSampler', 64, 0.25, -1)
    sampler = TASK_UTILS.build(s)
    assert type(sampler).__name__ == 'RandomSampler' and sampler.pos_fraction == 0.25 and sampler.num == 64
    assert _sampler(apply_cell(base, cells['ohem-on'])).type == 'OHEMSampler'
    # the ratio axis on an OHEM config without pos_fraction gets the same 25% quota
    keep = apply_cell(base, expand_grid({'ratio': [True]}, True)[0])
    assert _sampler(keep).keep_ratio is True and _sampler(keep).pos_fraction == 0.25
    from ohem_experiments.quick_detectors import build_detector
    model = build_detector(off)  # the whole toy detector builds with it (the crash was here)
    assert type(model.roi_head.bbox_sampler).__name__ == 'RandomSampler'
