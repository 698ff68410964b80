"""The main CPU experiment: toy VOC data, then FRCN, FRCN without heuristics and OHEM trained with the
same model, schedule and seed; VOC mAP on the held-out split; a comparison table and loss curves.

:func:`run_demo` is what ``tools/demo.py`` (``make demo``) calls.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config

from .toy_voc import generate_toy_voc, preview
from .config_edits import is_ohem, set_data_root, set_iters, set_seed
from .json_logs import load_json_log
from .progress import JobClock, format_seconds
from .runs import RunResult, config_hash, load_finished, train_and_evaluate

__all__ = ['DemoRun', 'DEMO_RUNS', 'DemoSettings', 'build_run_config', 'run_demo', 'summary_markdown']

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DemoRun:
    """One row of the comparison: a label, its toy config and a one-line description."""

    name: str
    config: str
    description: str


DEMO_RUNS = (
    DemoRun('frcn', 'configs/toy/toy_frcn.py', 'FRCN baseline: bg_lo 0.1, 1:3 fg:bg, 64 random RoIs/img'),
    DemoRun('frcn_noheur', 'configs/toy/toy_frcn_noheur.py',
            'FRCN without heuristics: bg_lo 0, no ratio, 64 uniform RoIs/img'),
    DemoRun('ohem', 'configs/toy/toy_ohem.py', 'OHEM: bg_lo 0, no ratio, 64 hardest RoIs/img, loss-NMS 0.7'),
)


@dataclass
class DemoSettings:
    """Options of the demo (``tools/demo.py`` flags).

    Attributes:
        data_root: Where the toy VOC set goes (``<data_root>/VOC2007``).
        work_dir: Run folders (``<work_dir>/<run>``).
        out_dir: Summary files and plot.
        num_trainval, num_test, image_size, hard_negative_rate, data_seed: Toy data options.
        seed: Training seed (same for every run).
        iters: Training iterations per run (``None``: the configs' own schedule).
        runs: Which of :data:`DEMO_RUNS` to train, by name.
        force: Retrain runs that already finished with the same config.
        progress_interval_s: Least seconds between progress lines.
    """

    data_root: str = 'data/toy_voc'
    work_dir: str = 'work_dirs/demo'
    out_dir: str = 'results/demo'
    num_trainval: int = 300
    num_test: int = 100
    image_size: int = 160
    hard_negative_rate: float = 0.3
    data_seed: int = 0
    seed: int = 0
    iters: Optional[int] = None
    runs: Sequence[str] = tuple(r.name for r in DEMO_RUNS)
    force: bool = False
    progress_interval_s: float = 15.0


def build_run_config(run: DemoRun, settings: DemoSettings) -> Config:
    """The run's toy config with the demo's data root, seed and (optional) iteration count."""
    cfg = Config.fromfile(str(REPO / run.config))
    set_data_root(cfg, settings.data_root)
    set_seed(cfg, settings.seed)
    if settings.iters is not None:
        set_iters(cfg, settings.iters)
    return cfg


def _select_runs(names: Sequence[str]) -> List[DemoRun]:
    known = {r.name: r for r in DEMO_RUNS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f'unknown demo run(s) {unknown or names!r}; choose from {list(known)}')
    return [known[n] for n in names]


def _describe_sampler(cfg: Config) -> Dict[str, object]:
    rcnn = cfg.model.train_cfg.rcnn
    sampler = rcnn.sampler
    neg = rcnn.assigner.neg_iou_thr
    ratio = sampler.get('keep_ratio', False) if is_ohem(cfg) else sampler.type == 'RandomSampler'
    return dict(sampler=sampler.type, bg_lo=neg[0] if isinstance(neg, (list, tuple)) else None,
                ratio=bool(ratio), rois_per_img=sampler.num)


def summary_markdown(rows: Sequence[dict], machine: str, command: str) -> str:
    """The comparison table as markdown (with the command and machine that produced it)."""
    lines = [f'Command: `{command}`  ', f'Machine: {machine}', '',
             '| run | sampler | bg_lo | 1:3 ratio | mAP (VOC07 11-pt, test) | final train loss | '
             'final all-RoI loss/RoI | s/iter | train time |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        m = 'n/a' if r['mAP'] is None else f"{r['mAP']:.4f}"
        loss = 'n/a' if r['final_loss'] is None else f"{r['final_loss']:.4f}"
        allroi = 'n/a' if r.get('final_allroi_loss') is None else f"{r['final_allroi_loss']:.4f}"
        spi = 'n/a' if r['s_per_iter'] is None else f"{r['s_per_iter']:.3f}"
        lines.append(f"| {r['run']} | {r['sampler']} | {r['bg_lo']} | {'yes' if r['ratio'] else 'no'} | {m} | "
                     f"{loss} | {allroi} | {spi} | {format_seconds(r['train_seconds'])} |")
    lines += ['', 'final train loss: mean logged total loss (RPN + RoI head, on the RoIs each method trained '
              'on) over the last 10% of logged iterations. final all-RoI loss/RoI: mean cls+box loss per RoI '
              'over all proposals + gt boxes of the training batch (fg IoU >= 0.5, all else bg), measured the '
              'same way for every run (the paper\'s Figure 3 measure), last 10% of logged points. s/iter: '
              'median logged iteration time (includes the all-RoI probe every logging step).']
    return '\n'.join(lines) + '\n'


def machine_description() -> str:
    """``'<cpu>, N cores, no GPU'`` style text for the summary."""
    import os

    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    gpu = 'CUDA GPU' if torch.cuda.is_available() else 'no GPU'
    return f'{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__} ({torch.get_num_threads()} threads)'


def run_demo(settings: DemoSettings, command: str = 'tools/demo.py') -> dict:
    """Generates the data, trains and tests each run (skipping finished ones), writes the summary.

    Returns:
        The summary dict also written to ``<out_dir>/summary.json``.
    """
    runs = _select_runs(list(settings.runs))
    t0 = time.perf_counter()
    print(f'[demo] toy VOC data -> {settings.data_root} ({settings.num_trainval} trainval / '
          f'{settings.num_test} test, {settings.image_size} px, hard-negative rate {settings.hard_negative_rate})',
          flush=True)
    root = generate_toy_voc(settings.data_root, num_trainval=settings.num_trainval, num_test=settings.num_test,
                            image_size=settings.image_size, seed=settings.data_seed,
                            hard_negative_rate=settings.hard_negative_rate)
    data_manifest = json.loads((root / 'toy_voc.json').read_text())
    plans = []
    for run in runs:
        cfg = build_run_config(run, settings)
        cfg.toy_data_settings = data_manifest['settings']  # new data -> new hash -> runs are retrained
        plans.append((run, cfg, config_hash(cfg)))
    todo = [p for p in plans if settings.force or load_finished(Path(settings.work_dir) / p[0].name, p[2]) is None]
    clock = JobClock(sum(int(cfg.train_cfg.max_iters) for _, cfg, _ in todo))
    results: Dict[str, RunResult] = {}
    trained: List[str] = []
    for i, (run, cfg, digest) in enumerate(plans, 1):
        work_dir = Path(settings.work_dir) / run.name
        done = None if settings.force else load_finished(work_dir, digest)
        if done is not None:
            print(f'[demo {i}/{len(plans)}] {run.name}: finished earlier with the same config, reused '
                  f'(mAP {done.map:.4f}); --force retrains', flush=True)
            results[run.name] = done
            continue
        print(f'[demo {i}/{len(plans)}] {run.name}: {run.description} ({cfg.train_cfg.max_iters} iterations)',
              flush=True)
        results[run.name] = train_and_evaluate(cfg, work_dir, name=run.name, clock=clock,
                                               progress_interval_s=settings.progress_interval_s)
        trained.append(run.name)
        r = results[run.name]
        print(f'[demo {i}/{len(plans)}] {run.name}: mAP {r.map:.4f}, train {format_seconds(r.train_seconds)}, '
              f'test {format_seconds(r.test_seconds)}', flush=True)
    rows = []
    for run, cfg, _ in plans:
        r = results[run.name]
        rows.append(dict(run=run.name, description=run.description, config=run.config, **_describe_sampler(cfg),
                         mAP=r.map, final_loss=r.final_loss, final_allroi_loss=r.final_allroi_loss,
                         s_per_iter=r.s_per_iter,
                         train_seconds=r.train_seconds, test_seconds=r.test_seconds, iters=r.iters,
                         work_dir=r.work_dir, metrics=r.metrics))
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    md = summary_markdown(rows, machine, command)
    (out / 'summary.md').write_text(md)
    from .plots import plot_loss_curves
    curves = {run.name: load_json_log(Path(results[run.name].extra.get('log_dir') or results[run.name].work_dir))
              for run, _, _ in plans}
    samples_png = preview(root, out / 'toy_voc_samples.png')
    png = plot_loss_curves(curves, out / 'loss_curves.png', smooth=5,
                           title=f'toy VOC, {plans[0][1].train_cfg.max_iters} iterations, seed {settings.seed}')
    runs_seconds = sum(r['train_seconds'] + r['test_seconds'] for r in rows)
    summary = dict(command=command, machine=machine, seed=settings.seed, data=data_manifest, runs=rows,
                   total_seconds=time.perf_counter() - t0, runs_train_test_seconds=runs_seconds,
                   reused_runs=[run.name for run, _, _ in plans if run.name not in trained], plot=str(png),
                   samples=str(samples_png))
    (out / 'summary.json').write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + '\n')
    print('\n' + md, flush=True)
    print(f'[demo] wrote {out / "summary.md"}, {out / "summary.json"}, {png}, {samples_png}\n'
          f'[demo] this call: {format_seconds(summary["total_seconds"])}; training + testing of the three runs: '
          f'{format_seconds(runs_seconds)}' + (f' (reused: {", ".join(summary["reused_runs"])})'
                                                 if summary['reused_runs'] else ''), flush=True)
    return summary
