"""The paper's Table 1 (and its M / B rows) at toy scale, over many training seeds, with error bars.

A *preset* names the rows: each row is a toy config plus sweep edits (:data:`~.config_edits.EDITS`), and
pairs say which OHEM row is compared with which FRCN row. :func:`plan_jobs` makes one run per (row, seed),
:func:`~.parallel.run_jobs` runs them in parallel and restartably, and :func:`write_table` aggregates the
results into three files:

* ``table.md``: per row the mean mAP with a 95% t confidence interval over seeds, then the paired
  OHEM-vs-FRCN tests (mean difference, its 95% CI, t, two-sided p, seeds won);
* ``table.json``: the same numbers plus every run's raw result (row, seed, mAP, losses, timing, hash);
* ``table.png``: per row each seed's mAP (dots) and the mean with its 95% CI.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from mmengine.config import Config

from .config_edits import AXIS_ORDER, EDITS, is_ohem, set_data_root
from .parallel import Job
from .runs import RunResult, config_hash
from .stats import mean_ci, paired_t_test

__all__ = ['Row', 'Preset', 'PRESETS', 'TEST_TIME_AXES', 'parse_seeds', 'plan_jobs', 'write_table', 'TABLE_FILES']

TABLE_FILES = ('table.md', 'table.json', 'table.png')
#: Edits that change only how a trained model is tested; a row may reuse the weights of a row that differs
#: from it only in these (:attr:`Row.weights_from`).
TEST_TIME_AXES = frozenset({'iter_bbox'})


@dataclass(frozen=True)
class Row:
    """One table row: a base config plus named edits (axis -> value, as in sweeps).

    Attributes:
        key: Short id (folder names, pairs).
        label: What the row is, in the paper's terms.
        config: Base config path (relative to the repository root).
        edits: ``((axis, value), ...)`` applied in :data:`~.config_edits.AXIS_ORDER`.
        weights_from: Key of a row whose trained weights this row tests instead of training its own: for
            rows that differ from it only at test time (:data:`TEST_TIME_AXES`, e.g. "B"), as the paper
            applies B to the network it trained. The pair is then also exactly paired on the weights.
    """

    key: str
    label: str
    config: str
    edits: Tuple[Tuple[str, Any], ...] = ()
    weights_from: Optional[str] = None


@dataclass(frozen=True)
class Preset:
    """A named set of rows and the paired comparisons ``(ohem_row, frcn_row)`` to test.

    Attributes:
        recall: ``(num, ious)``: also measure the RPN's proposal recall at ``num`` proposals per image and
            these IoUs on the test split after each run (:mod:`.proposal_recall`); ``None``: do not.
        pair_names: What the two rows of a pair are called in ``table.md`` (``'OHEM'``, ``'FRCN'``).
        title: Title of ``table.png``.
    """

    name: str
    rows: Tuple[Row, ...]
    pairs: Tuple[Tuple[str, str], ...]
    recall: Optional[Tuple[int, Tuple[float, ...]]] = None
    pair_names: Tuple[str, str] = ('OHEM', 'FRCN')
    title: str = 'Table 1 at toy scale'

    def row(self, key: str) -> Row:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(f'preset {self.name!r} has no row {key!r}; rows: {[r.key for r in self.rows]}')

    def __post_init__(self) -> None:
        keys = [r.key for r in self.rows]
        for r in self.rows:
            if r.weights_from is None:
                continue
            src = self.row(r.weights_from)
            if keys.index(src.key) > keys.index(r.key) or src.weights_from is not None:
                raise ValueError(f'row {r.key!r}: weights_from={src.key!r} must name an earlier row that trains')
            train = {k: v for k, v in r.edits if k not in TEST_TIME_AXES}
            src_train = {k: v for k, v in src.edits if k not in TEST_TIME_AXES}
            if r.config != src.config or train != src_train:
                raise ValueError(f'row {r.key!r} trains differently from {src.key!r} ({r.config} {train} vs '
                                 f'{src.config} {src_train}), so it cannot test its weights; only '
                                 f'{sorted(TEST_TIME_AXES)} may differ')


_FRCN, _OHEM = 'configs/toy/toy_frcn.py', 'configs/toy/toy_ohem.py'
TABLE1_TOY = Preset(
    name='table1',
    rows=(
        Row('frcn', 'FRCN (bg_lo 0.1, 1:3)', _FRCN),
        Row('frcn_bglo0', 'FRCN, bg_lo 0 with 1:3', _FRCN, (('bg_lo', 0.0),)),
        Row('frcn_noratio', 'FRCN, bg_lo 0.1 without ratio', _FRCN, (('ratio', False),)),
        Row('frcn_neither', 'FRCN, neither heuristic (bg_lo 0, no ratio)', _FRCN,
            (('bg_lo', 0.0), ('ratio', False))),
        Row('frcn_n1', 'FRCN, N = 1 (B = 128 from one image)', _FRCN, (('N', 1), ('B', 128))),
        Row('allrois', 'All RoIs (B = 2048, N = 2, bg_lo 0, no ratio, lr x3)', _FRCN,
            (('B', 2048), ('bg_lo', 0.0), ('ratio', False), ('lr_mult', 3.0))),
        Row('ohem', 'OHEM (bg_lo 0, no ratio, loss-NMS 0.7)', _OHEM),
        Row('ohem_n1', 'OHEM, N = 1 (B = 128 from one image)', _OHEM, (('N', 1), ('B', 128))),
        Row('ohem_nonms', 'OHEM without loss-NMS', _OHEM, (('nms', None),)),
        Row('frcn_m', 'FRCN + M (multi-scale train and test)', _FRCN, (('multiscale', True),)),
        Row('ohem_m', 'OHEM + M', _OHEM, (('multiscale', True),)),
        Row('frcn_b', 'FRCN + B (iterative box regression + voting)', _FRCN, (('iter_bbox', True),), 'frcn'),
        Row('ohem_b', 'OHEM + B', _OHEM, (('iter_bbox', True),), 'ohem'),
        Row('frcn_mb', 'FRCN + M + B', _FRCN, (('multiscale', True), ('iter_bbox', True)), 'frcn_m'),
        Row('ohem_mb', 'OHEM + M + B', _OHEM, (('multiscale', True), ('iter_bbox', True)), 'ohem_m'),
    ),
    pairs=(('ohem', 'frcn'), ('ohem', 'frcn_neither'), ('ohem', 'frcn_bglo0'), ('ohem', 'allrois'),
           ('ohem_n1', 'frcn_n1'), ('ohem_nonms', 'frcn'), ('ohem_m', 'frcn_m'), ('ohem_b', 'frcn_b'),
           ('ohem_mb', 'frcn_mb')))
# Issue 14: where to mine. Not a paper table (the paper mines RoIs only). Pairs: each RPN-mining row minus
# R-CNN-only OHEM, same seeds; plus the RPN's proposal recall at 300 (the toy configs' test-time budget).
RPN_OHEM_TOY = Preset(
    name='rpn_ohem',
    rows=(
        Row('rcnn_ohem', 'OHEM in the R-CNN stage only (RPN: RandomSampler 256, 1:1)', _OHEM),
        Row('rpn_rcnn_ohem', 'OHEM in the RPN (256 hardest anchors/img) and the R-CNN stage',
            'configs/toy/toy_ohem_rpn_ohem.py'),
        Row('rpn_ohem', 'OHEM in the RPN only (R-CNN: FRCN bg_lo 0.1, 1:3)', 'configs/toy/toy_rpn_ohem.py'),
    ),
    pairs=(('rpn_rcnn_ohem', 'rcnn_ohem'), ('rpn_ohem', 'rcnn_ohem')),
    recall=(300, (0.5, 0.7)),
    pair_names=('RPN-mining', 'R-CNN-only'),
    title='Where to mine (toy scale; red: RPN mining)')
PRESETS: Dict[str, Preset] = {p.name: p for p in (TABLE1_TOY, RPN_OHEM_TOY)}


def parse_seeds(text: str) -> List[int]:
    """``'0-7'`` -> ``[0, ..., 7]``; ``'0,3,5'`` and mixes like ``'0-3,8'`` work too.

    Raises:
        ValueError: On anything else, or a negative or repeated seed.
    """
    seeds: List[int] = []
    try:
        for part in str(text).split(','):
            lo, sep, hi = part.strip().partition('-')
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise ValueError(f"seeds must look like '0-7' or '0,1,5', got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f'seeds must be distinct non-negative ints, got {text!r} -> {seeds}')
    return seeds


def _row_config(row: Row, seed: int, iters: Optional[int], base_cache: Dict[str, Config],
                root: Path, data_root: Optional[str]) -> Config:
    if row.config not in base_cache:
        base = Config.fromfile(str(root / row.config))
        if data_root:
            set_data_root(base, data_root)
        base_cache[row.config] = base
    cfg = copy.deepcopy(base_cache[row.config])
    values = dict(row.edits, seed=seed)
    if iters is not None:
        values['iters'] = iters
    unknown = [a for a in values if a not in EDITS]
    if unknown:
        raise ValueError(f'row {row.key!r}: unknown edit(s) {unknown}; known: {list(AXIS_ORDER)}')
    for axis in AXIS_ORDER:
        if axis in values:
            EDITS[axis](cfg, values[axis])
    return cfg


def plan_jobs(preset: Preset, seeds: Sequence[int], out_dir: Union[str, Path], rows: Optional[Sequence[str]] = None,
              iters: Optional[int] = None, data_root: Optional[str] = None,
              root: Union[str, Path] = '.') -> List[Job]:
    """One :class:`~.parallel.Job` per (row, seed), working in ``out_dir/cells/<row>__seed-<s>``.

    Jobs come seed by seed (all rows of seed 0, then of seed 1, ...), so that a sweep stopped part-way
    has every row for the seeds it finished and the paired tests use them all.

    Args:
        preset: The rows.
        seeds: Training seeds (``randomness.seed``; the toy data stay those of the data folder).
        out_dir: Sweep folder.
        rows: Row keys to run (default: all), in preset order; a row that tests another row's weights
            (:attr:`Row.weights_from`) brings that row's runs in too (skipped if they finished earlier).
        iters: Training iterations per run (default: the configs' own, 1200 for the toy configs).
        data_root: Dataset folder for every dataloader (default: the configs' ``data/toy_voc/``).
        root: Repository root the row config paths are relative to.

    Raises:
        KeyError: If a row key is unknown. ValueError: If an edit does not apply to its config.
    """
    keys = [r.key for r in preset.rows] if rows is None else list(rows)
    for k in list(keys):
        src = preset.row(k).weights_from
        if src is not None and src not in keys:
            keys.append(src)  # the run whose weights it tests (skipped if it finished earlier)
    cache: Dict[str, Config] = {}
    jobs = []
    # Seed-major: a sweep cut off part-way (--stop-starting-after) leaves whole seeds, i.e. complete pairs.
    for seed in seeds:
        planned: Dict[str, Job] = {}
        for row in preset.rows:
            if row.key not in keys:
                continue
            cfg = _row_config(row, seed, iters, cache, Path(root), data_root)
            name = f'{row.key}__seed-{seed}'
            extra = dict(row=row.key, seed=seed, ohem=is_ohem(cfg))
            if preset.recall is not None:
                extra['proposal_recall'] = dict(num=preset.recall[0], ious=list(preset.recall[1]))
            after: Tuple[str, ...] = ()
            if row.weights_from is not None:
                src = planned[row.weights_from]
                # In the config (so in its hash): a retrained source means this row is tested again.
                cfg['weights_from'] = dict(row=row.weights_from, config_hash=src.digest)
                extra['weights_from'] = str(src.work_dir)
                after = (src.name,)
            job = Job(name, cfg, config_hash(cfg), Path(out_dir) / 'cells' / name, extra, after)
            planned[row.key] = job
            jobs.append(job)
    return jobs


def _pct(v: Optional[float]) -> str:
    return 'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{100 * v:.1f}'


def write_table(preset: Preset, jobs: Sequence[Job], results: Mapping[str, RunResult], out_dir: Union[str, Path],
                command: str = '', chart: bool = True, conf: float = 0.95) -> Dict[str, Path]:
    """Aggregates finished runs into ``table.md``, ``table.json`` and ``table.png`` in ``out_dir``.

    Rows with no finished run are listed as missing; a pair is tested over the seeds both rows have.
    mAP values are VOC07 11-point mAP on the toy test split, shown in percent.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, per_row, per_row_recall = [], {}, {}
    for job in jobs:
        res = results.get(job.name)
        row, seed = job.extra['row'], job.extra['seed']
        if res is None or res.map is None:
            continue
        per_row.setdefault(row, {})[seed] = res.map
        recall = {k: v for k, v in res.metrics.items() if k.startswith('rpn/recall@')}
        for k, v in recall.items():
            per_row_recall.setdefault(row, {}).setdefault(k, []).append(v)
        runs.append(dict(row=row, seed=seed, name=job.name, mAP=res.map, **recall, final_loss=res.final_loss,
                         final_allroi_loss=res.final_allroi_loss, s_per_iter=res.s_per_iter,
                         train_seconds=res.train_seconds, test_seconds=res.test_seconds, iters=res.iters,
                         config_hash=res.config_hash, work_dir=res.work_dir,
                         weights_from=res.extra.get('weights_from')))
    planned: Dict[str, List[int]] = {}
    for job in jobs:
        planned.setdefault(job.extra['row'], []).append(job.extra['seed'])
    row_stats = []
    for row in preset.rows:
        if row.key not in planned:
            continue
        vals = per_row.get(row.key, {})
        ci = mean_ci(list(vals.values()), conf).as_dict() if vals else None
        row_stats.append(dict(key=row.key, label=row.label, config=row.config, edits=dict(row.edits),
                              seeds=sorted(vals), planned_seeds=sorted(planned[row.key]), stats=ci,
                              recall={k: mean_ci(v, conf).as_dict()
                                      for k, v in sorted(per_row_recall.get(row.key, {}).items())}))
    pair_stats = []
    for a, b in preset.pairs:
        if a in per_row and b in per_row and set(per_row[a]) & set(per_row[b]):
            pair_stats.append(dict(ohem=a, frcn=b, test=paired_t_test(per_row[a], per_row[b], conf).as_dict()))
    data = dict(preset=preset.name, metric='pascal_voc/mAP (VOC07 11-point, toy test split)', conf=conf,
                command=command, rows=row_stats, pairs=pair_stats, runs=runs, pair_names=list(preset.pair_names))
    paths = {'json': out_dir / 'table.json', 'md': out_dir / 'table.md'}
    paths['json'].write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + '\n')
    paths['md'].write_text(_markdown(data))
    if chart and runs:
        paths['png'] = _chart(row_stats, per_row, out_dir / 'table.png', conf, preset.title)
    return paths


def _markdown(data: dict) -> str:
    pc = int(round(100 * data['conf']))
    lines = [f"Preset `{data['preset']}`; {data['metric']}, in %; mean over training seeds with a {pc}% "
             f't confidence interval.', '']
    if data['command']:
        lines += ['```bash', data['command'], '```', '']
    lines += [f'| row | config + edits | seeds | mean mAP | {pc}% CI | sd |', '|---|---|---|---|---|---|']
    for r in data['rows']:
        s = r['stats']
        edits = ', '.join(f'{k}={v}' for k, v in r['edits'].items()) or '-'
        cfg = f"`{Path(r['config']).name}` {edits}"
        seeds = f"{len(r['seeds'])}/{len(r['planned_seeds'])}"
        if s is None:
            lines.append(f"| {r['label']} | {cfg} | {seeds} | n/a | n/a | n/a |")
            continue
        ci = 'n/a' if s['low'] is None else f"[{_pct(s['low'])}, {_pct(s['high'])}]"
        lines.append(f"| {r['label']} | {cfg} | {seeds} | {_pct(s['mean'])} | {ci} | {_pct(s['sd'])} |")
    a, b = data.get('pair_names') or ('OHEM', 'FRCN')
    lines += ['', f'Paired over seeds ({a} row minus {b} row, mAP points; two-sided paired t-test):', '',
              f'| {a} row | {b} row | pairs | mean diff | {pc}% CI | t | p | {a} better / worse |',
              '|---|---|---|---|---|---|---|---|']
    for p in data['pairs']:
        t = p['test']
        ci = t['ci']
        ci_txt = 'n/a' if ci['low'] is None else f"[{_pct(ci['low'])}, {_pct(ci['high'])}]"
        t_txt = 'n/a' if t['t'] is None else format(t['t'], '.2f')
        p_txt = 'n/a' if t['p_value'] is None else format(t['p_value'], '.3g')
        lines.append(f"| {p['ohem']} | {p['frcn']} | {t['n']} | {_pct(t['mean_diff'])} | {ci_txt} | {t_txt} | "
                     f"{p_txt} | {t['wins']} / {t['losses']} |")
    recall_keys = sorted({k for r in data['rows'] for k in r.get('recall') or {}})
    if recall_keys:
        lines += ['', f"The RPN's proposal recall on the test split, in %, mean over seeds [{pc}% CI] (rows whose "
                  'runs measured it):', '',
                  '| row | ' + ' | '.join(recall_keys) + ' |', '|---|' + '---|' * len(recall_keys)]
        for r in data['rows']:
            if not r.get('recall'):
                continue  # runs of a preset that does not measure recall
            cells = []
            for k in recall_keys:
                s = (r.get('recall') or {}).get(k)
                ci = '' if s is None or s['low'] is None else f" [{_pct(s['low'])}, {_pct(s['high'])}]"
                cells.append('n/a' if s is None else f"{_pct(s['mean'])}{ci}")
            lines.append(f"| {r['label']} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _chart(row_stats: Sequence[dict], per_row: Mapping[str, Mapping[int, float]], out_png: Path, conf: float,
           title: str = 'Table 1 at toy scale') -> Path:
    from .plots import _pyplot
    plt = _pyplot()
    rows = [r for r in row_stats if r['stats'] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.4))
    for y, r in enumerate(rows):
        colour = 'C3' if r['key'].startswith(('ohem', 'rpn')) else 'C0'
        vals = [100 * v for v in per_row[r['key']].values()]
        ax.scatter(vals, [y] * len(vals), s=12, color=colour, alpha=0.45, zorder=2)
        s = r['stats']
        err = None if s['half_width'] is None else [[100 * s['half_width']], [100 * s['half_width']]]
        ax.errorbar([100 * s['mean']], [y], xerr=err, fmt='D', color=colour, capsize=4, zorder=3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r['label'] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f'mAP % (dots: seeds; diamond: mean, bar: {int(round(100 * conf))}% CI)')
    ax.set_title(title if title != 'Table 1 at toy scale' else 'Table 1 at toy scale (red: OHEM)')
    ax.grid(axis='x', alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
