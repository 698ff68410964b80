"""Experiment tooling beside the plugin (not installed with it; ``tools/`` scripts and the tests import it).

* :mod:`.toy_voc` - the deterministic toy VOC2007-format data generator;
* :mod:`.demo` - the CPU demo (``make demo``); :mod:`.sweep` - ablation sweeps; :mod:`.runs` - one
  training + evaluation run with its result on disk; :mod:`.config_edits` - the sweep's config knobs;
* :mod:`.json_logs` - mmengine json-log reading; :mod:`.plots` - loss curves and sweep charts;
  :mod:`.progress` - progress and ETA; :mod:`.all_roi_probe` - the all-RoI loss hook (paper Fig. 3);
* :mod:`.quick_detectors` - small mmdet detectors and synthetic batches for tests and benchmarks;
  :mod:`.toy_vgg` - VGG16 narrowed for CPU runs;
* :mod:`.parallel`, :mod:`.worker` - parallel, restartable runs; :mod:`.table1`, :mod:`.stats` - the
  Table 1 preset with error bars (95% t-intervals, paired tests);
* :mod:`.benchmark` - the logic behind ``tools/benchmark.py``.
"""
from .config_edits import AXIS_ORDER, EDITS, set_data_root, set_iters
from .json_logs import load_json_log
from .runs import RunResult, config_hash, load_finished, train_and_evaluate
from .sweep import Cell, apply_cell, expand_grid, run_sweep

__all__ = ['AXIS_ORDER', 'EDITS', 'set_data_root', 'set_iters', 'load_json_log', 'RunResult', 'config_hash',
           'load_finished', 'train_and_evaluate', 'Cell', 'apply_cell', 'expand_grid', 'run_sweep']
