"""Ablation sweeps: a grid of named axes over any base config, one work dir per cell, restartable.

Axes (see :mod:`.config_edits`): ``N`` (images/batch), ``B`` (RoIs/batch), ``bg_lo``, ``ohem`` (on/off),
``ratio`` (1:3 fg:bg on/off), ``nms`` (loss-NMS IoU, ``None`` = off), ``ranking_loss``, ``seed``,
``iters``, ``lr_mult``, ``multiscale`` ("M") and ``iter_bbox`` ("B"). ``nms`` and ``ranking_loss`` only
mean something for OHEM cells: in cells where OHEM is off they are dropped (shown as ``n/a``) and cells
that become identical are run once. With ``workers > 1`` the cells run in parallel worker processes
(:mod:`.parallel`); the paper's Table 1 over seeds is the preset in :mod:`.table1`.
"""
from __future__ import annotations

import copy
import csv
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from mmengine.config import Config

from .config_edits import AXIS_ORDER, EDITS, OHEM_ONLY, is_ohem
from .parallel import Job, prepare_work_dir, run_jobs
from .runs import RunResult, config_hash, load_finished, train_and_evaluate

__all__ = ['Cell', 'expand_grid', 'apply_cell', 'parse_axis_values', 'run_sweep', 'write_results_table',
           'CellOutcome']

NA = 'n/a'  # value of an OHEM-only axis in a cell where OHEM is off


def _value_text(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return {True: 'on', False: 'off', None: 'none'}[v]
    if isinstance(v, (int, float)):
        return f'{v:g}'
    return re.sub(r'[^A-Za-z0-9.]+', '', str(v).replace('+', 'p'))


@dataclass(frozen=True)
class Cell:
    """One grid point: axis name -> value (:data:`NA` for an OHEM-only axis where OHEM is off)."""

    values: tuple  # ((axis, value), ...) in AXIS_ORDER

    @property
    def as_dict(self) -> Dict[str, Any]:
        return dict(self.values)

    @property
    def name(self) -> str:
        """A file-system-safe, readable name such as ``ohem-on__nms-0.7``."""
        parts = [f'{axis}-{_value_text(v)}' for axis, v in self.values if not (isinstance(v, str) and v == NA)]
        return '__'.join(parts) or 'base'


def _check_grid(grid: Mapping[str, Sequence[Any]]) -> None:
    unknown = [a for a in grid if a not in EDITS]
    if unknown:
        raise ValueError(f'unknown sweep axis/axes {unknown}; known: {list(AXIS_ORDER)}')
    for axis, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f'axis {axis!r} needs a non-empty list of values, got {values!r}')


def expand_grid(grid: Mapping[str, Sequence[Any]], base_is_ohem: bool) -> List[Cell]:
    """The cells of ``grid`` (cartesian product), with OHEM-only axes set to :data:`NA` where OHEM is off
    and duplicates removed (first occurrence kept, product order otherwise).

    Args:
        grid: Axis name -> values.
        base_is_ohem: Whether the base config's sampler is ``OHEMSampler`` (decides cells without an
            ``ohem`` axis).

    Raises:
        ValueError: If an axis is unknown or has no values.
    """
    _check_grid(grid)
    axes = [a for a in AXIS_ORDER if a in grid]
    cells, seen = [], set()
    for combo in itertools.product(*(list(grid[a]) for a in axes)):
        values = dict(zip(axes, combo))
        if not values.get('ohem', base_is_ohem):
            for a in OHEM_ONLY:
                if a in values:
                    values[a] = NA
        cell = Cell(tuple((a, values[a]) for a in axes))
        if cell not in seen:
            seen.add(cell)
            cells.append(cell)
    return cells


def apply_cell(base: Config, cell: Cell) -> Config:
    """A copy of ``base`` with the cell's edits applied in :data:`AXIS_ORDER`."""
    cfg = copy.deepcopy(base)
    for axis, value in cell.values:
        if isinstance(value, str) and value == NA:
            continue
        EDITS[axis](cfg, value)
    return cfg


_LITERALS = {'on': True, 'true': True, 'off': False, 'false': False, 'none': None}


def parse_axis_values(text: str) -> tuple:
    """``'bg_lo=0,0.1'`` -> ``('bg_lo', [0.0, 0.1])``; ``on/off/true/false/none`` and numbers parsed.

    Raises:
        ValueError: If ``text`` is not ``axis=v1,v2,...``.
    """
    axis, sep, rest = text.partition('=')
    if not sep or not axis.strip() or not rest.strip():
        raise ValueError(f'expected AXIS=V1,V2,... got {text!r}')
    values = []
    for raw in rest.split(','):
        raw = raw.strip()
        if raw.lower() in _LITERALS:
            values.append(_LITERALS[raw.lower()])
            continue
        for conv in (int, float):
            try:
                values.append(conv(raw))
                break
            except ValueError:
                continue
        else:
            values.append(raw)
    return axis.strip(), values


@dataclass
class CellOutcome:
    """A cell and its result (``skipped`` when an earlier finished run was reused)."""

    cell: Cell
    result: RunResult
    skipped: bool


TrainFn = Callable[..., RunResult]


def run_sweep(base: Config, grid: Mapping[str, Sequence[Any]], out_dir: Union[str, Path],
              train_fn: TrainFn = train_and_evaluate, resume_partial: bool = True,
              log: Callable[[str], None] = print, workers: int = 1, threads: int = 1) -> List[CellOutcome]:
    """Runs every cell not finished yet, then writes ``results.md``, ``results.csv`` and ``results.png``.

    Args:
        base: Base config (toy or real VOC).
        grid: Axis name -> values.
        out_dir: Sweep folder; cell ``c`` works in ``out_dir/cells/<c.name>``.
        train_fn: ``train_fn(cfg, work_dir, name=..., clock=..., extra=...) -> RunResult``
            (:func:`train_and_evaluate`; tests pass a fake).
        resume_partial: Continue an interrupted cell from its last checkpoint (mmengine ``resume``).
        log: Where progress lines go.
        workers: With more than one, the cells run in that many worker processes at a time
            (:func:`~ohem_experiments.parallel.run_jobs`; ``train_fn`` is then not used).
        threads: torch threads per worker process.

    Returns:
        One :class:`CellOutcome` per cell, in grid order.

    Raises:
        RuntimeError: With ``workers > 1``, if a cell's worker ended without a result (after the others ran).
    """
    from .progress import JobClock
    out_dir = Path(out_dir)
    cells = expand_grid(grid, is_ohem(base))
    plans = []
    for cell in cells:
        cfg = apply_cell(base, cell)
        plans.append((cell, cfg, config_hash(cfg)))
    todo_iters = sum(int(cfg.train_cfg.get('max_iters', 0)) for cell, cfg, h in plans
                     if load_finished(out_dir / 'cells' / cell.name, h) is None)
    if workers > 1:
        jobs = [Job(cell.name, cfg, digest, out_dir / 'cells' / cell.name, dict(axes=dict(cell.values)))
                for cell, cfg, digest in plans]
        already = {j.name for j in jobs if load_finished(j.work_dir, j.digest) is not None}
        results, failures = run_jobs(jobs, workers=workers, threads=threads, log=log)
        if failures:
            raise RuntimeError(f'{len(failures)} cell(s) failed: '
                               + ', '.join(f'{f.job.name} (log {f.log})' for f in failures))
        outcomes = [CellOutcome(cell, results[cell.name], cell.name in already) for cell, _, _ in plans]
        write_results_table(outcomes, out_dir, ohem_flags=[is_ohem(cfg) for _, cfg, _ in plans])
        return outcomes
    clock = JobClock(todo_iters)
    outcomes = []
    for i, (cell, cfg, digest) in enumerate(plans, 1):
        work_dir = out_dir / 'cells' / cell.name
        done = load_finished(work_dir, digest)
        if done is not None:
            log(f'[sweep {i}/{len(plans)}] {cell.name}: finished earlier, skipped (mAP {done.map})')
            outcomes.append(CellOutcome(cell, done, True))
            continue
        log(f'[sweep {i}/{len(plans)}] {cell.name}: training')
        prepare_work_dir(work_dir, digest)
        if resume_partial:
            cfg.resume = True
        result = train_fn(cfg, work_dir, name=cell.name, clock=clock,
                          extra=dict(axes={a: v for a, v in cell.values}))
        outcomes.append(CellOutcome(cell, result, False))
    write_results_table(outcomes, out_dir, ohem_flags=[is_ohem(cfg) for _, cfg, _ in plans])
    return outcomes


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return 'n/a'
    if isinstance(v, bool):
        return 'on' if v else 'off'
    if isinstance(v, float):
        return f'{v:.{digits}f}'
    return str(v)


def write_results_table(outcomes: Sequence[CellOutcome], out_dir: Union[str, Path], chart: bool = True,
                        ohem_flags: Optional[Sequence[bool]] = None) -> Dict[str, Path]:
    """Writes ``results.md`` / ``results.csv`` (one row per cell) and ``results.png`` (mAP per cell).

    Args:
        outcomes: The cells and their results.
        out_dir: Where the files go.
        chart: Also draw ``results.png``.
        ohem_flags: Per cell, whether it trained with OHEM (bar colour); default: its ``ohem`` axis value.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = [a for a in AXIS_ORDER if any(a in o.cell.as_dict for o in outcomes)]
    header = ['cell'] + axes + ['mAP', 'final_loss', 's_per_iter', 'train_s']
    rows = []
    for o in outcomes:
        r = o.result
        rows.append([o.cell.name] + [o.cell.as_dict.get(a) for a in axes]
                    + [r.map, r.final_loss, r.s_per_iter, r.train_seconds])
    paths = {'csv': out_dir / 'results.csv', 'md': out_dir / 'results.md'}
    with paths['csv'].open('w', newline='') as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([['' if v is None else v for v in row] for row in rows])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        cells = [_fmt(v, 4 if i < len(header) - 2 else 2) for i, v in enumerate(row)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    paths['md'].write_text('\n'.join(lines) + '\n')
    if chart and outcomes:
        from .plots import plot_sweep_bars
        paths['png'] = plot_sweep_bars([o.cell.name for o in outcomes], [o.result.map for o in outcomes],
                                       list(ohem_flags) if ohem_flags is not None
                                       else [bool(o.cell.as_dict.get('ohem', False)) for o in outcomes],
                                       out_dir / 'results.png')
    return paths

