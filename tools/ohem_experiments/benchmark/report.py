"""Markdown tables, target checks and machine description for the benchmark's results."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
from typing import Dict, List, Optional, Tuple

import torch

from .detectors import describe_variant
from .timing import VariantTiming, median_ci, paired_ratios, ratio

__all__ = ['machine_info', 'model_table', 'nms_table', 'check_targets', 'targets_table', 'time_ratio']

CONFIDENCE = 0.95  # of the intervals on time ratios (:func:`time_ratio`)

# Targets of issue 6 (CPU; ratios from one run).
SPEED_TARGET_VS_RANDOM = {'vgg16': 1.35, 'r50_fpn': 1.08}
SPEED_TARGET_VS_MMDET = 1.05
MEMORY_TARGET_VS_RANDOM = 1.05
NMS_SHARE_TARGET = 0.02
# Targets of issue 10 (CUDA): time ours / RandomSampler per (model, AMP?), ours faster than mmdet's OHEM,
# peak memory ours / RandomSampler per model.
GPU_SPEED_TARGET_VS_RANDOM = {('r50_fpn', False): 1.05, ('r50_fpn', True): 1.03,
                              ('vgg16', False): 1.12, ('vgg16', True): 1.10}
GPU_MEMORY_TARGET_VS_RANDOM = {'r50_fpn': 1.05, 'vgg16': 1.10}


def _cpu_name() -> str:
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith('Model name:'):
                return line.split(':', 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or 'unknown CPU'


def machine_info(device: str) -> Dict[str, object]:
    """CPU/GPU, core and thread counts, library versions and the current load average."""
    import mmcv
    import mmdet
    import mmengine

    info: Dict[str, object] = {
        'cpu': _cpu_name(), 'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
        'torch': torch.__version__, 'mmcv': mmcv.__version__, 'mmdet': mmdet.__version__,
        'mmengine': mmengine.__version__, 'python': platform.python_version(), 'device': device,
    }
    if device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    if hasattr(os, 'getloadavg'):
        info['loadavg'] = [round(x, 2) for x in os.getloadavg()]
    return info


def _fmt(x: Optional[float], spec: str = '.3f', suffix: str = '') -> str:
    return '–' if x is None else f'{x:{spec}}{suffix}'


def _interval(ci: Tuple[float, float]) -> str:
    return f'{ci[0]:.3f}–{ci[1]:.3f}'


def _part(t: VariantTiming, key: str, spec: str, scale: float = 1.0) -> str:
    """Breakdown part ``key``'s median (times ``scale``), or a dash where it was not measured
    (:meth:`~.timing.VariantTiming.measured_part`)."""
    value = t.measured_part(key)
    return _fmt(value * scale if value is not None else None, spec)


def time_ratio(num: Optional[VariantTiming], den: Optional[VariantTiming]
               ) -> Tuple[Optional[float], Optional[Tuple[float, float]]]:
    """``num``'s iteration time over ``den``'s, and its confidence interval.

    The median of the per-round (paired) ratios, with a distribution-free interval for it
    (:func:`~.timing.median_ci`, :data:`CONFIDENCE`; none below 6 rounds). Where the two variants were
    not timed in the same rounds, the ratio of their medians, without an interval.
    """
    ratios = paired_ratios(num, den)
    if ratios is not None:
        return statistics.median(ratios), median_ci(ratios, CONFIDENCE)
    return ratio(num.median if num and num.times else None, den.median if den and den.times else None), None


def model_table(timings: Dict[str, VariantTiming], memory: Dict[str, dict],
                samplers: Optional[Dict[str, str]] = None) -> str:
    """One markdown table: a row per variant with time, ratios, breakdown and peak memory.

    Two time ratios: of the medians (``× RandomSampler``) and the median of the per-round ratios
    (``× Random (paired, 95% CI)``, :func:`time_ratio`, what the targets use), which cancels drift
    between rounds, with its 95% confidence interval in brackets where there are 6 rounds or more.
    ``samplers``: each variant's description as it was run (default: as the variant is described now).
    """
    base = timings.get('random')
    base_mem = memory.get('random', {})
    head = ('| variant | sampler | s/iter (median) | min–max | × RandomSampler | × Random (paired, 95% CI) '
            '| sampler s | read-only s '
            '| loss-NMS ms | cand./img | syncs/iter | peak mem MB | × Random (peak) | iter peak MB '
            '| × Random (iter peak) |')
    rows = [head, '|' + '---|' * (head.count('|') - 1)]
    for v, t in timings.items():
        desc = (samplers or {}).get(v) or describe_variant(v)
        mem = memory.get(v, {})
        cand = f'{sorted(t.candidates)[len(t.candidates) // 2]}' if t.candidates else '–'
        pairs = paired_ratios(t, base)
        paired = statistics.median(pairs) if pairs else None
        ci = median_ci(pairs, CONFIDENCE) if pairs and t is not base else None
        rows.append(
            f'| {v} | {desc} | {t.median:.3f} | {min(t.times):.3f}–{max(t.times):.3f} '
            f'| {_fmt(ratio(t.median, base.median if base else None), ".3f", "×")} '
            f'| {_fmt(paired, ".3f", "×")}{"" if ci is None else f" ({_interval(ci)})"} '
            f'| {_part(t, "sampler", ".3f")} | {_part(t, "readonly", ".3f")} '
            f'| {_part(t, "loss_nms", ".1f", 1e3)} | {cand} | {t.syncs[-1] if t.syncs else "–"} '
            f'| {_fmt(mem.get("peak_mb"), ".0f")} | {_fmt(ratio(mem.get("peak_mb"), base_mem.get("peak_mb")), ".3f", "×")} '
            f'| {_fmt(mem.get("iter_peak_mb"), ".0f")} '
            f'| {_fmt(ratio(mem.get("iter_peak_mb"), base_mem.get("iter_peak_mb")), ".3f", "×")} |')
    return '\n'.join(rows)


def nms_table(rows: List[Dict[str, object]]) -> str:
    """Markdown table of loss-NMS-alone timings."""
    out = ['| boxes | method | median ms | kept |', '|---|---|---|---|']
    out += [f"| {r['boxes']} | {r['method']} | {r['median_ms']:.2f} | {r['kept']} |" for r in rows]
    return '\n'.join(out)


def _check(name: str, value: Optional[float], limit: float,
           ci: Optional[Tuple[float, float]] = None) -> Dict[str, object]:
    """One target: ``met`` / ``MISSED`` by the value, or, where it has a confidence interval, by the
    interval: ``met`` when all of it is within the limit, ``MISSED`` when none of it is, and ``undecided``
    when it holds the limit (the run cannot tell; time more rounds)."""
    if value is None:
        status = 'n/a'
    elif ci is None:
        status = 'met' if value <= limit else 'MISSED'
    else:
        status = 'met' if ci[1] <= limit else ('MISSED' if ci[0] > limit else 'undecided')
    return {'target': name, 'value': value, 'limit': limit, 'status': status, 'ci': None if ci is None else list(ci)}


def _time_check(name: str, num: Optional[VariantTiming], den: Optional[VariantTiming],
                limit: float) -> Dict[str, object]:
    value, ci = time_ratio(num, den)
    return _check(name, value, limit, ci)


def check_targets(model: str, timings: Dict[str, VariantTiming], memory: Dict[str, dict], device: str = 'cpu',
                  precision: str = 'fp32') -> List[dict]:
    """The targets for one model, evaluated on this run's measurements: issue 10's on CUDA, issue 6's on CPU.

    Time targets take the paired ratio and its confidence interval (:func:`time_ratio`, :func:`_check`).
    """
    t = timings
    if device.startswith('cuda'):
        return _gpu_targets(model, t, memory, precision != 'fp32')
    out = []
    if model in SPEED_TARGET_VS_RANDOM:
        out.append(_time_check(f'{model}: time ours / RandomSampler', t.get('ours'), t.get('random'),
                               SPEED_TARGET_VS_RANDOM[model]))
    out.append(_time_check(f'{model}: time ours / mmdet OHEM', t.get('ours'), t.get('mmdet_ohem'),
                           SPEED_TARGET_VS_MMDET))
    for key, what in (('peak_mb', 'peak memory'), ('iter_peak_mb', 'iteration peak memory (strict)')):
        out.append(_check(f'{model}: {what} ours / RandomSampler',
                          ratio(memory.get('ours', {}).get(key), memory.get('random', {}).get(key)),
                          MEMORY_TARGET_VS_RANDOM))
    if 'ours' in t:
        out.append(_check(f'{model}: loss-NMS share of an OHEM iteration',
                          ratio(t['ours'].measured_part('loss_nms'), t['ours'].median), NMS_SHARE_TARGET))
    return out


def _gpu_targets(model: str, t: Dict[str, VariantTiming], memory: Dict[str, dict], amp: bool) -> List[dict]:
    """Issue 10's checks for the default (``ours``) and, where they were run, the selection named as a CUDA
    graph (``ours_graph``: the default since 2026-11-27, a candidate before) and eager (``ours_eager``)."""
    out = []
    for v in ('ours', 'ours_graph', 'ours_eager'):
        if v != 'ours' and v not in t:
            continue
        if (model, amp) in GPU_SPEED_TARGET_VS_RANDOM:
            out.append(_time_check(f'{model}: time {v} / RandomSampler', t.get(v), t.get('random'),
                                   GPU_SPEED_TARGET_VS_RANDOM[(model, amp)]))
        out.append(_time_check(f'{model}: time {v} / mmdet OHEM (must be < 1)', t.get(v), t.get('mmdet_ohem'), 1.0))
        if model in GPU_MEMORY_TARGET_VS_RANDOM:
            out.append(_check(f'{model}: peak memory {v} / RandomSampler',
                              ratio(memory.get(v, {}).get('peak_mb'), memory.get('random', {}).get('peak_mb')),
                              GPU_MEMORY_TARGET_VS_RANDOM[model]))
    return out


def targets_table(checks: List[dict]) -> str:
    """Markdown table of target checks."""
    out = [f'| target | measured | {CONFIDENCE:.0%} CI | limit | status |', '|---|---|---|---|---|']
    for c in checks:
        pct = 'share' in c['target']
        val = '–' if c['value'] is None else (f"{c['value'] * 100:.2f}%" if pct else f"{c['value']:.3f}×")
        ci = _interval(c['ci']) if c.get('ci') else '–'
        lim = f"{c['limit'] * 100:.0f}%" if pct else f"{c['limit']:.2f}×"
        out.append(f"| {c['target']} | {val} | {ci} | {lim} | {c['status']} |")
    return '\n'.join(out)
