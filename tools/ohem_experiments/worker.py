"""Worker process of :mod:`ohem_experiments.parallel`: ``python -m ohem_experiments.worker JOB.pkl``.

Loads the pickled job (config as a plain dict, work dir, name, thread count), imports the config's
``custom_imports``, and trains + tests it with :func:`~ohem_experiments.runs.train_and_evaluate`,
resuming from the last checkpoint in the work dir if there is one. Jobs whose ``extra`` asks for
``proposal_recall`` also get the RPN's proposal recall (:mod:`.proposal_recall`) added to their metrics.
Jobs whose ``extra`` names ``weights_from`` (a finished run's folder) train nothing: they test the config
with that run's weights (:func:`~ohem_experiments.runs.evaluate_trained`).
"""
from __future__ import annotations

import pickle
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the job file named in ``argv``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print('usage: python -m ohem_experiments.worker JOB.pkl', file=sys.stderr)
        return 2
    with open(argv[0], 'rb') as f:
        job = pickle.load(f)
    import torch
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings

    from .runs import config_hash, evaluate_trained, train_and_evaluate
    torch.set_num_threads(int(job['threads']))
    cfg = Config(job['cfg'])
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])
    if config_hash(cfg) != job['digest']:
        print(f"worker: config hash {config_hash(cfg)} differs from the planned {job['digest']}", file=sys.stderr)
        return 3
    cfg.resume = True
    after_test = None
    if job['extra'].get('proposal_recall'):  # presets that also measure the RPN's proposal recall
        from .proposal_recall import proposal_recall
        recall = job['extra']['proposal_recall']

        def after_test(runner):
            return proposal_recall(runner.model, runner.test_dataloader, recall['num'], recall['ious'])

    if job['extra'].get('weights_from'):
        result = evaluate_trained(cfg, job['work_dir'], job['extra']['weights_from'], name=job['name'],
                                  extra=job['extra'], after_test=after_test)
    else:
        result = train_and_evaluate(cfg, job['work_dir'], name=job['name'], extra=job['extra'], after_test=after_test)
    print(f"worker: {job['name']} finished, mAP {result.map}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
