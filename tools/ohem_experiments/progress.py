"""Compact progress lines with ETA for long CPU runs (one run, and a whole multi-run job)."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from mmengine.hooks import Hook

__all__ = ['ProgressHook', 'format_seconds', 'JobClock']


def format_seconds(seconds: Optional[float]) -> str:
    """``h:mm:ss`` (or ``?`` when unknown)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return '?'
    s = int(round(seconds))
    return f'{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}'


class JobClock:
    """Tracks a job made of several runs of ``iters`` iterations each, to give an overall ETA.

    Args:
        total_iters: Training iterations of the whole job (all runs).
    """

    def __init__(self, total_iters: int) -> None:
        self.total_iters = max(1, int(total_iters))
        self.done_iters = 0
        self._first: Optional[tuple] = None  # (time, done_iters) after the first iteration: skips set-up time
        self._run_done = 0

    def begin_run(self) -> None:
        self._run_done = 0

    def advance(self, run_iter: int) -> None:
        """Records that the current run reached ``run_iter`` iterations."""
        self.done_iters += max(0, run_iter - self._run_done)
        self._run_done = max(self._run_done, run_iter)
        if self._first is None:
            self._first = (time.perf_counter(), self.done_iters)

    def eta(self) -> Optional[float]:
        """Seconds left at the mean iteration time so far (training only; set-up and tests not counted)."""
        if self._first is None or self.done_iters <= self._first[1]:
            return None
        rate = (time.perf_counter() - self._first[0]) / (self.done_iters - self._first[1])
        return rate * (self.total_iters - self.done_iters)


class ProgressHook(Hook):
    """Prints ``[label] iter i/n  loss x  s/it  ETA run  ETA job`` at most every ``interval_s`` seconds.

    Args:
        label: Run name shown in front of each line.
        interval_s: Least seconds between two lines (the first and last iteration always print).
        clock: Optional :class:`JobClock` for the whole job's ETA.
        stream: Where to print (stdout by default).
    """

    priority = 'LOW'

    def __init__(self, label: str, interval_s: float = 15.0, clock: Optional[JobClock] = None,
                 stream: Optional[TextIO] = None) -> None:
        self.label = label
        self.interval_s = interval_s
        self.clock = clock
        self.stream = stream or sys.stdout
        self._start = 0.0
        self._last = -1e9

    def before_train(self, runner) -> None:
        self._start = time.perf_counter()
        if self.clock is not None:
            self.clock.begin_run()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        it, total = runner.iter + 1, runner.max_iters
        if self.clock is not None:
            self.clock.advance(it)
        now = time.perf_counter()
        if it not in (1, total) and now - self._last < self.interval_s:
            return
        self._last = now
        per_it = (now - self._start) / it
        loss = ''
        if isinstance(outputs, dict) and 'loss' in outputs:
            value = outputs['loss']
            loss = f'  loss {float(value.detach() if hasattr(value, "detach") else value):.4f}'
        job = f'  job ETA {format_seconds(self.clock.eta())}' if self.clock is not None else ''
        print(f'[{self.label}] iter {it}/{total}{loss}  {per_it:.2f} s/it  '
              f'run ETA {format_seconds(per_it * (total - it))}{job}', file=self.stream, flush=True)
