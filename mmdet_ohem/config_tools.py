"""Config edits shared by tools, sweeps, benchmarks and tests.

Every function edits an mmengine ``Config``/``ConfigDict`` (or a plain dict) in place and returns it,
so that calls chain. They walk the model dict generically, so they work for standard, shared-head
(C4), cascade (list of stage train configs) and double-head detectors alike.
"""
from __future__ import annotations

from typing import Any, Iterator, MutableMapping

__all__ = ['config_path', 'rcnn_train_cfgs', 'set_rcnn_sampler', 'use_roi_align', 'drop_pretrained', 'add_custom_import']


def config_path(name: str) -> str:
    """Resolves a config name to a file path.

    ``Config.fromfile`` does not understand ``pkg::`` names (only ``_base_`` inheritance does), so this maps
    ``'mmdet::faster_rcnn/x.py'`` (or a bare path under mmdet's configs, when no such file exists locally)
    to the copy shipped inside the installed package (``<pkg>/.mim/configs/...``).

    Raises:
        FileNotFoundError: If neither a local file nor a shipped config of that name exists.
    """
    import importlib
    import os
    if os.path.isfile(name):
        return name
    pkg, _, rel = name.rpartition('::')
    pkg = pkg or 'mmdet'
    shipped = os.path.join(os.path.dirname(importlib.import_module(pkg).__file__), '.mim', 'configs', rel)
    if os.path.isfile(shipped):
        return shipped
    raise FileNotFoundError(f'config {name!r} is neither a file nor a config shipped with {pkg} ({shipped})')


def rcnn_train_cfgs(cfg: MutableMapping) -> list:
    """The R-CNN train config(s) of ``cfg.model``: one per cascade stage, else a one-element list.

    Raises:
        KeyError: If the model has no ``train_cfg.rcnn`` (not a two-stage detector).
    """
    model = cfg['model'] if 'model' in cfg else cfg
    train_cfg = model.get('train_cfg') or {}
    rcnn = train_cfg.get('rcnn')
    if rcnn is None:
        raise KeyError(f"model type {model.get('type')!r} has no train_cfg.rcnn: OHEM needs a two-stage "
                       'detector with an RoI head')
    return list(rcnn) if isinstance(rcnn, (list, tuple)) else [rcnn]


def set_rcnn_sampler(cfg: MutableMapping, type: str = 'OHEMSampler', keep: bool = True,
                     **settings: Any) -> MutableMapping:
    """Sets the sampler of every R-CNN stage.

    Args:
        cfg: Full config (with ``model``) or a model dict.
        type: Sampler type to register, e.g. ``'OHEMSampler'``, ``'RandomSampler'``.
        keep: Keep the stage's existing sampler keys (``num``, ``pos_fraction``, ...) and override only
            ``type`` and ``settings`` (the usual "change the type alone" edit). With ``keep=False`` the
            sampler is exactly ``dict(type=type, **settings)``.
        **settings: Sampler settings to set.
    """
    for stage in rcnn_train_cfgs(cfg):
        old = dict(stage.get('sampler') or {}) if keep else {}
        old.update(settings)
        old['type'] = type
        stage['sampler'] = old
    return cfg


def _walk(node: Any) -> Iterator[MutableMapping]:
    if isinstance(node, MutableMapping) or hasattr(node, '_cfg_dict'):  # dicts, ConfigDict, Config
        yield node
        for k in list(node.keys()):
            yield from _walk(node[k])
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _walk(v)


def use_roi_align(cfg: MutableMapping, sampling_ratio: int = 0) -> MutableMapping:
    """Replaces every ``RoIPool`` layer with ``RoIAlign`` (mmcv 2.1 has no CPU RoIPool kernel)."""
    for d in _walk(cfg):
        layer = d.get('roi_layer')
        if isinstance(layer, MutableMapping) and layer.get('type') == 'RoIPool':
            d['roi_layer'] = dict(type='RoIAlign', output_size=layer.get('output_size', 7),
                                  sampling_ratio=sampling_ratio)
    return cfg


def _is_pretrained(init: Any) -> bool:
    """``Pretrained`` and registered variants such as ``VGG16Pretrained`` (they load a file/URL)."""
    return isinstance(init, MutableMapping) and str(init.get('type', '')).endswith('Pretrained')


def drop_pretrained(cfg: MutableMapping) -> MutableMapping:
    """Removes every ``init_cfg`` that loads weights (``Pretrained``, ``VGG16Pretrained``, ...) and
    ``load_from``: random init, no downloads."""
    for d in _walk(cfg):
        init = d.get('init_cfg')
        if _is_pretrained(init):
            d['init_cfg'] = None
        elif isinstance(init, list):
            d['init_cfg'] = [i for i in init if not _is_pretrained(i)] or None
    if 'load_from' in cfg:
        cfg['load_from'] = None
    return cfg


def add_custom_import(cfg: MutableMapping, module: str = 'mmdet_ohem') -> MutableMapping:
    """Adds ``module`` to ``custom_imports`` (mmdet's way to load a plugin from a config)."""
    ci = dict(cfg.get('custom_imports') or {})
    imports = list(ci.get('imports') or [])
    if module not in imports:
        imports.append(module)
    cfg['custom_imports'] = dict(imports=imports, allow_failed_imports=False)
    return cfg
