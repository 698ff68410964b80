"""torch >= 2.6 loads mmengine checkpoints again once mmdet_ohem is imported, without weights_only=False."""
import os
import pickle
import pickletools
import subprocess
import sys

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

import mmdet_ohem  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels, mode='tensor'):
        out = self.linear(inputs)
        return {'loss': ((out - labels) ** 2).mean()} if mode == 'loss' else out


def _data():
    g = torch.Generator().manual_seed(0)
    return [dict(inputs=torch.randn(2, generator=g), labels=torch.randn(1, generator=g)) for _ in range(8)]


def _runner(work_dir, max_iters, **kw):
    return Runner(
        model=ToyModel(), work_dir=str(work_dir), experiment_name=f'exp{max_iters}_{kw.get("resume", 0)}',
        train_dataloader=dict(dataset=_data(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[2, 3], by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmengine', **kw)


def _globals_in(path):
    """Every GLOBAL the checkpoint's pickle stream references."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith('data.pkl')))
    return {arg for op, arg, _ in pickletools.genops(data) if op.name in ('GLOBAL', 'STACK_GLOBAL') and arg}


def test_runner_checkpoint_resumes_with_weights_only(tmp_path):
    first = _runner(tmp_path, max_iters=2)
    first.train()
    ckpt = tmp_path / 'iter_2.pth'
    assert ckpt.is_file()
    # The real Runner checkpoint holds MessageHub state with HistoryBuffers, and no getattr.
    raw = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert raw['message_hub']['log_scalars']['train/loss'].data[0].size == 2
    assert not any('getattr' in g for g in _globals_in(ckpt))

    resumed = _runner(tmp_path, max_iters=4, resume=True, load_from=str(ckpt))
    resumed.train()
    assert resumed.iter == 4
    hub = resumed.message_hub
    # The loss history from before the restart is still there (restored from the checkpoint).
    assert hub.get_scalar('train/loss').data[1].sum() >= 4
    assert torch.allclose(resumed.model.linear.weight, torch.load(
        tmp_path / 'iter_4.pth', weights_only=True)['state_dict']['linear.weight'])


def test_load_from_works_with_weights_only(tmp_path):
    _runner(tmp_path, max_iters=2).train()
    runner = _runner(tmp_path, max_iters=1, load_from=str(tmp_path / 'iter_2.pth'))
    runner.load_or_resume()
    want = torch.load(tmp_path / 'iter_2.pth', weights_only=True)['state_dict']['linear.weight']
    assert torch.equal(runner.model.linear.weight, want)


class _Evil:
    def __reduce__(self):
        return (os.system, ('echo pwned',))


def test_weights_only_still_refuses_code(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert getattr not in torch.serialization.get_safe_globals()


def test_upgrade_tool_fixes_checkpoints_written_without_the_plugin(tmp_path):
    # A checkpoint saved by a process that did not import mmdet_ohem contains builtins.getattr.
    script = (
        'import torch\n'
        'from mmengine.logging import MessageHub\n'
        'hub = MessageHub.get_instance("x")\n'
        'hub.update_scalar("train/loss", 1.0)\n'
        f'torch.save({{"message_hub": hub.state_dict(), "state_dict": {{}}}}, {str(tmp_path / "old.pth")!r})\n')
    subprocess.run([sys.executable, '-c', script], check=True, cwd=tmp_path)
    old = tmp_path / 'old.pth'
    assert any('getattr' in g for g in _globals_in(old))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(old, weights_only=True)
    tool = os.path.join(ROOT, 'tools', 'upgrade_checkpoint.py')
    refused = subprocess.run([sys.executable, tool, str(old)], capture_output=True, text=True)
    assert refused.returncode != 0 and '--trust' in refused.stderr
    subprocess.run([sys.executable, tool, str(old), '--trust'], check=True, capture_output=True)
    loaded = torch.load(old, weights_only=True)
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 1.0
