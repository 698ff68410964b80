"""Where to mine: OHEM in the R-CNN stage only, in the RPN and the R-CNN stage, or in the RPN only (issue 14).

Every variant is a toy config (``configs/toy/``) trained on the same toy VOC data with the same schedule;
each is run for every seed. Per run: VOC07 mAP on the held-out split and the RPN's proposal recall at 300
proposals (IoU 0.5 and 0.7, mmdet's ``eval_recalls`` matching) on the same split. Per variant: mean and 95%
t interval over the seeds, and the paired difference to R-CNN-only OHEM (same seeds). Finished runs with an
identical config are reused, so the job can be stopped and restarted.

:func:`run_ablation` is what ``tools/rpn_ohem_ablation.py`` calls.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config

from .config_edits import set_data_root, set_iters, set_seed
from .demo import machine_description
from .progress import JobClock, format_seconds
from .runs import RunResult, config_hash, load_finished, train_and_evaluate
from .stats import mean_ci, paired_t_test
from .toy_voc import generate_toy_voc

__all__ = ['Variant', 'VARIANTS', 'AblationSettings', 'proposal_recall', 'run_ablation',
           'summarise', 'summary_markdown', 'RECALL_KEY']

REPO = Path(__file__).resolve().parents[2]
BASELINE = 'rcnn_ohem'


def RECALL_KEY(num: int, iou: float) -> str:  # noqa: N802  (a key builder, used like a constant)
    """Metric name of the proposal recall, e.g. ``rpn/recall@300_iou0.5``."""
    return f'rpn/recall@{num}_iou{iou:g}'


@dataclass(frozen=True)
class Variant:
    """One arm of the ablation: a label, its toy config and a one-line description."""

    name: str
    config: str
    description: str


VARIANTS = (
    Variant(BASELINE, 'configs/toy/toy_ohem.py', 'OHEM in the R-CNN stage only (RPN: RandomSampler 256, 1:1)'),
    Variant('rpn_rcnn_ohem', 'configs/toy/toy_ohem_rpn_ohem.py',
            'OHEM in the RPN (256 hardest anchors/img) and in the R-CNN stage'),
    Variant('rpn_ohem', 'configs/toy/toy_rpn_ohem.py',
            'OHEM in the RPN only (R-CNN: FRCN heuristics, bg_lo 0.1, 1:3)'),
)


@dataclass
class AblationSettings:
    """Options of the ablation (``tools/rpn_ohem_ablation.py`` flags).

    Attributes:
        data_root, work_dir, out_dir: Toy data, run folders (``<work_dir>/<variant>/seed<k>``), summary.
        num_trainval, num_test, image_size, hard_negative_rate, data_seed: Toy data options (as the demo).
        seeds: Training seeds; every variant runs every seed (the issue asks for at least 8).
        iters: Training iterations per run (``None``: the toy configs' 1200).
        variants: Which of :data:`VARIANTS` to run, by name.
        recall_num: Proposals per image for the recall (300: the test-time RPN budget of these configs).
        recall_ious: IoU thresholds of the recall.
        force: Retrain runs that already finished with the same config.
        progress_interval_s: Least seconds between progress lines.
    """

    data_root: str = 'data/toy_voc'
    work_dir: str = 'work_dirs/rpn_ohem_ablation'
    out_dir: str = 'results/rpn_ohem_ablation'
    num_trainval: int = 300
    num_test: int = 100
    image_size: int = 160
    hard_negative_rate: float = 0.3
    data_seed: int = 0
    seeds: Sequence[int] = tuple(range(8))
    iters: Optional[int] = None
    variants: Sequence[str] = tuple(v.name for v in VARIANTS)
    recall_num: int = 300
    recall_ious: Sequence[float] = (0.5, 0.7)
    force: bool = False
    progress_interval_s: float = 15.0


def proposal_recall(model, dataloader, num: int = 300, ious: Sequence[float] = (0.5, 0.7)) -> Dict[str, float]:
    """Recall of the RPN's top-``num`` proposals per image over ``dataloader`` (as mmdet's ``eval_recalls``).

    The proposals are the RPN's test-time output (its ``test_cfg.rpn``: NMS, then at most
    ``max_per_img``), in original image coordinates; gt boxes are the dataset's (difficult/ignored boxes
    are not in ``gt_instances`` and do not count).

    Returns:
        ``{RECALL_KEY(num, iou): recall}`` for each IoU threshold.
    """
    import torch
    from mmdet.evaluation.functional.bbox_overlaps import bbox_overlaps
    from mmdet.evaluation.functional.recall import _recalls
    model = getattr(model, 'module', model)
    was_training = model.training
    model.eval()
    gts, props = [], []
    with torch.no_grad():
        for data_batch in dataloader:
            data = model.data_preprocessor(data_batch, False)
            feats = model.extract_feat(data['inputs'])
            results = model.rpn_head.predict(feats, data['data_samples'], rescale=True)
            for res, sample in zip(results, data['data_samples']):
                top = res.scores.argsort(descending=True)[:num]
                props.append(res.bboxes[top].float().cpu().numpy())
                gts.append(sample.gt_instances.bboxes.float().cpu().numpy().reshape(-1, 4))
    model.train(was_training)
    # mmdet's eval_recalls builds np.array(list of per-image IoU matrices), which numpy >= 1.24 refuses when
    # images have different numbers of gt boxes; the same per-image matrices in an object array go to its
    # matching (_recalls: greedy one-to-one gt-proposal matching) unchanged.
    all_ious = np.empty(len(gts), dtype=object)
    for i, (g, p) in enumerate(zip(gts, props)):
        all_ious[i] = bbox_overlaps(g, p) if len(g) else np.zeros((0, len(p)), dtype=np.float32)
    rec = _recalls(all_ious, np.array([num]), np.array(list(ious), dtype=float))
    return {RECALL_KEY(num, iou): float(rec[0, j]) for j, iou in enumerate(ious)}


def _select(names: Sequence[str]) -> List[Variant]:
    known = {v.name: v for v in VARIANTS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f'unknown ablation variant(s) {unknown or list(names)!r}; choose from {list(known)}')
    return [known[n] for n in names]


def _check(settings: AblationSettings) -> None:
    seeds = list(settings.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ValueError(f'seeds must be distinct non-negative ints, got {seeds!r}')
    if isinstance(settings.recall_num, bool) or not isinstance(settings.recall_num, int) or settings.recall_num <= 0:
        raise ValueError(f'recall_num must be a positive int, got {settings.recall_num!r}')


def build_run_config(variant: Variant, settings: AblationSettings, seed: int) -> Config:
    """The variant's toy config with the ablation's data root, the seed and (optional) iteration count."""
    cfg = Config.fromfile(str(REPO / variant.config))
    set_data_root(cfg, settings.data_root)
    set_seed(cfg, seed)
    if settings.iters is not None:
        set_iters(cfg, settings.iters)
    # the recall needs `recall_num` proposals per image at test time (mAP is unaffected when it is the same)
    cfg.model.test_cfg.rpn.max_per_img = max(int(cfg.model.test_cfg.rpn.max_per_img), settings.recall_num)
    cfg.ablation = dict(recall_num=settings.recall_num, recall_ious=list(settings.recall_ious))
    return cfg


def summarise(runs: Sequence[dict], recall_keys: Sequence[str]) -> List[dict]:
    """Per variant: mean and 95% t interval of mAP and recall, and the paired mAP test against the baseline.

    Args:
        runs: One dict per finished run with ``variant``, ``seed``, ``mAP`` and the ``recall_keys``.
        recall_keys: Recall metric names to summarise.

    Returns:
        One row per variant: ``mAP`` (:class:`~.stats.MeanCI` as a dict), one entry per recall key, and
        for the other variants ``vs_baseline`` (:class:`~.stats.PairedTest` of the per-seed mAP as a dict).
    """
    by: Dict[str, Dict[int, dict]] = {}
    for r in runs:
        by.setdefault(r['variant'], {})[r['seed']] = r
    base = {s: r['mAP'] for s, r in by.get(BASELINE, {}).items()}
    rows = []
    for name, per_seed in by.items():
        maps = {s: r['mAP'] for s, r in per_seed.items()}
        row: Dict[str, Any] = dict(variant=name, seeds=sorted(per_seed), mAP=mean_ci(list(maps.values())).as_dict())
        for k in recall_keys:
            vals = [r[k] for r in per_seed.values() if r.get(k) is not None]
            row[k] = mean_ci(vals).as_dict() if vals else None
        if name != BASELINE and set(maps) & set(base):
            row['vs_baseline'] = paired_t_test(maps, base).as_dict()
        rows.append(row)
    return rows


def _pm(ci: Optional[dict], scale: float = 100.0) -> str:
    if ci is None:
        return 'n/a'
    half = ci.get('half_width')
    return f"{ci['mean'] * scale:.1f}" + ('' if half is None else f' ± {half * scale:.1f}')


def summary_markdown(rows: Sequence[dict], recall_keys: Sequence[str], machine: str, command: str,
                     iters: int) -> str:
    """The ablation table as markdown (values in %, ± the 95% t half-width over seeds)."""
    head = ('| variant | seeds | mAP (VOC07 11-pt, test) | Δ mAP vs R-CNN-only (paired) | p (paired t) | '
            + ' | '.join(f'proposal {k.split("/")[1]}' for k in recall_keys) + ' |')
    lines = [f'Command: `{command}`  ', f'Machine: {machine}  ', f'Iterations per run: {iters}', '', head,
             '|' + '---|' * (5 + len(recall_keys))]
    for r in rows:
        test = r.get('vs_baseline')
        d = _pm(test['ci']) if test else '-'
        p = '-' if not test or test['p_value'] is None else f"{test['p_value']:.3f}"
        rec = ' | '.join(_pm(r[k]) for k in recall_keys)
        lines.append(f"| {r['variant']} | {len(r['seeds'])} | {_pm(r['mAP'])} | {d} | {p} | {rec} |")
    lines += ['', 'Values in %, mean ± half-width of the two-sided 95% Student-t interval over the seeds (none '
              'with one seed). Δ mAP: per-seed difference to R-CNN-only OHEM on the same seed (same data, '
              'same initialisation), with the paired two-sided t-test\'s p. Recall: fraction of test gt boxes '
              'matched by the RPN\'s top-300 test proposals at the IoU named (mmdet eval_recalls\' matching).']
    return '\n'.join(lines) + '\n'


def run_ablation(settings: AblationSettings, command: str = 'tools/rpn_ohem_ablation.py') -> dict:
    """Generates the data, trains and tests every (variant, seed) (skipping finished ones), writes the summary.

    Returns:
        The summary dict also written to ``<out_dir>/summary.json``.
    """
    _check(settings)
    variants = _select(list(settings.variants))
    t0 = time.perf_counter()
    root = generate_toy_voc(settings.data_root, num_trainval=settings.num_trainval, num_test=settings.num_test,
                            image_size=settings.image_size, seed=settings.data_seed,
                            hard_negative_rate=settings.hard_negative_rate)
    data_manifest = json.loads((root / 'toy_voc.json').read_text())
    plans = []
    for v in variants:
        for seed in settings.seeds:
            cfg = build_run_config(v, settings, seed)
            cfg.toy_data_settings = data_manifest['settings']
            plans.append((v, seed, cfg, config_hash(cfg), Path(settings.work_dir) / v.name / f'seed{seed}'))
    todo = [p for p in plans if settings.force or load_finished(p[4], p[3]) is None]
    clock = JobClock(sum(int(p[2].train_cfg.max_iters) for p in todo))
    print(f'[rpn-ablation] {len(variants)} variants x {len(settings.seeds)} seeds = {len(plans)} runs, '
          f'{len(todo)} to train', flush=True)
    recall_keys = [RECALL_KEY(settings.recall_num, iou) for iou in settings.recall_ious]

    def recall(runner) -> Dict[str, float]:
        return proposal_recall(runner.model, runner.test_dataloader, settings.recall_num, settings.recall_ious)

    runs = []
    for i, (v, seed, cfg, digest, work_dir) in enumerate(plans, 1):
        done = None if settings.force else load_finished(work_dir, digest)
        tag = f'[rpn-ablation {i}/{len(plans)}] {v.name} seed {seed}'
        if done is None:
            print(f'{tag}: {v.description} ({cfg.train_cfg.max_iters} iterations)', flush=True)
            done = train_and_evaluate(cfg, work_dir, name=f'{v.name}_s{seed}', clock=clock,
                                      progress_interval_s=settings.progress_interval_s, after_test=recall,
                                      extra=dict(variant=v.name, seed=seed))
        else:
            print(f'{tag}: finished earlier with the same config, reused', flush=True)
        r = _row(done, v, seed, recall_keys)
        print(f'{tag}: mAP {r["mAP"]:.4f}, ' + ', '.join(f'{k} {r[k]:.4f}' for k in recall_keys if r.get(k) is not None),
              flush=True)
        runs.append(r)
    rows = summarise(runs, recall_keys)
    machine = machine_description()
    iters = int(plans[0][2].train_cfg.max_iters)
    md = summary_markdown(rows, recall_keys, machine, command, iters)
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'summary.md').write_text(md)
    summary = dict(command=command, machine=machine, iters=iters, seeds=list(settings.seeds), data=data_manifest,
                   variants=[dict(name=v.name, config=v.config, description=v.description) for v in variants],
                   runs=runs, summary=rows, total_seconds=time.perf_counter() - t0)
    (out / 'summary.json').write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + '\n')
    print('\n' + md, flush=True)
    print(f'[rpn-ablation] wrote {out / "summary.md"} and {out / "summary.json"} '
          f'({format_seconds(summary["total_seconds"])})', flush=True)
    return summary


def _row(result: RunResult, v: Variant, seed: int, recall_keys: Sequence[str]) -> Dict[str, Any]:
    from .json_logs import load_json_log, tail_mean
    row = dict(variant=v.name, seed=seed, mAP=result.map, s_per_iter=result.s_per_iter,
               train_seconds=result.train_seconds, work_dir=result.work_dir)
    row.update({k: result.metrics.get(k) for k in recall_keys})
    log_dir = result.extra.get('log_dir')
    if log_dir:  # the RPN miner's share of foreground anchors, late in training (None without RPN OHEM)
        records = load_json_log(Path(log_dir))
        row['rpn_ohem_fg_share'] = tail_mean(records, 'rpn_ohem_fg_share', 0.1)
    return row
