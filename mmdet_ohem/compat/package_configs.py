"""``mmdet_ohem::`` config bases: the configs ship inside the package, as mmdet's do.

A user's config can build on ours the way mmdet users build on mmdet's::

    _base_ = 'mmdet_ohem::ohem/faster_rcnn_vgg16_ohem_voc07.py'

mmengine 0.10.7 resolves ``pkg::path`` through a fixed table of OpenMMLab packages
(``mmengine.config.utils.MODULE2PACKAGE``) and then looks for ``<installed package>/.mim/configs/path``.
:func:`register_package_configs` adds one *new* key, ``mmdet_ohem``, to that table (no existing entry
changes), so the reference resolves in any process that has imported ``mmdet_ohem`` before it parses the
config: our ``tools/train.py``/``tools/test.py`` do, and so does any script with ``import mmdet_ohem``.
(``custom_imports`` is applied only after the ``_base_`` files are read, so it is too late for this.)

Editable installs: mmengine derives the package folder from the distribution's location, which for a
PEP 660 editable install is ``site-packages`` (where no ``mmdet_ohem/`` folder exists). For the
``mmdet_ohem`` package alone, and only when that derived folder does not exist, the lookup falls back to
the folder the package was actually imported from; every other package resolves exactly as before.
"""
from __future__ import annotations

import os.path as osp

__all__ = ['PACKAGE', 'register_package_configs', 'package_config_dir']

PACKAGE = 'mmdet_ohem'


def _package_dir() -> str:
    return osp.dirname(osp.dirname(osp.abspath(__file__)))


def package_config_dir() -> str:
    """The folder that holds this package's configs (``mmdet_ohem/.mim/configs``)."""
    return osp.join(_package_dir(), '.mim', 'configs')


def register_package_configs() -> None:
    """Makes ``mmdet_ohem::<path>`` resolve in mmengine configs. Idempotent."""
    import mmengine.config.config as cfg_mod
    from mmengine.config import utils as cfg_utils

    cfg_utils.MODULE2PACKAGE.setdefault(PACKAGE, PACKAGE)
    original = cfg_mod.get_installed_path
    if getattr(original, '_mmdet_ohem_fallback', False):
        return

    def get_installed_path(package: str) -> str:
        path = original(package)
        if package == PACKAGE and not osp.isdir(path):
            return _package_dir()
        return path

    get_installed_path._mmdet_ohem_fallback = True  # type: ignore[attr-defined]
    cfg_mod.get_installed_path = get_installed_path
