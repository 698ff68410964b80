"""Reliability of whole training runs, through ``tools/train.py`` in subprocesses, on CPU.

* killed with SIGKILL mid-run, resumed with ``--resume``: same final weights as an uninterrupted run;
* two processes on gloo through ``tools/dist_train.sh``: completes, both ranks end with identical
  weights, the mining statistics are in the json log; stopped halfway and resumed with ``--resume``, it
  ends with the weights of a 2-process run that was never stopped;
* ``--amp``: bfloat16 autocast on CPU.

All runs use ``tests/configs/reliability_tiny.py`` (the paper's OHEM config shrunk to seconds).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'tests' / 'configs' / 'reliability_tiny.py'
TRAIN = ROOT / 'tools' / 'train.py'
DIST_TRAIN = ROOT / 'tools' / 'dist_train.sh'
MAX_ITERS = 12  # reliability_tiny.py
RUN_TIMEOUT = 240


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory) -> Path:
    from ohem_experiments.toy_voc import generate_toy_voc
    root = tmp_path_factory.mktemp('toy_voc')
    generate_toy_voc(root, num_trainval=12, num_test=1, image_size=64, seed=0)
    return root


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONHASHSEED='0',
               PYTHONPATH=f'{ROOT}{os.pathsep}{env.get("PYTHONPATH", "")}')
    return env


def _train_cmd(work_dir: Path, toy_root: Path, *extra: str) -> list:
    return [sys.executable, str(TRAIN), str(CONFIG), '--work-dir', str(work_dir), *extra,
            '--cfg-options', f'train_dataloader.dataset.data_root={toy_root}/']


def _run(cmd: list, timeout: int = RUN_TIMEOUT, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        raise AssertionError(f'{" ".join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-6000:]}')
    return proc


@pytest.fixture(scope='module')
def straight_run(toy_root, tmp_path_factory) -> Path:
    """The uninterrupted run's final checkpoint, which every interrupted-and-resumed run must reproduce."""
    straight = tmp_path_factory.mktemp('straight')
    _run(_train_cmd(straight, toy_root))
    final = straight / f'iter_{MAX_ITERS}.pth'
    assert final.is_file()
    return final


def _weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location='cpu')['state_dict']


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:5]}'


def _json_log_records(work_dir: Path) -> list:
    logs = sorted(work_dir.glob('*/vis_data/*.json'))
    logs = [p for p in logs if p.name != 'scalars.json'] or logs
    assert logs, f'no json log under {work_dir}'
    return [json.loads(line) for line in logs[-1].read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_weights_as_an_uninterrupted_run(toy_root, straight_run, tmp_path):
    broken = tmp_path / 'broken'
    final = straight_run.name

    # Same run, killed hard as soon as its first checkpoint is complete (last_checkpoint is written
    # after the .pth), i.e. somewhere in the middle of the run. Its content, not the file: mmengine creates
    # the file, then writes it (a kill in between is the next test's case).
    proc = subprocess.Popen(_train_cmd(broken, toy_root), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    record = broken / 'last_checkpoint'
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (record.is_file() and record.read_text().strip()):
            assert proc.poll() is None, f'training exited ({proc.returncode}) before its first checkpoint'
            assert time.monotonic() < deadline, 'no checkpoint within the time limit'
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (broken / final).exists(), 'the run finished before it was killed: nothing was tested'
    resumed_from = (broken / 'last_checkpoint').read_text().strip()
    assert Path(resumed_from).name != final

    out = _run(_train_cmd(broken, toy_root, '--resume'))
    log = out.stdout + out.stderr
    resumed_iter = int(Path(resumed_from).stem.split('_')[1])
    assert f'resumed epoch: 0, iter: {resumed_iter}' in log
    _assert_same_weights(_weights(broken / final), _weights(straight_run))


@pytest.mark.slow
def test_resume_after_last_checkpoint_was_left_empty_continues_from_the_newest_intact_checkpoint(toy_root, straight_run,
                                                                                                  tmp_path):
    """A kill while mmengine rewrites ``last_checkpoint`` leaves it empty, and one during ``torch.save`` of a
    checkpoint whose predecessor ``max_keep_ckpts`` deleted leaves it stale; ``--resume`` then continues
    from the newest intact checkpoint (here ``iter_{MAX_ITERS - 4}.pth``, the last one being gone) and says
    so, where mmengine alone fails with "``  can not be found``". It ends with the uninterrupted run's
    weights."""
    work = tmp_path / 'work'
    _run(_train_cmd(work, toy_root))
    final, previous = f'iter_{MAX_ITERS}.pth', f'iter_{MAX_ITERS - 2}.pth'
    (work / final).unlink()
    (work / previous).write_bytes((work / previous).read_bytes()[:1000])  # cut short while being written
    (work / 'last_checkpoint').write_text('')
    out = _run(_train_cmd(work, toy_root, '--resume'))
    log = out.stdout + out.stderr
    assert 'last_checkpoint is empty (a run stopped while saving a checkpoint); resuming from' in log
    assert f'iter_{MAX_ITERS - 4}.pth, the newest intact checkpoint' in log and f'{previous}: ' in log
    assert f'resumed epoch: 0, iter: {MAX_ITERS - 4}' in log
    _assert_same_weights(_weights(work / final), _weights(straight_run))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_train(work: Path, toy_root: Path, *options: str, resume: bool = False,
                procs: int = 2) -> subprocess.CompletedProcess:
    """``tools/dist_train.sh`` with ``procs`` processes (gloo on CPU); ``options`` go after the data root
    in ``--cfg-options``; ``resume``: ``--resume`` (auto)."""
    env = _env()
    env.update(PORT=str(_free_port()), MASTER_ADDR='127.0.0.1', PYTHON=sys.executable)
    cmd = ['bash', str(DIST_TRAIN), str(CONFIG), str(procs), '--work-dir', str(work), *(['--resume'] if resume else []),
           '--cfg-options', f'train_dataloader.dataset.data_root={toy_root}/', *options]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if proc.returncode != 0 and '_cuda_setDevice' in proc.stderr:
        pytest.fail('mmengine tried torch.cuda.set_device on a CPU-only torch: tools/train.py must call '
                    'mmdet_ohem.reliability.prepare_cpu_distributed(cfg, args.launcher) before building the '
                    'Runner')
    assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
    # tools/train.py destroyed the process group (joining gloo's threads) before exiting
    assert 'gloo threads outlived' not in proc.stdout + proc.stderr
    return proc


def _digests(work: Path) -> list:
    return [(work / f'weights_digest_rank{r}.txt').read_text().strip() for r in (0, 1)]


@pytest.fixture(scope='module')
def dist_first_half(toy_root, tmp_path_factory) -> Path:
    """A 2-process run stopped after 6 of the config's 12 iterations (same schedule as the full run)."""
    work = tmp_path_factory.mktemp('dist_half') / 'work'
    _dist_train(work, toy_root, f'train_cfg.max_iters={MAX_ITERS // 2}')
    return work


@pytest.mark.slow
def test_two_process_gloo_run_completes_with_identical_weights_and_logs_mining_stats(dist_first_half):
    work = dist_first_half
    digests = _digests(work)
    assert digests[0] == digests[1], digests
    # The digest is of the real weights: it matches the final checkpoint rank 0 saved.
    from mmdet_ohem.reliability import weights_digest
    assert weights_digest(_weights(work / f'iter_{MAX_ITERS // 2}.pth')) == digests[0]
    records = _json_log_records(work)
    train = [r for r in records if 'loss' in r]
    assert len(train) == MAX_ITERS // 2
    for key in ('ohem_cands', 'ohem_nms_supp', 'ohem_fg_share', 'ohem_mined_rl', 'ohem_cand_rl',
                'ohem_nonfinite'):
        assert all(key in r for r in train), (key, train[0])
    assert all(r['ohem_cands'] > 0 for r in train)


@pytest.mark.slow
def test_two_process_gloo_resume_ends_with_the_uninterrupted_two_process_runs_weights(toy_root, dist_first_half,
                                                                                      tmp_path):
    """``dist_train.sh --resume`` continues the stopped 2-process run to the end; both ranks then hold the
    weights of a 2-process run that was never stopped, bit for bit (each rank's RNG state and data position
    come back from the checkpoint)."""
    straight = tmp_path / 'straight'
    _dist_train(straight, toy_root)
    resumed = tmp_path / 'resumed'
    shutil.copytree(dist_first_half, resumed)
    (resumed / 'last_checkpoint').write_text(str(resumed / f'iter_{MAX_ITERS // 2}.pth'))  # the copy's own
    out = _dist_train(resumed, toy_root, resume=True)
    assert f'resumed epoch: 0, iter: {MAX_ITERS // 2}' in out.stdout + out.stderr
    assert _digests(resumed) == _digests(straight)
    _assert_same_weights(_weights(resumed / f'iter_{MAX_ITERS}.pth'), _weights(straight / f'iter_{MAX_ITERS}.pth'))


@pytest.mark.slow
def test_amp_flag_trains_with_bf16_autocast_on_cpu(toy_root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('this test is about the CPU path; with CUDA, --amp is mmengine\'s own AmpOptimWrapper')
    work = tmp_path / 'amp'
    out = _run(_train_cmd(work, toy_root, '--amp') + ['train_cfg.max_iters=4', 'param_scheduler.0.end=4'])
    log = out.stdout + out.stderr
    assert 'AMP on CPU: bfloat16 autocast' in log
    records = [r for r in _json_log_records(work) if 'loss' in r]
    assert len(records) == 4
    assert all(torch.isfinite(torch.tensor(r['loss'])) for r in records)
    assert all(r['ohem_nonfinite'] == 0 for r in records)  # the read-only pass ranks on finite losses
    ckpt = torch.load(work / 'iter_4.pth', map_location='cpu')
    assert 'loss_scaler' not in ckpt['optimizer']  # bf16: no loss scaling
    assert all(v.dtype == torch.float32 for v in ckpt['state_dict'].values() if v.is_floating_point())


@pytest.mark.cuda
@pytest.mark.slow
def test_one_gpu_nccl_run_through_dist_train_ends_cleanly(toy_root, tmp_path):
    """On a GPU, ``tools/dist_train.sh CONFIG 1`` trains on NCCL and ``tools/train.py`` ends it with
    ``shutdown_distributed`` (a barrier, then ``destroy_process_group``): exit status 0, the rank's weights
    digest written by the last collective (``all_gather_object``), no warning of a group left held."""
    work = tmp_path / 'work'
    proc = _dist_train(work, toy_root, 'env_cfg.dist_cfg.backend=nccl', 'randomness.deterministic=False',
                       f'train_cfg.max_iters={MAX_ITERS // 3}', procs=1)
    assert (work / 'weights_digest_rank0.txt').read_text().strip()
    logs = proc.stdout + proc.stderr + ''.join(p.read_text() for p in work.glob('*/*.log'))
    assert "'backend': 'nccl'" in logs or '"backend": "nccl"' in logs or "backend='nccl'" in logs, logs[-3000:]
    assert 'Distributed training: True' in logs, logs[-3000:]
