"""The plugin boundary: what ``import mmdet_ohem`` changes, what the wheel ships, ``mmdet_ohem::`` bases."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: snapshots every mmengine/mmdet registry (name -> object) and mmengine's
# checkpoint loaders, imports the given modules, and reports which existing entries changed and which
# names are new.
_SNAPSHOT = r'''
import json, sys, warnings
warnings.filterwarnings('ignore')
import mmengine.registry as er
import mmdet.registry as dr
from mmdet.utils import register_all_modules
from mmengine.runner import CheckpointLoader
register_all_modules()
import mmdet.models.task_modules.samplers, mmdet.datasets, mmengine.optim  # noqa

def snap():
    out = {}
    for mod in (er, dr):
        for attr in dir(mod):
            reg = getattr(mod, attr)
            if isinstance(reg, er.Registry):
                for name, obj in reg.module_dict.items():
                    out[f'{mod.__name__}.{attr}:{name}'] = id(obj)
    for prefix, fn in CheckpointLoader._schemes.items():
        out[f'CheckpointLoader:{prefix!r}'] = id(fn)
    return out

before = snap()
for m in sys.argv[1:]:
    __import__(m)
after = snap()
new = sorted(k for k in after if k not in before)
# a new name in a child registry (mmdet's) that a parent registry (mmengine's) already has shadows it
shadowing = sorted(k for k in new if k.startswith('mmdet.registry.')
                   and k.replace('mmdet.registry.', 'mmengine.registry.', 1) in before)
print(json.dumps({'changed': sorted(k for k in before if before[k] != after.get(k)), 'new': new,
                  'shadowing': shadowing}))
'''


def _registry_diff(*modules: str) -> dict:
    proc = subprocess.run([sys.executable, '-c', _SNAPSHOT, *modules], capture_output=True, text=True,
                          timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_takes_over_exactly_one_existing_name():
    diff = _registry_diff('mmdet_ohem')
    assert diff['changed'] == ['mmdet.registry.TASK_UTILS:OHEMSampler']
    assert diff['shadowing'] == []
    new = {k.split(':', 1)[1] for k in diff['new']}
    assert new == {'LossNMS', 'UniformSampler', 'MMDetOHEMSampler', 'RPNOHEMSampler', 'OHEMRPNHead', 'VGG16',
                   'FRCNBBoxHead', 'VGG16Pretrained', 'VGGM', 'VGGMBBoxHead', 'VGGMPretrained',
                   'IterBBoxRegRoIHead'}  # the list in README's "What the import changes"
    # the opt-in extras are not registered by the plugin import
    assert not new & {'CheckedVOCDataset', 'RNGStateHook', 'WeightsDigestHook'}


def test_reliability_extras_are_opt_in_under_their_own_names():
    diff = _registry_diff('mmdet_ohem', 'mmdet_ohem.reliability')
    new = {k.split(':', 1)[1] for k in diff['new']}
    assert {'CheckedVOCDataset', 'RNGStateHook', 'WeightsDigestHook'} <= new
    changed = set(diff['changed'])
    assert 'mmdet.registry.DATASETS:VOCDataset' not in changed  # mmdet's VOCDataset stays mmdet's
    # What the explicit import does take over, as documented in docs/reliability.md: the checked local
    # checkpoint loader, and --amp on CPU (an AmpOptimWrapper in mmdet's registry that shadows mmengine's;
    # with a GPU it is mmengine's class unchanged).
    assert changed == {'mmdet.registry.TASK_UTILS:OHEMSampler', "CheckpointLoader:''"}
    assert diff['shadowing'] == ['mmdet.registry.OPTIM_WRAPPERS:AmpOptimWrapper']


def _user_config(tmp_path: Path) -> Path:
    cfg = tmp_path / 'my_ohem.py'
    cfg.write_text("_base_ = 'mmdet_ohem::ohem/faster_rcnn_vgg16_ohem_voc07.py'\n"
                   "model = dict(train_cfg=dict(rcnn=dict(sampler=dict(num=32))))\n")
    return cfg


_LOAD = ('import sys, warnings; warnings.filterwarnings("ignore"); import mmdet_ohem; '
         'from mmengine.config import Config; c = Config.fromfile(sys.argv[1]); '
         'print(mmdet_ohem.__file__, c.model.train_cfg.rcnn.sampler.type, c.model.train_cfg.rcnn.sampler.num, '
         'c.model.backbone.type)')


def test_package_config_prefix_resolves_from_the_repository(tmp_path: Path):
    proc = subprocess.run([sys.executable, '-c', _LOAD, str(_user_config(tmp_path))], capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[1:] == ['OHEMSampler', '32', 'VGG16']


@pytest.mark.slow
def test_wheel_ships_the_configs_and_the_prefix_resolves_when_installed(tmp_path: Path):
    # Build from a copy of the files git tracks or would track (a stale build/ folder in the checkout could
    # otherwise leak files that no longer exist into the wheel).
    src = tmp_path / 'src'
    listed = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=str(ROOT),
                            capture_output=True, check=True).stdout.decode().split('\0')
    for rel in filter(None, listed):
        if not os.path.lexists(ROOT / rel):
            continue  # deleted in the working tree
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst, follow_symlinks=False)
    wheels = tmp_path / 'wheels'
    build = subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(src), '--no-deps', '--no-build-isolation',
                            '-q', '-w', str(wheels)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel, ) = wheels.glob('mmdet_ohem-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'mmdet_ohem/.mim/configs/ohem/faster_rcnn_vgg16_ohem_voc07.py' in names
    assert 'mmdet_ohem/.mim/configs/_base_/models/faster_rcnn_vgg16.py' in names
    assert 'mmdet_ohem/.mim/model-index.yml' in names
    assert not [n for n in names if n.startswith(('ohem_experiments', 'tools/', 'tests/'))]
    target = tmp_path / 'site'
    inst = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]
    env = dict(os.environ, PYTHONPATH=str(target))
    proc = subprocess.run([sys.executable, '-c', _LOAD, str(_user_config(tmp_path))], capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed_from, *rest = proc.stdout.split()
    assert installed_from.startswith(str(target))  # the wheel's copy, not the repository's
    assert rest == ['OHEMSampler', '32', 'VGG16']
