"""Benchmark logic behind ``tools/benchmark.py``: OHEM's cost per training iteration and in memory.

* :mod:`.detectors` builds one detector and one fixed synthetic batch, and the sampler variants to compare
  (RandomSampler baseline, mmdet's built-in OHEM, ours with and without loss-NMS).
* :mod:`.timing` times full training iterations (forward, backward, optimiser step) with the variants
  interleaved round-robin on the same weights and inputs, with a breakdown of where OHEM spends time.
* :mod:`.memory` measures the peak memory of a training iteration (CUDA allocator peak, or the peak
  RSS of a fresh process per variant on CPU).
* :mod:`.nms_timing` times loss-NMS alone on synthetic proposal sets.
* :mod:`.report` turns the measurements into a markdown table, target checks and a JSON record.
"""
