"""Reading mmengine's json training logs (``<work_dir>/<timestamp>/vis_data/<timestamp>.json``).

mmengine's ``LoggerHook`` writes one json object per line: training lines carry ``iter`` (or
``epoch``), ``step``, ``lr``, ``time``, ``data_time`` and every logged scalar (``loss``, ``loss_cls``,
``ohem_fg_share``, ...); evaluation lines carry the metrics (``pascal_voc/mAP``) and ``step``.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

__all__ = ['find_json_log', 'load_json_log', 'train_records', 'curve', 'tail_mean', 'median_time',
           'ohem_keys']


def find_json_log(work_dir: Union[str, Path]) -> Path:
    """The newest json log under ``work_dir`` (mmengine makes one per run, in a timestamped folder).

    ``work_dir`` may also be that timestamped folder (mmengine's ``runner.log_dir``).

    Raises:
        FileNotFoundError: If there is none.
    """
    work_dir = Path(work_dir)
    pattern = 'vis_data/*.json' if (work_dir / 'vis_data').is_dir() else '*/vis_data/*.json'
    logs = sorted(p for p in work_dir.glob(pattern) if p.name != 'scalars.json')
    if not logs:
        logs = sorted(work_dir.glob(pattern.replace('*.json', 'scalars.json')))
    if not logs:
        raise FileNotFoundError(f'no mmengine json log under {work_dir} (expected */vis_data/<timestamp>.json)')
    return logs[-1]


def _read_lines(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_json_log(path_or_work_dir: Union[str, Path]) -> List[dict]:
    """All records of a run: a json log file, a timestamped log folder, or a work dir.

    For a work dir holding several logs (a run resumed after an interruption), the logs are joined in
    time order, each cut where the next one's first training iteration starts.
    """
    path = Path(path_or_work_dir)
    if not path.is_dir():
        return _read_lines(path)
    if (path / 'vis_data').is_dir():
        return _read_lines(find_json_log(path))
    logs = sorted(p for p in path.glob('*/vis_data/*.json') if p.name != 'scalars.json')
    if len(logs) <= 1:
        return _read_lines(find_json_log(path))
    merged: List[dict] = []
    for log in logs:
        records = _read_lines(log)
        first = next((r['iter'] for r in records if 'iter' in r), None)
        if first is not None:
            merged = [r for r in merged if 'iter' not in r or r['iter'] < first]
        merged.extend(records)
    return merged


def train_records(records: Sequence[dict]) -> List[dict]:
    """The training lines (those with an ``lr``/``loss`` entry), in order."""
    return [r for r in records if 'loss' in r or 'lr' in r]


def curve(records: Sequence[dict], key: str) -> Tuple[List[int], List[float]]:
    """``(steps, values)`` of ``key`` over the training lines that have it."""
    steps, values = [], []
    for r in train_records(records):
        if key in r:
            steps.append(int(r.get('iter', r.get('step', len(steps)))))
            values.append(float(r[key]))
    return steps, values


def tail_mean(records: Sequence[dict], key: str = 'loss', fraction: float = 0.1) -> Optional[float]:
    """Mean of ``key`` over the last ``fraction`` of its logged points (at least one), or ``None``."""
    if not 0 < fraction <= 1:
        raise ValueError(f'fraction must be in (0, 1], got {fraction!r}')
    _, values = curve(records, key)
    if not values:
        return None
    n = max(1, int(round(len(values) * fraction)))
    return sum(values[-n:]) / n


def median_time(records: Sequence[dict]) -> Optional[float]:
    """Median logged seconds per training iteration, skipping the first (warm-up) line when possible."""
    _, values = curve(records, 'time')
    if len(values) > 1:
        values = values[1:]
    return statistics.median(values) if values else None


OHEM_STAT_NAMES = ('cands', 'nms_supp', 'fg_share', 'mined_rl', 'cand_rl', 'nonfinite', 'badbox')
_OHEM_KEY = re.compile(r'^(ohem(?:_s\d+)?)_(' + '|'.join(OHEM_STAT_NAMES) + r')$')


def ohem_keys(records: Sequence[dict]) -> Dict[str, List[str]]:
    """The OHEM mining-stat keys present, grouped by prefix (``ohem``, ``ohem_s0``, ...).

    A key is ``<prefix>_<name>`` (``ohem_fg_share``, ``ohem_s1_cands``): no '/', so that mmdet's
    ``analyze_logs.py`` reads the json log.
    """
    groups: Dict[str, List[str]] = {}
    for r in train_records(records):
        for k in r:
            m = _OHEM_KEY.match(k)
            if m:
                names = groups.setdefault(m.group(1), [])
                if m.group(2) not in names:
                    names.append(m.group(2))
    return groups
