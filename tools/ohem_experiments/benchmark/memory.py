"""Peak memory of training iterations, per sampler variant.

CPU: PyTorch's CPU allocator has no peak counter, and ``tracemalloc`` does not see its allocations, so
each variant runs in a **fresh process**: build the model and the batch, read the resident set size
(``VmRSS``), reset the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``), run the training
iterations, read the high-water mark (``VmHWM``). The reported *iteration peak* is
``VmHWM - VmRSS_before``: the extra memory the training iterations needed on top of the built model
and batch. It is an OS-level measure, so it also counts allocator caching and fragmentation (glibc
keeps some freed memory) and is quantised to pages; that is the memory a user actually pays for.
Where ``clear_refs`` cannot be written, the lifetime peak (``ru_maxrss``) is used and the delta is
left out.

CUDA: in-process, ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
the allocation before the iteration (recorded by :mod:`.timing` for every timed iteration).

Run as ``python -m ohem_experiments.benchmark.memory '<json args>'`` (what :func:`measure_cpu_peak` does).
"""
from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch

__all__ = ['measure_cpu_peak', 'rss_mb', 'reset_peak_rss']


def _status_kb(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            m = re.search(rf'^{field}:\s+(\d+)\s+kB', f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def rss_mb() -> Optional[float]:
    """Current resident set size in MiB (``None`` where ``/proc`` is unavailable)."""
    kb = _status_kb('VmRSS')
    return kb / 1024 if kb is not None else None


def peak_rss_mb() -> float:
    """High-water mark of the resident set in MiB (since start or the last :func:`reset_peak_rss`)."""
    kb = _status_kb('VmHWM')
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return kb / 1024


def reset_peak_rss() -> bool:
    """Resets the kernel's RSS high-water mark to the current RSS; ``False`` if not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _child(args: dict) -> dict:
    """Runs in the fresh process: build, reset the peak, train ``iters`` iterations, report."""
    from .detectors import prepare, set_threads, swap_sampler, train_step

    set_threads(args.get('threads'))
    prep = prepare(args['model'], [args['variant']], args['size'], args['batch'], args['num_items'],
                   'cpu', args['seed'], precision=args.get('precision', 'fp32'))
    swap_sampler(prep.model, prep.samplers[args['variant']])
    before = rss_mb()
    reset_ok = reset_peak_rss()
    for _ in range(args['iters']):
        torch.manual_seed(args['seed'])
        train_step(prep.model, prep.optim, prep.data, prep.precision, prep.scaler)
    peak = peak_rss_mb()
    return {'variant': args['variant'], 'rss_before_mb': before, 'peak_rss_mb': peak,
            'iter_peak_mb': (peak - before) if reset_ok and before is not None else None,
            'method': 'VmHWM-VmRSS (clear_refs)' if reset_ok else 'ru_maxrss (lifetime peak)'}


def measure_cpu_peak(model: str, variant: str, size: Union[int, Sequence[int]], batch: int,
                     num_items: Sequence[int], iters: int = 2, seed: int = 0, threads: Optional[int] = None,
                     timeout: float = 1800.0, precision: str = 'fp32') -> Dict[str, object]:
    """Peak memory of ``iters`` training iterations of ``variant``, in a fresh Python process.

    Raises:
        RuntimeError: If the child process fails (its stderr tail is included).
    """
    args = dict(model=model, variant=variant, size=size, batch=batch, num_items=list(num_items),
                iters=iters, seed=seed, threads=threads, precision=precision)
    tools_dir = str(Path(__file__).resolve().parents[2])  # tools/, where ohem_experiments lives
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tools_dir, os.environ.get('PYTHONPATH')])))
    proc = subprocess.run([sys.executable, '-m', 'ohem_experiments.benchmark.memory', json.dumps(args)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'memory child for {variant!r} failed (rc={proc.returncode}):\n'
                           f'{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == '__main__':
    print(json.dumps(_child(json.loads(sys.argv[1]))))
