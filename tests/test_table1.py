"""Table 1 with error bars: the statistics, the preset's rows on the real toy configs, the aggregated
files, and (slow) the parallel, restartable CLI end to end on a tiny toy set."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ohem_experiments.runs import RunResult
from ohem_experiments.stats import mean_ci, paired_t_test, t_cdf, t_ppf
from ohem_experiments.table1 import PRESETS, parse_seeds, plan_jobs, write_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('p, df, want', [(0.975, 1, 12.706204736), (0.975, 3, 3.182446305),
                                         (0.975, 7, 2.364624252), (0.975, 30, 2.042272456),
                                         (0.95, 10, 1.812461123), (0.5, 4, 0.0)])
def test_t_quantiles_match_tables(p, df, want):
    assert t_ppf(p, df) == pytest.approx(want, abs=1e-8)
    assert t_cdf(t_ppf(p, df), df) == pytest.approx(p, abs=1e-12)
    assert t_ppf(1 - p, df) == pytest.approx(-want, abs=1e-8)


def test_mean_ci_and_paired_test_known_values():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert (ci.n, ci.mean) == (4, 2.5)
    assert ci.sd == pytest.approx(math.sqrt(5 / 3))
    assert ci.half_width == pytest.approx(3.182446305 * math.sqrt(5 / 3) / 2)
    one = mean_ci([0.5])
    assert one.mean == 0.5 and one.low is None and one.sd is None
    # differences 0.5, 1.0, 1.5: mean 1, sd 0.5, t = 1 / (0.5 / sqrt 3) = 3.4641, df 2 -> p = 0.0742
    test = paired_t_test({0: 1.0, 1: 2.0, 2: 3.5, 9: 7.0}, {0: 0.5, 1: 1.0, 2: 2.0, 5: 0.0})
    assert test.keys == (0, 1, 2) and test.n == 3 and test.mean_diff == pytest.approx(1.0)
    assert test.t == pytest.approx(2 * math.sqrt(3)) and test.p_value == pytest.approx(0.0741799, abs=1e-6)
    assert (test.wins, test.losses) == (3, 0)
    same = paired_t_test({0: 1.0, 1: 2.0}, {0: 0.0, 1: 1.0})  # constant difference: no t
    assert same.mean_diff == 1.0 and same.t is None and same.p_value is None
    with pytest.raises(ValueError, match='no common keys'):
        paired_t_test({0: 1.0}, {1: 1.0})
    with pytest.raises(ValueError, match='non-finite'):
        mean_ci([1.0, float('nan')])


def test_parse_seeds():
    assert parse_seeds('0-7') == list(range(8))
    assert parse_seeds('0-2,8') == [0, 1, 2, 8]
    assert parse_seeds('3') == [3]
    for bad in ('a', '1,1', '-1', ''):
        with pytest.raises(ValueError, match='seeds'):
            parse_seeds(bad)


def test_table1_preset_rows_on_the_real_toy_configs(tmp_path):
    preset = PRESETS['table1']
    jobs = plan_jobs(preset, [0, 1], tmp_path, iters=4, root=ROOT)
    assert len(jobs) == 2 * len(preset.rows) == 30
    assert len({j.digest for j in jobs}) == len(jobs)  # every (row, seed) is a different config
    by = {j.name: j.cfg for j in jobs}
    for cfg in by.values():
        assert cfg.train_cfg.max_iters == 4
    sampler = {k: by[f'{k}__seed-0'].model.train_cfg.rcnn.sampler for k in (r.key for r in preset.rows)}
    assigner = {k: by[f'{k}__seed-0'].model.train_cfg.rcnn.assigner for k in (r.key for r in preset.rows)}
    batch = {k: by[f'{k}__seed-0'].train_dataloader.batch_size for k in (r.key for r in preset.rows)}
    assert (sampler['frcn'].type, sampler['frcn'].pos_fraction, assigner['frcn'].neg_iou_thr) == (
        'RandomSampler', 0.25, (0.1, 0.5))
    assert (sampler['frcn_bglo0'].type, assigner['frcn_bglo0'].neg_iou_thr) == ('RandomSampler', (0.0, 0.5))
    assert (sampler['frcn_noratio'].type, assigner['frcn_noratio'].neg_iou_thr) == ('UniformSampler', (0.1, 0.5))
    assert (sampler['frcn_neither'].type, assigner['frcn_neither'].neg_iou_thr) == ('UniformSampler', (0.0, 0.5))
    assert (batch['frcn_n1'], sampler['frcn_n1'].num, sampler['frcn_n1'].type) == (1, 128, 'RandomSampler')
    allrois = by['allrois__seed-0']
    assert (batch['allrois'], sampler['allrois'].type, sampler['allrois'].num) == (2, 'UniformSampler', 1024)
    assert allrois.optim_wrapper.optimizer.lr == pytest.approx(0.03)  # toy lr 0.01 x 3 (paper: 0.001 -> 0.003)
    assert (sampler['ohem'].type, sampler['ohem'].nms.iou_threshold, batch['ohem']) == ('OHEMSampler', 0.7, 2)
    assert (batch['ohem_n1'], sampler['ohem_n1'].num) == (1, 128)
    assert sampler['ohem_nonms'].nms is None
    for key in ('frcn_m', 'ohem_m', 'frcn_mb', 'ohem_mb'):
        assert by[f'{key}__seed-0'].test_with_tta is True
    for key in ('frcn_b', 'ohem_b', 'frcn_mb', 'ohem_mb'):
        assert by[f'{key}__seed-0'].model.roi_head.type == 'IterBBoxRegRoIHead'
    assert by['frcn__seed-1'].randomness.seed == 1 and by['frcn__seed-0'].randomness.seed == 0
    for a, b in preset.pairs:
        assert a.startswith('ohem') and not b.startswith('ohem')
    # every row's config builds into a detector
    from ohem_experiments.quick_detectors import build_detector
    for key in (r.key for r in preset.rows):
        model = build_detector(by[f'{key}__seed-0'])
        assert type(model.roi_head.bbox_sampler).__name__ == sampler[key].type
    with pytest.raises(KeyError, match="'nope'"):
        plan_jobs(preset, [0], tmp_path, rows=['nope'], root=ROOT)


def _result(job, m: float) -> RunResult:
    return RunResult(name=job.name, work_dir=str(job.work_dir), config_hash=job.digest,
                     metrics={'pascal_voc/mAP': m}, final_loss=1.0, s_per_iter=0.1, train_seconds=10.0,
                     test_seconds=1.0, iters=4, extra=dict(job.extra))


def test_write_table_aggregates_rows_and_pairs(tmp_path):
    preset = PRESETS['table1']
    jobs = plan_jobs(preset, [0, 1, 2], tmp_path, rows=['frcn', 'ohem', 'frcn_m'], iters=4, root=ROOT)
    maps = {'frcn': [0.50, 0.52, 0.54], 'ohem': [0.55, 0.56, 0.60], 'frcn_m': [0.40]}
    results = {}
    for j in jobs:
        seeds = maps[j.extra['row']]
        if j.extra['seed'] < len(seeds):
            results[j.name] = _result(j, seeds[j.extra['seed']])
    paths = write_table(preset, jobs, results, tmp_path, command='python tools/sweep.py --preset table1')
    assert {p.name for p in paths.values()} == {'table.md', 'table.json', 'table.png'}
    data = json.loads(paths['json'].read_text())
    rows = {r['key']: r for r in data['rows']}
    assert list(rows) == ['frcn', 'ohem', 'frcn_m']  # preset order, only the rows run
    assert rows['frcn']['stats']['mean'] == pytest.approx(0.52) and rows['frcn']['seeds'] == [0, 1, 2]
    assert rows['frcn']['stats']['half_width'] == pytest.approx(4.302652730 * 0.02 / math.sqrt(3))
    assert rows['frcn_m']['seeds'] == [0] and rows['frcn_m']['planned_seeds'] == [0, 1, 2]
    assert rows['frcn_m']['stats']['low'] is None
    pairs = {(p['ohem'], p['frcn']): p['test'] for p in data['pairs']}
    assert set(pairs) == {('ohem', 'frcn')}  # ohem_m has no run: its pair is left out
    assert pairs[('ohem', 'frcn')]['mean_diff'] == pytest.approx(0.05) and pairs[('ohem', 'frcn')]['wins'] == 3
    assert len(data['runs']) == 7 and {r['row'] for r in data['runs']} == {'frcn', 'ohem', 'frcn_m'}
    md = paths['md'].read_text()
    assert '| FRCN (bg_lo 0.1, 1:3) | `toy_frcn.py` - | 3/3 | 52.0 |' in md
    assert '| FRCN + M (multi-scale train and test) | `toy_frcn.py` multiscale=True | 1/3 | 40.0 | n/a |' in md
    assert '| ohem | frcn | 3 | 5.0 |' in md
    assert paths['png'].read_bytes()[:4] == b'\x89PNG'


@pytest.mark.slow
def test_preset_cli_runs_seeds_in_parallel_and_restarts(tmp_path, capsys):
    """2 rows x 2 seeds, 2 iterations each, in 2 worker processes; a rerun trains nothing."""
    import importlib.util

    from ohem_experiments.toy_voc import generate_toy_voc
    spec = importlib.util.spec_from_file_location('sweep_tool', ROOT / 'tools/sweep.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    generate_toy_voc(tmp_path / 'data', num_trainval=4, num_test=2, image_size=64)
    out = tmp_path / 'table'
    # ohem_b ("B", test-time only) tests the weights the ohem runs train: it waits for them, trains nothing
    argv = ['--preset', 'table1', '--rows', 'frcn,ohem_b', '--seeds', '0-1', '--iters', '2', '--workers', '2',
            '--threads', '1', '--data-root', str(tmp_path / 'data'), '--out', str(out)]
    results = tool.main(argv)
    assert sorted(results) == ['frcn__seed-0', 'frcn__seed-1', 'ohem__seed-0', 'ohem__seed-1', 'ohem_b__seed-0',
                               'ohem_b__seed-1']
    for name, r in results.items():
        assert r.iters == 2 and 0.0 <= r.map <= 1.0
        assert (out / 'cells' / name / 'worker.log').is_file()
    for seed in (0, 1):
        b, src = results[f'ohem_b__seed-{seed}'], results[f'ohem__seed-{seed}']
        assert b.extra['weights_from'] == src.name and b.train_seconds == src.train_seconds
        assert Path(b.extra['checkpoint']).parent == out / 'cells' / src.name
        assert not list((out / 'cells' / b.name).glob('*.pth'))  # it trained nothing
    data = json.loads((out / 'table.json').read_text())
    assert [r['key'] for r in data['rows']] == ['frcn', 'ohem', 'ohem_b'] and len(data['runs']) == 6
    assert [(p['ohem'], p['frcn'], p['test']['n']) for p in data['pairs']] == [('ohem', 'frcn', 2)]
    assert (out / 'table.png').is_file() and '| ohem | frcn | 2 |' in (out / 'table.md').read_text()
    capsys.readouterr()
    again = tool.main(argv)
    assert '6 finished earlier, 0 to run' in capsys.readouterr().out
    assert {k: v.train_seconds for k, v in again.items()} == {k: v.train_seconds for k, v in results.items()}


def test_run_jobs_skips_finished_runs_without_starting_a_process(tmp_path, monkeypatch):
    from ohem_experiments import parallel
    jobs = plan_jobs(PRESETS['table1'], [0, 1], tmp_path, rows=['frcn'], iters=4, root=ROOT)
    done = _result(jobs[0], 0.5)
    Path(done.work_dir).mkdir(parents=True)
    done.save()
    started = []
    monkeypatch.setattr(parallel, '_launch', lambda job, threads: started.append(job.name) or _Exited())
    lines = []
    results, failures = parallel.run_jobs(jobs, workers=2, threads=1, log=lines.append, poll_s=0.0)
    assert started == ['frcn__seed-1']  # seed 0 finished earlier with the same config hash
    assert list(results) == ['frcn__seed-0'] and results['frcn__seed-0'].map == 0.5
    assert [(f.job.name, f.returncode) for f in failures] == [('frcn__seed-1', 1)]  # exited without a result
    assert any('1 finished earlier, 1 to run' in line for line in lines)
    # a changed config (other hash) is not taken for finished
    changed = plan_jobs(PRESETS['table1'], [0], tmp_path, rows=['frcn'], iters=5, root=ROOT)
    started.clear()
    parallel.run_jobs(changed, workers=1, threads=1, log=lines.append, poll_s=0.0)
    assert started == ['frcn__seed-0']
    with pytest.raises(ValueError, match='workers'):
        parallel.run_jobs(jobs, workers=0)
    # stop starting after the deadline: nothing starts, everything is left for the next call
    started.clear()
    results, failures = parallel.run_jobs(jobs[1:], workers=1, threads=1, log=lines.append,
                                          stop_starting_after_s=0.0)
    assert started == [] and results == {} and failures == []


class _Exited:
    """A finished worker process (by default one that wrote no result)."""

    def __init__(self, returncode: int = 1):
        self.returncode = returncode

    def poll(self):
        return self.returncode


def test_test_time_rows_reuse_their_source_rows_weights(tmp_path):
    """B rows test the weights of the row they differ from only at test time; the plan says so."""
    preset = PRESETS['table1']
    assert {r.key: r.weights_from for r in preset.rows if r.weights_from} == {
        'frcn_b': 'frcn', 'ohem_b': 'ohem', 'frcn_mb': 'frcn_m', 'ohem_mb': 'ohem_m'}
    jobs = plan_jobs(preset, [0, 1], tmp_path, rows=['ohem_mb'], iters=4, root=ROOT)
    assert [j.name for j in jobs] == ['ohem_m__seed-0', 'ohem_mb__seed-0', 'ohem_m__seed-1', 'ohem_mb__seed-1']
    src, b = jobs[0], jobs[1]
    assert b.after == (src.name,) and src.after == ()
    assert b.extra['weights_from'] == str(src.work_dir)
    assert b.cfg.weights_from == dict(row='ohem_m', config_hash=src.digest)
    # a source trained differently (here: other iterations) is another config, so B is tested again
    other = plan_jobs(preset, [0], tmp_path, rows=['ohem_mb'], iters=5, root=ROOT)
    assert other[1].cfg.weights_from['config_hash'] == other[0].digest != src.digest
    from ohem_experiments.table1 import Preset, Row
    with pytest.raises(ValueError, match="row 'x' trains differently from 'a'"):
        Preset('p', (Row('a', 'A', 'c.py'), Row('x', 'X', 'c.py', (('bg_lo', 0.0), ('iter_bbox', True)), 'a')), ())
    with pytest.raises(ValueError, match="must name an earlier row"):
        Preset('p', (Row('x', 'X', 'c.py', (('iter_bbox', True),), 'a'), Row('a', 'A', 'c.py')), ())
    Preset('p', (Row('a', 'A', 'c.py'), Row('x', 'X', 'c.py', (('iter_bbox', True),), 'a')), ())  # fine


def test_run_jobs_starts_a_job_after_the_jobs_it_needs(tmp_path, monkeypatch):
    from ohem_experiments import parallel
    jobs = plan_jobs(PRESETS['table1'], [0, 1], tmp_path, rows=['frcn_b'], iters=4, root=ROOT)
    assert [j.name for j in jobs] == ['frcn__seed-0', 'frcn_b__seed-0', 'frcn__seed-1', 'frcn_b__seed-1']
    order, fail = [], {'frcn__seed-1'}

    def launch(job, threads):  # a worker that finishes at its first poll (seed 1's training fails)
        order.append(job.name)
        if job.name not in fail:
            Path(job.work_dir).mkdir(parents=True, exist_ok=True)
            _result(job, 0.5).save()
        return _Exited(1 if job.name in fail else 0)

    monkeypatch.setattr(parallel, '_launch', launch)
    lines = []
    results, failures = parallel.run_jobs(jobs, workers=4, threads=1, log=lines.append, poll_s=0.0)
    # four free workers, yet B waits for its source: both trainings start first
    assert order == ['frcn__seed-0', 'frcn__seed-1', 'frcn_b__seed-0']
    assert sorted(results) == ['frcn__seed-0', 'frcn_b__seed-0']
    assert [(f.job.name, f.returncode) for f in failures] == [('frcn__seed-1', 1), ('frcn_b__seed-1', None)]
    assert any("SKIPPED frcn_b__seed-1: it needs ['frcn__seed-1'], which failed" in line for line in lines)
    # past the stop time only a job whose sources finished in this call starts (it needs their checkpoints)
    import types
    ticks = iter([0.0, 0.0])  # t0, then the first round; every later round is past the stop time
    monkeypatch.setattr(parallel, 'time', types.SimpleNamespace(monotonic=lambda: next(ticks, 100.0),
                                                                sleep=lambda s: None))
    order.clear()
    fresh = plan_jobs(PRESETS['table1'], [0, 1], tmp_path / 'fresh', rows=['frcn_b'], iters=4, root=ROOT)
    results, failures = parallel.run_jobs(fresh, workers=1, threads=1, log=lines.append, poll_s=0.0,
                                          stop_starting_after_s=50.0)
    assert order == ['frcn__seed-0', 'frcn_b__seed-0'] and failures == []
    assert any('stopped starting runs after 50.0 s; 2 left' in line for line in lines)
    # a job whose source is neither finished nor planned waits, and says so
    lines.clear()
    results, failures = parallel.run_jobs(jobs[3:], workers=1, threads=1, log=lines.append, poll_s=0.0)
    assert results == {} and failures == []
    assert any('wait for runs that are neither finished nor planned' in line for line in lines)


def test_trained_checkpoint_names_the_missing_file(tmp_path):
    from ohem_experiments.runs import trained_checkpoint
    jobs = plan_jobs(PRESETS['table1'], [0], tmp_path, rows=['frcn'], iters=4, root=ROOT)
    with pytest.raises(FileNotFoundError, match='holds no finished run'):
        trained_checkpoint(jobs[0].work_dir)
    Path(jobs[0].work_dir).mkdir(parents=True)
    _result(jobs[0], 0.5).save()  # a result restored from cells.tgz: no checkpoint
    with pytest.raises(FileNotFoundError, match='left no checkpoint.*delete its result.json'):
        trained_checkpoint(jobs[0].work_dir)
    (Path(jobs[0].work_dir) / 'iter_4.pth').write_bytes(b'x')
    (Path(jobs[0].work_dir) / 'last_checkpoint').write_text('/elsewhere/iter_4.pth')  # made on another machine
    assert trained_checkpoint(jobs[0].work_dir) == Path(jobs[0].work_dir) / 'iter_4.pth'
