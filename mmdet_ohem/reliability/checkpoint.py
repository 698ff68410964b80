"""Clear errors for truncated or corrupt checkpoint files.

A run killed while ``torch.save`` is writing leaves a partial ``iter_N.pth``/``epoch_N.pth``. Loading it
(``--resume <file>``, ``load_from``) fails deep inside torch's zip reader or unpickler with a message that
does not name the file. :func:`load_from_local_checked` replaces mmengine's loader for local paths
(``CheckpointLoader`` scheme ``''``): it loads exactly as mmengine does (``weights_only`` stays on), and
when that fails it checks the file's zip structure; if the file is damaged it raises
:class:`CorruptCheckpointError` naming the file, its size, what is wrong and the other checkpoints next to
it. Errors on intact files (e.g. a type not allow-listed for ``weights_only``) are re-raised unchanged.
torch does not verify the zip members' CRC-32 checksums, so a file with flipped bytes in its tensor data
loads without error; after a successful load the CRCs are therefore checked too (one extra read of the
file, about a second per GB).

:func:`auto_resume_fallback` covers what mmengine's auto-resume (``--resume`` without a file) trips on
when a run was killed while saving: ``last_checkpoint`` is rewritten in place after every checkpoint
(opened, so emptied, then written), and old checkpoints are deleted (``max_keep_ckpts``) before the new
one is written, so a kill at the wrong moment leaves ``last_checkpoint`` empty or naming a file that is
gone. It then picks the newest intact checkpoint in that folder instead, and says so.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import re
import zipfile
from typing import Any, Callable, List, Optional, Union

from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader, load_from_local

__all__ = ['CorruptCheckpointError', 'checkpoint_damage', 'load_from_local_checked',
           'register_checked_local_loader', 'auto_resume_fallback']

# What mmengine's CheckpointHook names the checkpoints it resumes from (``filename_tmpl``'s defaults);
# ``best_*.pth`` (SaveBestHook-style) and other files are never resumed from.
RESUMABLE_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but is truncated or otherwise damaged."""


def checkpoint_damage(path: str) -> Optional[str]:
    """Says what is wrong with a checkpoint file's container, or ``None`` if it looks intact.

    torch (>= 1.6) writes checkpoints as zip archives; a truncated write loses the zip's central
    directory (at the end of the file) and a corrupted one fails the member CRC checks.

    Args:
        path: Local checkpoint path.

    Returns:
        A short description of the damage, or ``None`` when the archive and all member CRCs are fine.
    """
    size = osp.getsize(path)
    if size == 0:
        return 'the file is empty'
    if not zipfile.is_zipfile(path):
        return ('no zip central directory found: the file was cut short while being written '
                '(or it is not a torch checkpoint)')
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f'unreadable zip archive ({err})'
    if bad is not None:
        return f'member {bad!r} fails its CRC check'
    return None


def _siblings(path: str) -> list:
    folder = osp.dirname(osp.abspath(path))
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith('.pth') and n != osp.basename(path))
    except OSError:
        return []
    return names


def load_from_local_checked(filename: str, map_location: Union[str, Callable, None] = None) -> Any:
    """mmengine's local-file loader, with a clear error for a truncated or corrupt file.

    Args:
        filename: Local checkpoint path (``~`` is expanded).
        map_location: As for ``torch.load``.

    Returns:
        The loaded checkpoint (exactly what mmengine's ``load_from_local`` returns).

    Raises:
        FileNotFoundError: If the file does not exist (mmengine's error).
        CorruptCheckpointError: If the file is truncated or damaged (found when loading fails, or by the
            CRC check after a successful load); the message names the file, its size, the damage and
            the other checkpoints in its folder.
    """
    path = osp.expanduser(filename)
    try:
        checkpoint = load_from_local(filename, map_location)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - classified below, re-raised unchanged if the file is intact
        damage = checkpoint_damage(path) if osp.isfile(path) else None
        if damage is None:
            raise
        raise _corrupt(path, damage, f'Loader error: {type(err).__name__}: {err}') from err
    # torch does not check the zip members' CRCs: flipped bytes in tensor data load silently.
    if zipfile.is_zipfile(path):
        damage = checkpoint_damage(path)
        if damage is not None:
            raise _corrupt(path, damage, 'torch.load did not notice; the tensor data would be wrong')
    return checkpoint


def _corrupt(path: str, damage: str, detail: str) -> CorruptCheckpointError:
    others = _siblings(path)
    hint = (f'; other checkpoints in that folder: {", ".join(others)}' if others
            else '; there is no other checkpoint in that folder')
    return CorruptCheckpointError(
        f'checkpoint {path} is truncated or corrupt ({damage}; {osp.getsize(path)} bytes). A run stopped '
        f'while writing it, or the file was damaged later. Resume from an earlier checkpoint '
        f'(--resume <file>) or delete it and fix "last_checkpoint" in its folder{hint}. {detail}')


def register_checked_local_loader() -> None:
    """Makes :func:`load_from_local_checked` mmengine's loader for local paths (scheme ``''``)."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_checked, force=True)


def _resumable(folder: str) -> List[str]:
    """The ``iter_N.pth`` / ``epoch_N.pth`` files in ``folder``, newest first (modification time, then N)."""
    try:
        names = [n for n in os.listdir(folder) if RESUMABLE_NAME.match(n)]
    except OSError:
        return []
    paths = [osp.join(folder, n) for n in names if osp.isfile(osp.join(folder, n))]
    return sorted(paths, key=lambda p: (osp.getmtime(p), int(RESUMABLE_NAME.match(osp.basename(p)).group(1))),
                  reverse=True)


def auto_resume_fallback(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` (auto) should load where ``work_dir/last_checkpoint`` cannot serve.

    mmengine's auto-resume loads the path written in ``work_dir/last_checkpoint``. This returns ``None``
    when it can do so: the file is absent (nothing to resume, mmengine starts afresh as before) or names
    an existing file (which the checked loader still verifies) or a remote one (``s3://...``, left to
    mmengine's file backends). Otherwise, when ``last_checkpoint`` is
    empty or names a file that is gone (a run killed while saving), it returns the newest intact
    ``iter_N.pth`` / ``epoch_N.pth`` in the folder ``last_checkpoint`` points to (``work_dir`` when it is
    empty), skipping truncated ones, and logs a warning naming what was wrong and what is used.

    Args:
        work_dir: The run's work directory.

    Returns:
        The checkpoint to resume from, or ``None`` to let mmengine's auto-resume proceed.

    Raises:
        FileNotFoundError: ``last_checkpoint`` is empty or stale and no intact checkpoint is left to
            resume from; the message names the file and what it holds (delete it to start afresh).
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        recorded = f.read().strip()
    if recorded and (osp.isfile(recorded) or '://' in recorded):  # remote (s3://...): mmengine's backends
        return None
    problem = ('is empty' if not recorded else f'names {recorded}, which does not exist')
    folder = osp.dirname(recorded) if recorded else work_dir
    skipped = []
    for path in _resumable(folder):
        damage = checkpoint_damage(path)
        if damage is None:
            note = f' (skipped, damaged: {"; ".join(skipped)})' if skipped else ''
            print_log(f'[mmdet_ohem] {record} {problem} (a run stopped while saving a checkpoint); resuming '
                      f'from {path}, the newest intact checkpoint in {folder}{note}', logger='current',
                      level=logging.WARNING)
            return path
        skipped.append(f'{osp.basename(path)}: {damage}')
    found = f'; damaged: {"; ".join(skipped)}' if skipped else ''
    raise FileNotFoundError(
        f'--resume: {record} {problem} (a run stopped while saving a checkpoint), and {folder} holds no intact '
        f'iter_N.pth/epoch_N.pth to resume from{found}. Pass a checkpoint with --resume <file>, or delete '
        f'{record} to start afresh')
