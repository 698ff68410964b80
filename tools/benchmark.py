#!/usr/bin/env python
"""OHEM's cost per training iteration and in memory (``make bench ARGS='...'``).

Compares, on the same weights and the same fixed synthetic batch, interleaved after warm-up:
mmdet's RandomSampler (baseline), mmdet's built-in OHEM (``MMDetOHEMSampler``), and ours
(``OHEMSampler``) without and with loss-NMS. Prints a markdown report and writes
``results/bench/benchmark.json`` (+ ``.md``). Also times loss-NMS alone on 2,000 and 10,000 boxes.

Examples::

    .venv/bin/python tools/benchmark.py                           # both models, CPU, 320x320
    .venv/bin/python tools/benchmark.py --models r50_fpn --iters 3 --no-memory
    .venv/bin/python tools/benchmark.py --device cuda --size 800 1333 --iters 20
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ohem_experiments.benchmark.cli import main  # noqa: E402

if __name__ == '__main__':
    main()
