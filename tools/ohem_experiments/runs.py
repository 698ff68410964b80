"""One experiment run: train a config with mmengine's ``Runner`` in-process, test it, and record results.

A finished run leaves ``<work_dir>/result.json`` (metrics, final loss, timing, the config's hash);
:func:`load_finished` recognises it so that sweeps and the demo can skip work already done.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

from mmengine.config import Config

from .json_logs import load_json_log, median_time, tail_mean
from .progress import JobClock, ProgressHook

__all__ = ['RunResult', 'config_hash', 'load_finished', 'train_and_evaluate', 'evaluate_trained', 'trained_checkpoint',
           'test_with_tta', 'RESULT_FILE']

RESULT_FILE = 'result.json'
MAP_KEY = 'pascal_voc/mAP'
HASH_IGNORED = ('work_dir', 'experiment_name', 'log_level', 'resume')


@dataclass
class RunResult:
    """What one run produced.

    Attributes:
        name: Run label.
        work_dir: Where its logs, checkpoint and ``result.json`` are.
        config_hash: :func:`config_hash` of the config it ran.
        metrics: Test metrics (``pascal_voc/mAP`` etc.).
        final_loss: Mean logged total training loss over the last 10% of logged iterations.
        s_per_iter: Median logged seconds per training iteration (first log line skipped).
        train_seconds: Wall-clock seconds of ``runner.train()``.
        test_seconds: Wall-clock seconds of ``runner.test()``.
        iters: Training iterations.
        extra: Anything else (e.g. sweep axis values).
        final_allroi_loss: Mean loss per RoI over all RoIs (``allroi_mean_rl``, the same measure for
            every sampler) over the last 10% of its logged points; ``None`` without the probe.
    """

    name: str
    work_dir: str
    config_hash: str
    metrics: Dict[str, float]
    final_loss: Optional[float]
    s_per_iter: Optional[float]
    train_seconds: float
    test_seconds: float
    iters: int
    extra: Dict[str, Any] = field(default_factory=dict)
    final_allroi_loss: Optional[float] = None

    @property
    def map(self) -> Optional[float]:
        """VOC mAP on the test split (``None`` if missing)."""
        return self.metrics.get(MAP_KEY)

    def save(self) -> Path:
        path = Path(self.work_dir) / RESULT_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + '\n')
        return path


def config_hash(cfg: Union[Config, dict]) -> str:
    """A stable hash of a config's content (what decides whether a finished run can be reused).

    Keys that do not change what is trained (:data:`HASH_IGNORED`: output folder, run name, log level,
    resuming) are left out.
    """
    d = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    d = {k: v for k, v in d.items() if k not in HASH_IGNORED}
    blob = json.dumps(d, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_finished(work_dir: Union[str, Path], cfg_hash: Optional[str] = None) -> Optional[RunResult]:
    """The run's :class:`RunResult` if ``work_dir`` holds a finished run (of ``cfg_hash``, if given)."""
    path = Path(work_dir) / RESULT_FILE
    try:
        data = json.loads(path.read_text())
        result = RunResult(**data)
    except (OSError, ValueError, TypeError):
        return None
    if cfg_hash is not None and result.config_hash != cfg_hash:
        return None
    return result


def _floats(metrics: Dict[str, Any]) -> Dict[str, float]:
    out = {}
    for k, v in (metrics or {}).items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _run_config(cfg: Config, work_dir: Path, name: Optional[str], quiet: bool) -> Tuple[Config, str, str]:
    """A copy of ``cfg`` set up to run in ``work_dir`` (created), its hash, and the run's name."""
    work_dir.mkdir(parents=True, exist_ok=True)
    name = name or work_dir.name
    cfg = copy.deepcopy(cfg)
    digest = config_hash(cfg)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'{name}_{digest}_{time.strftime("%Y%m%d_%H%M%S")}'
    if quiet:
        cfg.log_level = 'WARNING'
    if cfg.get('visualizer') is not None:  # mmengine keeps one instance per name per process
        cfg.visualizer['name'] = f'visualizer_{cfg.experiment_name}'
    return cfg, digest, name


def train_and_evaluate(cfg: Config, work_dir: Union[str, Path], name: Optional[str] = None,
                       clock: Optional[JobClock] = None, progress_interval_s: float = 15.0,
                       quiet: bool = True, probe: bool = True,
                       extra: Optional[Dict[str, Any]] = None,
                       after_test: Optional[Callable[[Any], Dict[str, float]]] = None) -> RunResult:
    """Trains ``cfg`` for its schedule, tests it on its ``test_dataloader``, writes ``result.json``.

    A config with ``test_with_tta = True`` (the multi-scale "M" configs and sweep cells) is tested through
    its ``tta_model``/``tta_pipeline`` (:func:`test_with_tta`), as ``tools/test.py --tta`` would.

    Args:
        cfg: A complete mmdet config (its ``randomness.seed`` decides the run's seed).
        work_dir: Output folder (created).
        name: Label for progress lines and the result (default: the folder's name).
        clock: Optional :class:`JobClock` shared by several runs for a job-wide ETA.
        progress_interval_s: Least seconds between progress lines.
        quiet: Set mmengine's log level to WARNING (the json log is still written; our progress hook
            prints the progress instead of mmengine's long config dump and per-iteration lines).
        probe: Log the all-RoI mean loss (:class:`~ohem_experiments.all_roi_probe.AllRoILossHook`) at every
            logging step, so that runs with different samplers have a comparable loss curve.
        extra: Extra fields stored in the result (besides ``log_dir`` and ``device``, where it trained).
        after_test: Optional ``f(runner) -> metrics``, called after ``runner.test()`` with the trained model;
            its metrics are added to the result's (e.g. the RPN's proposal recall).

    Returns:
        The :class:`RunResult` (also saved to ``work_dir/result.json``).
    """
    from mmengine.runner import Runner

    cfg, digest, name = _run_config(cfg, Path(work_dir), name, quiet)
    if cfg.get('resume') and not cfg.get('load_from'):  # an interrupted run (sweeps): as tools/train.py --resume
        from mmdet_ohem.reliability import auto_resume_fallback
        cfg.load_from = auto_resume_fallback(cfg.work_dir)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(ProgressHook(name, interval_s=progress_interval_s, clock=clock))
    if probe:
        from .all_roi_probe import AllRoILossHook
        interval = int(((cfg.get('default_hooks') or {}).get('logger') or {}).get('interval', 50))
        runner.register_hook(AllRoILossHook(interval))
    t0 = time.perf_counter()
    runner.train()
    t1 = time.perf_counter()
    metrics = test_with_tta(runner, cfg) if cfg.get('test_with_tta') else runner.test()
    t2 = time.perf_counter()
    if after_test is not None:
        metrics = dict(metrics, **after_test(runner))
    records = load_json_log(Path(runner.log_dir))
    result = RunResult(name=name, work_dir=str(work_dir), config_hash=digest, metrics=_floats(metrics),
                       final_loss=tail_mean(records, 'loss', 0.1), s_per_iter=median_time(records),
                       train_seconds=t1 - t0, test_seconds=t2 - t1, iters=int(runner.max_iters),
                       extra=dict(extra or {}, log_dir=str(runner.log_dir), device=_model_device(runner.model)),
                       final_allroi_loss=tail_mean(records, 'allroi_mean_rl', 0.1))
    result.save()
    _close_file_handlers(runner)
    return result


def _model_device(model) -> str:
    """Where the run trained: ``'cpu'``, or ``'cuda:0 (NVIDIA H100 80GB HBM3)'`` (mmengine's Runner picks it)."""
    import torch
    param = next(model.parameters(), None)
    if param is None or param.device.type != 'cuda':
        return 'cpu' if param is None else str(param.device)
    return f'{param.device} ({torch.cuda.get_device_name(param.device)})'


def trained_checkpoint(source_dir: Union[str, Path]) -> Path:
    """The final checkpoint of the finished run in ``source_dir``.

    The run's ``result.json`` names the folder it trained in (a sweep cell may hold only the result of a
    run made elsewhere, e.g. an identical row of another preset); its ``last_checkpoint`` names the file.

    Raises:
        FileNotFoundError: If ``source_dir`` holds no finished run, or its checkpoint is gone (cells
            restored from a results archive keep only ``result.json``).
    """
    return _finished_checkpoint(source_dir)[1]


def _finished_checkpoint(source_dir: Union[str, Path]) -> Tuple[RunResult, Path]:
    """:func:`trained_checkpoint` with the run's :class:`RunResult` (``result.json`` read once)."""
    source_dir = Path(source_dir)
    source = load_finished(source_dir)
    if source is None:
        raise FileNotFoundError(f'{source_dir} holds no finished run ({RESULT_FILE})')
    for folder in dict.fromkeys((Path(source.work_dir), source_dir)):
        marker = folder / 'last_checkpoint'
        if marker.is_file():
            ckpt = folder / Path(marker.read_text().strip()).name
            if ckpt.is_file():
                return source, ckpt
    raise FileNotFoundError(f'the run in {source_dir} ({source.name}) left no checkpoint in {source.work_dir} '
                            f'or {source_dir}; delete its {RESULT_FILE} to train it again')


def evaluate_trained(cfg: Config, work_dir: Union[str, Path], source_dir: Union[str, Path],
                     name: Optional[str] = None, quiet: bool = True, extra: Optional[Dict[str, Any]] = None,
                     after_test: Optional[Callable[[Any], Dict[str, float]]] = None) -> RunResult:
    """Tests ``cfg`` with the weights another finished run trained, and writes ``result.json``.

    For rows that differ from their source row only at test time (``iter_bbox``, the paper's "B"): the
    paper applies B to the same trained network, so the row evaluates that network instead of training
    an identical one again. The weights load strictly (the two models must have the same parameters).
    The result's training fields (final loss, time per iteration, iterations) are the source run's, and
    ``extra['weights_from']`` names it.

    Raises:
        FileNotFoundError: See :func:`trained_checkpoint`.
    """
    from mmengine.runner import Runner

    source, ckpt = _finished_checkpoint(source_dir)
    cfg, digest, name = _run_config(cfg, Path(work_dir), name, quiet)
    cfg.load_from, cfg.resume = None, False
    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(str(ckpt), map_location='cpu', strict=True)
    t0 = time.perf_counter()
    metrics = test_with_tta(runner, cfg) if cfg.get('test_with_tta') else runner.test()
    t1 = time.perf_counter()
    if after_test is not None:
        metrics = dict(metrics, **after_test(runner))
    result = RunResult(name=name, work_dir=cfg.work_dir, config_hash=digest, metrics=_floats(metrics),
                       final_loss=source.final_loss, s_per_iter=source.s_per_iter,
                       train_seconds=source.train_seconds, test_seconds=t1 - t0, iters=source.iters,
                       extra=dict(extra or {}, log_dir=str(runner.log_dir), weights_from=source.name,
                                  checkpoint=str(ckpt)),
                       final_allroi_loss=source.final_allroi_loss)
    result.save()
    _close_file_handlers(runner)
    return result


def test_with_tta(runner, cfg: Config) -> Dict[str, Any]:
    """Tests ``runner``'s trained model the way ``tools/test.py --tta`` does: ``cfg.tta_model``
    (``DetTTAModel``) wraps the model and the test set goes through ``cfg.tta_pipeline``.

    Raises:
        ValueError: If ``cfg`` has no ``tta_model`` or ``tta_pipeline``.
    """
    from mmdet.registry import MODELS
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner
    if cfg.get('tta_model') is None or cfg.get('tta_pipeline') is None:
        raise ValueError('test_with_tta=True needs tta_model and tta_pipeline in the config')
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    tta = MODELS.build(dict(copy.deepcopy(cfg.tta_model), module=model))
    loader = copy.deepcopy(cfg.test_dataloader)
    ds = loader['dataset']
    while isinstance(ds.get('dataset'), dict):
        ds = ds['dataset']
    ds['pipeline'] = copy.deepcopy(cfg.tta_pipeline)
    name = f'{runner.experiment_name}_tta'
    tester = Runner(model=tta, work_dir=str(runner.work_dir), test_dataloader=loader,
                    test_evaluator=copy.deepcopy(cfg.test_evaluator), test_cfg=copy.deepcopy(cfg.test_cfg),
                    default_scope=cfg.get('default_scope', 'mmdet'), log_level=cfg.get('log_level', 'INFO'),
                    env_cfg=copy.deepcopy(cfg.get('env_cfg', dict(dist_cfg=dict(backend='nccl')))),
                    visualizer=dict(type='Visualizer', name=f'visualizer_{name}'), experiment_name=name)
    try:
        return tester.test()
    finally:
        _close_file_handlers(tester)


def _close_file_handlers(runner) -> None:
    """Closes the run's log-file handlers (several runs share one process)."""
    logger = getattr(runner, 'logger', None)
    for h in list(getattr(logger, 'handlers', [])):
        if isinstance(h, logging.FileHandler):
            h.close()
            logger.removeHandler(h)
