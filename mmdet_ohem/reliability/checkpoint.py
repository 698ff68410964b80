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
"""
from __future__ import annotations

import os
import os.path as osp
import zipfile
from typing import Any, Callable, Optional, Union

from mmengine.runner.checkpoint import CheckpointLoader, load_from_local

__all__ = ['CorruptCheckpointError', 'checkpoint_damage', 'load_from_local_checked',
           'register_checked_local_loader']


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
