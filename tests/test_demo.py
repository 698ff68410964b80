"""A very short end-to-end run of the main job's code path (tools/demo.py --quick).

Generates a tiny toy VOC set, trains the three toy configs (FRCN, FRCN without heuristics, OHEM) for a
few iterations with mmengine's Runner, tests them with VOCMetric, and writes the summary and the plot.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / 'tools' / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_toy_configs_only_change_cpu_needs():
    """Toy configs keep their real config's method settings (assigner, sampler, N) and change CPU bits."""
    from mmengine.config import Config
    pairs = {'toy_frcn': 'frcn/faster_rcnn_vgg16_voc07.py',
             'toy_frcn_noheur': 'ablation/faster_rcnn_vgg16_voc07_bglo0_noratio.py',
             'toy_ohem': 'ohem/faster_rcnn_vgg16_ohem_voc07.py'}
    for toy, real in pairs.items():
        t = Config.fromfile(str(REPO / 'configs' / 'toy' / f'{toy}.py'))
        r = Config.fromfile(str(REPO / 'configs' / real))
        assert t.model.train_cfg.rcnn == r.model.train_cfg.rcnn, toy
        assert t.train_dataloader.batch_size == r.train_dataloader.batch_size
        assert t.model.backbone.type == r.model.backbone.type == 'VGG16'
        assert t.model.roi_head.bbox_roi_extractor.roi_layer.type == 'RoIAlign'
        assert t.model.roi_head.bbox_head.num_classes == 4
        assert t.test_evaluator == r.test_evaluator
        assert t.train_dataloader.dataset.metainfo['classes'] == ('circle', 'square', 'triangle', 'cross')


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path):
    demo = _tool('demo')
    summary = demo.main(['--quick', '--data-root', str(tmp_path / 'data'), '--work-dir', str(tmp_path / 'work'),
                         '--out-dir', str(tmp_path / 'out'), '--iters', '4', '--num-trainval', '4',
                         '--num-test', '2', '--image-size', '64'])
    assert [r['run'] for r in summary['runs']] == ['frcn', 'frcn_noheur', 'ohem']
    samplers = {r['run']: (r['sampler'], r['bg_lo'], r['ratio']) for r in summary['runs']}
    assert samplers == {'frcn': ('RandomSampler', 0.1, True), 'frcn_noheur': ('UniformSampler', 0.0, False),
                        'ohem': ('OHEMSampler', 0.0, False)}
    for r in summary['runs']:
        assert r['iters'] == 4
        assert r['mAP'] is not None and 0.0 <= r['mAP'] <= 1.0
        assert r['final_loss'] is not None and r['final_loss'] > 0
        assert r['s_per_iter'] is not None and r['s_per_iter'] > 0
    out = tmp_path / 'out'
    assert json.loads((out / 'summary.json').read_text())['runs'][2]['run'] == 'ohem'
    md = (out / 'summary.md').read_text()
    assert '| ohem | OHEMSampler |' in md and 'mAP' in md
    assert (out / 'loss_curves.png').read_bytes()[:4] == b'\x89PNG'
    # the OHEM run logged its mining stats to the json log
    from ohem_experiments.json_logs import load_json_log, ohem_keys
    ohem_log = load_json_log(summary['runs'][2]['work_dir'])
    assert {'fg_share', 'cands', 'mined_rl', 'cand_rl'} <= set(ohem_keys(ohem_log).get('ohem', []))
    for r in summary['runs']:  # the all-RoI probe logged for every run (the comparable loss curve)
        assert any('allroi_mean_rl' in rec for rec in load_json_log(r['work_dir']))
    _mmdet_analyze_logs_reads(Path(summary['runs'][2]['work_dir']), tmp_path)
    # a second call reuses the finished runs instead of retraining
    again = demo.main(['--quick', '--data-root', str(tmp_path / 'data'), '--work-dir', str(tmp_path / 'work'),
                       '--out-dir', str(tmp_path / 'out2'), '--iters', '4', '--num-trainval', '4',
                       '--num-test', '2', '--image-size', '64'])
    assert [r['train_seconds'] for r in again['runs']] == [r['train_seconds'] for r in summary['runs']]


def _mmdet_analyze_logs_reads(work_dir: Path, tmp_path: Path) -> None:
    """mmdet's own ``analyze_logs.py`` (shipped in mmdet/.mim/tools) reads our json log: the OHEM stats
    carry no '/', which it would take for a validation metric (and then skip every key after it)."""
    import os
    import subprocess
    import sys

    import mmdet
    tool = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'analysis_tools' / 'analyze_logs.py'
    log = sorted(work_dir.glob('*/vis_data/*.json'))[-1]
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [r for r in records if 'loss' in r]
    assert train and all('/' not in k for r in train for k in r), [k for k in train[0] if '/' in k]
    env = dict(os.environ, MPLBACKEND='Agg')
    out = subprocess.run([sys.executable, str(tool), 'cal_train_time', str(log), '--include-outliers'],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'average iter time' in out.stdout and 'nan' not in out.stdout, out.stdout
    png = tmp_path / 'analyze_logs.png'
    out = subprocess.run([sys.executable, str(tool), 'plot_curve', str(log), '--keys', 'loss', 'ohem_fg_share',
                          '--out', str(png), '--backend', 'Agg'], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert png.read_bytes()[:4] == b'\x89PNG'
