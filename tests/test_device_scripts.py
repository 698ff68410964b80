"""The one-call device scripts' control flow, on the CPU with a stand-in ``python3``: every step runs or is
skipped at the deadline, and what comes back fits the device tool's limit (at most 8 files in $OUT)."""
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FILES_BACK = 8  # the device tool brings back at most 8 files from $OUT

# A python3 on PATH (not a shell function: the benchmark steps `exec` it) that stands in for the device's:
# writes what --out names (and the .md beside a .json).
FAKE_ENV = r'''
mkdir -p .fakebin
cat > .fakebin/python3 <<'EOF'
#!/usr/bin/env bash
prev='' out=''
for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
if [ -n "$out" ]; then echo '{}' > "$out"; case "$out" in *.json) echo '# table' > "${out%.json}.md";; esac; fi
echo "stand-in python3 $*"
EOF
chmod +x .fakebin/python3
export PATH="$PWD/.fakebin:$PATH"
'''


def _fake_checkout(tmp_path: Path) -> Path:
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    for name in ('gpu_check.sh', 'gpu_device_setup.sh', 'gpu_sweep.sh'):
        shutil.copy(ROOT / 'tools' / name, repo / 'tools' / name)
    (repo / '.gpu').mkdir()
    (repo / '.gpu' / 'device_env.sh').write_text(FAKE_ENV)
    (repo / '.gpu-test').mkdir()
    return repo


@pytest.mark.parametrize('deadline, ran', [(400, True), (0, False)])
def test_gpu_check_runs_or_skips_each_step_and_packs_at_most_8_files(tmp_path, deadline, ran):
    repo = _fake_checkout(tmp_path)
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), DEADLINE=str(deadline), PATH=os.environ['PATH'])
    proc = subprocess.run(['bash', 'tools/gpu_check.sh'], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= MAX_FILES_BACK, files
    assert 'gpu_check.tgz' in files and 'progress.log' in files
    progress = (out / 'progress.log').read_text()
    steps = ('read-only RoIPool', 'cuda tests', 'sweep smoke', 'benchmark VGG16', 'benchmark R50-FPN', 'read-only precision agreement',
             'profile one AMP iteration per variant, r50_fpn', 'profile one AMP iteration per variant, vgg16',
             'RPN miner cost vgg16', 'RPN miner cost r50_fpn', 'every config', "mmdet's two-stage families",
             'host time per roi_head.loss')
    for step in steps:
        assert (f'{step}' in progress) and (('rc=0' in progress) if ran else ('skipped (deadline)' in progress)), step
    if ran:
        assert {'bench_vgg16.md', 'bench_r50_fpn.md', 'bench_rpn_vgg16.md', 'bench_rpn_r50_fpn.md'} <= set(files)
        with tarfile.open(out / 'gpu_check.tgz') as tar:
            names = tar.getnames()
        assert any(n.endswith('bench_vgg16.json') for n in names)
        assert any(n.endswith('profile_vgg16.json') for n in names)
        # issue 13's sweep ran in SMOKE mode, its files packed into the tgz, its outcome in the progress log
        assert any(n.endswith('sweep/progress.log') for n in names) and any(n.endswith('sweep/logs.tgz') for n in names)
        assert 'finished runs so far: 0' in progress
        assert progress.index('read-only RoIPool') < progress.index('cuda tests') < progress.index('benchmark VGG16') \
            < progress.index('read-only precision agreement') < progress.index('every config') \
            < progress.index("mmdet's two-stage families") < progress.index('sweep smoke') \
            < progress.index('RPN miner cost')
        assert any(n.endswith('roi_pool.json') for n in names) and any(n.endswith('host_time.json') for n in names)
        assert progress.index('benchmark R50-FPN') < progress.index('host time') < progress.index('read-only precision')


def test_gpu_check_steps_select_a_rerun(tmp_path):
    repo = _fake_checkout(tmp_path)
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), STEPS='agreement', PATH=os.environ['PATH'])
    proc = subprocess.run(['bash', 'tools/gpu_check.sh'], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    progress = (out / 'progress.log').read_text()
    assert 'read-only precision agreement rc=0' in progress
    assert 'benchmark' not in progress and 'cuda tests' not in progress
    assert (out / 'readonly_agreement.json').exists()


def test_gpu_check_r50_settings_reach_the_benchmark(tmp_path):
    """The first call a GPU session plans (one precision, four variants, more rounds) runs what it names."""
    repo = _fake_checkout(tmp_path)
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), STEPS='r50_fpn', R50_PRECISIONS='fp16', ITERS='300', BENCH_BUDGET='150',
               R50_VARIANTS='random mmdet_ohem ours ours_per_level', PATH=os.environ['PATH'])
    proc = subprocess.run(['bash', 'tools/gpu_check.sh'], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out / 'gpu_check.tgz') as tar:
        log = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith('bench_r50_fpn.log'))).read().decode()
        assert '--precision fp16 --variants random mmdet_ohem ours ours_per_level --iters 300 --warmup 3 ' \
            '--time-budget 150 --no-nms' in log, log
        assert 'fp32' not in log
        # the default's time over the per-level path's, paired per round (its table goes to the progress log)
        compare = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith('compare_one_launch.md')))
        assert '--compare ours ours_per_level ' in compare.read().decode()


@pytest.mark.parametrize('smoke', [False, True])
def test_gpu_sweep_runs_the_preset_and_brings_back_at_most_8_files(tmp_path, smoke):
    repo = _fake_checkout(tmp_path)
    cells = repo / 'results' / 'table1' / 'cells' / 'frcn__seed-0'
    cells.mkdir(parents=True)
    (cells / 'result.json').write_text('{}')
    with tarfile.open(repo / 'results' / 'table1' / 'cells.tgz', 'w:gz') as tar:  # carried from a former call
        tar.add(cells / 'result.json', arcname='cells/frcn__seed-0/result.json')
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), PATH=os.environ['PATH'], SMOKE='1' if smoke else '0')
    proc = subprocess.run(['bash', 'tools/gpu_sweep.sh', 'table1', '60'], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= MAX_FILES_BACK and {'logs.tgz', 'progress.log'} <= set(files), files
    progress = (out / 'progress.log').read_text()
    if smoke:  # a short run in a scratch folder: the carried results are neither unpacked nor packed
        assert '--rows frcn,ohem_b --seeds 0-3 --iters 30' in progress and 'unpacked' not in progress
        assert 'finished runs so far: 0' in progress
    else:  # the carried finished runs are unpacked, and packed again with the new ones
        assert '--seeds 0-7' in progress and 'unpacked 1 finished runs' in progress
        assert 'finished runs so far: 1' in progress
