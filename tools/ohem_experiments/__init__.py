"""Experiment tooling: the CPU demo (:mod:`.demo`), ablation sweeps (:mod:`.sweep`), config knobs
(:mod:`.config_edits`), runs with results on disk (:mod:`.runs`), parallel restartable runs
(:mod:`.parallel`), the Table 1 preset with error bars (:mod:`.table1`, :mod:`.stats`), json-log reading
(:mod:`.json_logs`) and plots (:mod:`.plots`). Not imported by ``mmdet_ohem`` itself (it needs
matplotlib only when plotting)."""
from .config_edits import AXIS_ORDER, EDITS, set_data_root, set_iters
from .json_logs import load_json_log
from .runs import RunResult, config_hash, load_finished, train_and_evaluate
from .sweep import Cell, apply_cell, expand_grid, run_sweep

__all__ = ['AXIS_ORDER', 'EDITS', 'set_data_root', 'set_iters', 'load_json_log', 'RunResult', 'config_hash',
           'load_finished', 'train_and_evaluate', 'Cell', 'apply_cell', 'expand_grid', 'run_sweep']
