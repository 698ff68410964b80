"""Train a detector: mmdet 3.3's ``tools/train.py``, same flags, plus ``mmdet_ohem``.

Copied from mmdet 3.3.0 (Apache-2.0, Copyright (c) OpenMMLab) so that users' habits and scripts carry
over unchanged. The changes: it imports ``mmdet_ohem`` itself (registering ``OHEMSampler``,
``LossNMS``, ``UniformSampler``, ``VGG16``, ``FRCNBBoxHead``, ``VGG16Pretrained`` and the torch>=2.6
checkpoint allow-list), so configs work even without ``custom_imports``, and ``mmdet_ohem.reliability``
(CPU gloo for ``--launcher pytorch`` without a GPU; ``--resume`` without a file falls back to the newest
intact checkpoint where ``last_checkpoint`` was left empty or stale by a run killed while saving; the
process group destroyed before exit, where a gloo run could otherwise abort after training finished).
"""
import argparse
import os
import os.path as osp
import sys
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmdet.utils import setup_cache_size_limit_of_dynamo

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repo root, if not installed
import mmdet_ohem  # noqa: E402,F401  (registers the plugin before any config is built)
import mmdet_ohem.reliability  # noqa: E402,F401  (the project's opt-in extras: CPU --amp, checked checkpoints, CPU gloo)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # When using PyTorch version >= 2.0.0, the `torch.distributed.launch`
    # will pass the `--local-rank` parameter to `tools/train.py` instead
    # of `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)

    return args


def main():
    args = parse_args()

    # Reduce the number of repeated compilations and improve
    # training speed.
    setup_cache_size_limit_of_dynamo()

    # load config
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # gloo instead of nccl, and no torch.cuda.set_device, on CPU-only machines (no-op with CUDA).
    mmdet_ohem.reliability.prepare_cpu_distributed(cfg, args.launcher)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        # update configs according to CLI args if args.work_dir is not None
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        # use config filename as default work_dir if cfg.work_dir is None
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    # enable automatic-mixed-precision training
    if args.amp is True:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    # enable automatically scaling LR
    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and \
                'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')

    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        # None: mmengine's own auto-resume (last_checkpoint); a path where that file was left unusable
        cfg.load_from = mmdet_ohem.reliability.auto_resume_fallback(cfg.work_dir)
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # build the runner from config
    if 'runner_type' not in cfg:
        # build the default runner
        runner = Runner.from_cfg(cfg)
    else:
        # build customized runner from the registry
        # if 'runner_type' is set in the cfg
        runner = RUNNERS.build(cfg)

    # start training
    runner.train()

    # Destroy the process group while Python is alive (gloo's threads could abort the exit otherwise);
    # the runner goes first: its DDP wrapper holds the group.
    del runner
    mmdet_ohem.reliability.shutdown_distributed()


if __name__ == '__main__':
    main()
