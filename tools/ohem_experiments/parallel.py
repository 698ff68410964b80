"""Runs many training runs side by side: N worker processes, each with its own torch thread count, on
whatever device mmengine picks (one GPU is shared by all workers), restartable across calls.

Each run (a :class:`Job`) works in its own folder. A run that finished earlier with the same config hash
(``result.json``, see :func:`~ohem_experiments.runs.load_finished`) is skipped; an interrupted one resumes
from its last checkpoint. So a sweep too long for one session (or one device call) is continued by
running the same command again. Workers are fresh Python processes (``python -m ohem_experiments.worker
JOB.pkl``) that receive the config as a pickled plain dict; their output goes to ``<work_dir>/worker.log``.
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from .runs import RunResult, load_finished

__all__ = ['Job', 'JobFailure', 'prepare_work_dir', 'run_jobs', 'HASH_FILE', 'JOB_FILE', 'WORKER_LOG']

HASH_FILE = 'config_hash.txt'
JOB_FILE = 'job.pkl'
WORKER_LOG = 'worker.log'
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Job:
    """One training run: a complete config, where it works, and its config hash.

    Attributes:
        name: Label (progress lines, result name).
        cfg: The complete config to train and test.
        digest: :func:`~ohem_experiments.runs.config_hash` of ``cfg`` (decides skipping).
        work_dir: Its folder.
        extra: Stored in the result (e.g. row and seed).
        after: Names of jobs that must have finished before this one starts (e.g. a run that tests the
            weights another run trains).
    """

    name: str
    cfg: Config
    digest: str
    work_dir: Path
    extra: Dict[str, Any] = field(default_factory=dict)
    after: Tuple[str, ...] = ()


@dataclass
class JobFailure:
    """A run that ended without a result: its job, exit code and log file."""

    job: Job
    returncode: Optional[int]
    log: Path


def prepare_work_dir(work_dir: Path, digest: str) -> None:
    """Creates ``work_dir``; a partial run of a *different* config there is cleared first (its
    checkpoints must not be resumed)."""
    marker = work_dir / HASH_FILE
    if work_dir.exists() and (not marker.exists() or marker.read_text().strip() != digest):
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest + '\n')


def _launch(job: Job, threads: int) -> subprocess.Popen:
    prepare_work_dir(job.work_dir, job.digest)
    job_file = job.work_dir / JOB_FILE
    with job_file.open('wb') as f:
        pickle.dump(dict(cfg=job.cfg.to_dict(), name=job.name, work_dir=str(job.work_dir), digest=job.digest,
                         extra=job.extra, threads=threads), f)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / 'tools')]
                                        + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        env[var] = str(threads)
    log = (job.work_dir / WORKER_LOG).open('ab')
    try:
        return subprocess.Popen([sys.executable, '-m', 'ohem_experiments.worker', str(job_file)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        log.close()


def run_jobs(jobs: Sequence[Job], workers: int = 1, threads: int = 1,
             log: Callable[[str], None] = print, poll_s: float = 1.0,
             stop_starting_after_s: Optional[float] = None) -> tuple:
    """Runs the unfinished ``jobs`` in up to ``workers`` processes at a time.

    Args:
        jobs: The runs (finished ones are skipped).
        workers: Processes at a time (e.g. 8 on one H100 for the toy runs).
        threads: torch / OpenMP threads per process.
        log: Where progress lines go.
        poll_s: Seconds between checks of the running processes.
        stop_starting_after_s: Start no new run after this many seconds (running ones finish); the rest
            stay for the next call. ``None``: no limit.

    Returns:
        ``(results, failures)``: name -> :class:`RunResult` for every finished job (old and new), and a
        list of :class:`JobFailure` for runs that exited without a result.

    Raises:
        ValueError: If ``workers`` or ``threads`` is not a positive int, or two jobs share a name or folder.

    A job starts only when the jobs named in its ``after`` have finished (now or earlier); if one of them
    fails, the job is reported as failed (exit code ``None``) without running. A job whose ``after`` jobs
    all finished in this call starts even past ``stop_starting_after_s`` (it tests their checkpoints,
    which a later device call on a fresh machine would not have).
    """
    for name, v in (('workers', workers), ('threads', threads)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f'{name} must be a positive int, got {v!r}')
    if len({j.name for j in jobs}) != len(jobs) or len({str(j.work_dir) for j in jobs}) != len(jobs):
        raise ValueError('jobs must have distinct names and work dirs')
    results: Dict[str, RunResult] = {}
    todo: deque = deque()
    for job in jobs:
        done = load_finished(job.work_dir, job.digest)
        if done is not None:
            results[job.name] = done
        else:
            todo.append(job)
    log(f'[parallel] {len(jobs)} run(s): {len(results)} finished earlier, {len(todo)} to run, '
        f'{workers} worker(s) x {threads} thread(s)')
    t0 = time.monotonic()
    running: Dict[subprocess.Popen, Job] = {}
    failures: List[JobFailure] = []
    failed: set = set()
    new_here: set = set()  # names of the jobs finished in this call
    while todo or running:
        may_start = stop_starting_after_s is None or time.monotonic() - t0 < stop_starting_after_s
        # a run it needs failed: it cannot run (nor can runs that need it)
        while (blocked := next((j for j in todo if failed & set(j.after)), None)) is not None:
            todo.remove(blocked)
            failures.append(JobFailure(blocked, None, blocked.work_dir / WORKER_LOG))
            log(f'[parallel] SKIPPED {blocked.name}: it needs {sorted(failed & set(blocked.after))}, which failed')
            failed.add(blocked.name)
        while len(running) < workers:
            # Past the stop time only jobs that follow runs finished in this call start: they need those
            # runs' files (checkpoints), which a later call on a fresh machine would not have.
            job = next((j for j in todo if all(d in results for d in j.after)
                        and (may_start or (j.after and set(j.after) <= new_here))), None)
            if job is None:
                break
            todo.remove(job)
            running[_launch(job, threads)] = job
            log(f'[parallel] start {job.name}')
        if not running:
            break
        time.sleep(poll_s)
        for proc in [p for p in running if p.poll() is not None]:
            job = running.pop(proc)
            result = load_finished(job.work_dir, job.digest)
            if proc.returncode == 0 and result is not None:
                results[job.name] = result
                new_here.add(job.name)
                log(f'[parallel] done {job.name}: mAP {result.map} ({len(results)}/{len(jobs)} finished)')
            else:
                failed.add(job.name)
                failures.append(JobFailure(job, proc.returncode, job.work_dir / WORKER_LOG))
                log(f'[parallel] FAILED {job.name} (exit {proc.returncode}); see {job.work_dir / WORKER_LOG}')
    if todo and not may_start:
        log(f'[parallel] stopped starting runs after {stop_starting_after_s} s; {len(todo)} left for the next call')
    elif todo:
        waiting = {j.name: [d for d in j.after if d not in results] for j in todo}
        log(f'[parallel] {len(todo)} run(s) wait for runs that are neither finished nor planned: {waiting}')
    return results, failures
