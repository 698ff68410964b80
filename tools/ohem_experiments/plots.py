"""Charts: training-loss curves of several runs (the paper's Figure 3 shape), OHEM mining stats, and
sweep results. Matplotlib with the non-interactive ``Agg`` backend; every function writes a PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from .json_logs import curve, ohem_keys

__all__ = ['plot_loss_curves', 'plot_sweep_bars', 'moving_average']

# Loss-like keys worth a panel, in order, when present in the logs.
LOSS_KEYS = ('allroi_mean_rl', 'loss', 'loss_cls')
TITLES = {'allroi_mean_rl': 'mean loss per RoI over all RoIs\n(same measure for every run; paper Fig. 3)',
          'loss': 'logged training loss\n(RPN + RoI head, on each run\'s own RoIs)',
          'loss_cls': 'logged RoI cls loss\n(on each run\'s own RoIs)'}
OHEM_STAT_KEYS = ('fg_share', 'cand_rl', 'mined_rl')


def moving_average(values: Sequence[float], window: int) -> List[float]:
    """Trailing moving average (the first points average what exists so far)."""
    if window <= 1:
        return list(values)
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_loss_curves(runs: Mapping[str, Sequence[dict]], out_png: Union[str, Path],
                     keys: Sequence[str] = LOSS_KEYS, smooth: int = 5, title: Optional[str] = None,
                     with_ohem_stats: bool = True) -> Path:
    """One panel per loss key (all runs overlaid), plus OHEM mining-stat panels where logged.

    Args:
        runs: Run label -> its json-log records (:func:`ohem_experiments.json_logs.load_json_log`).
        out_png: Output file.
        keys: Loss keys to plot (missing ones are skipped).
        smooth: Moving-average window over logged points (1 = raw).
        title: Figure title.
        with_ohem_stats: Add panels for ``ohem*_fg_share`` and ``ohem*_{cand,mined}_rl``.

    Raises:
        ValueError: If no run has any of ``keys``.
    """
    plt = _pyplot()
    panels: List[tuple] = [(k, 'loss') for k in keys if any(curve(r, k)[1] for r in runs.values())]
    if not panels:
        raise ValueError(f'none of the keys {list(keys)} appear in the logs of runs {list(runs)}')
    stat_panels: Dict[str, List[tuple]] = {}
    if with_ohem_stats:
        for label, records in runs.items():
            for prefix, names in ohem_keys(records).items():
                if 'fg_share' in names:
                    stat_panels.setdefault('fg_share', []).append((f'{label} mined', f'{prefix}_fg_share', label))
                    if any(curve(records, 'allroi_fg_share')[1]):
                        stat_panels['fg_share'].append((f'{label} all RoIs', 'allroi_fg_share', label))
                for n in ('cand_rl', 'mined_rl'):
                    if n in names:
                        stat_panels.setdefault('ranking loss per RoI', []).append(
                            (f'{label} {n}', f'{prefix}_{n}', label))
    n = len(panels) + len(stat_panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    axes = axes[0]
    colors = {label: f'C{i}' for i, label in enumerate(runs)}
    for ax, (key, _) in zip(axes, panels):
        for label, records in runs.items():
            steps, values = curve(records, key)
            if values:
                ax.plot(steps, moving_average(values, smooth), label=label, color=colors[label])
        ax.set_title(TITLES.get(key, f'training {key}'), fontsize=9)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax, (name, series) in zip(axes[len(panels):], stat_panels.items()):
        for entry in series:
            label, key = entry[0], entry[1]
            run = entry[2] if len(entry) > 2 else entry[0]
            steps, values = curve(runs[run], key)
            style = '--' if key.endswith('cand_rl') or key.startswith('allroi') else '-'
            ax.plot(steps, moving_average(values, smooth), style, label=label, color=colors[run])
        ax.set_title('OHEM: foreground share\n(mined RoIs vs all RoIs)' if name == 'fg_share'
                     else 'OHEM: mean ranking loss per RoI\n(mined vs all candidates)', fontsize=9)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_sweep_bars(names: Sequence[str], maps: Sequence[Optional[float]], ohem: Sequence[bool],
                    out_png: Union[str, Path], title: str = 'VOC mAP per sweep cell') -> Path:
    """Horizontal bars of mAP per cell (OHEM cells in one colour, the rest in another)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    ys = list(range(len(names)))
    vals = [m if m is not None else 0.0 for m in maps]
    ax.barh(ys, vals, color=['C3' if o else 'C0' for o in ohem])
    for y, m in zip(ys, maps):
        ax.text((m or 0.0) + 0.005, y, 'n/a' if m is None else f'{m:.3f}', va='center', fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel('mAP (VOC, test split)')
    ax.set_title(title + ' (red: OHEM)')
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
