"""Build-time checks of sampler settings: a wrong type or value fails when the config is built, with an
error that names the component, the setting and the value (e.g. ``keep_ratio='False'``, a string, which
Python would otherwise take as True)."""
from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ['check_bool', 'check_number', 'check_neg_pos_ub', 'check_mining_settings', 'RANKING_LOSSES']

RANKING_LOSSES = ('cls', 'loc', 'cls+loc')


def check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` if it is a real ``bool``.

    Raises:
        TypeError: For anything else (``'False'``, ``0``, ``None``, ...).
    """
    if not isinstance(value, bool):
        raise TypeError(f'{owner}: {name} must be True or False, got {value!r} ({type(value).__name__})')
    return value


def check_number(owner: str, name: str, value: Any, lo: Optional[float] = None,
                 hi: Optional[float] = None) -> float:
    """``value`` as a float if it is a finite int/float (not a bool) within ``[lo, hi]``.

    Raises:
        TypeError: If it is not a number (e.g. the string ``'0.25'``).
        ValueError: If it is outside the range or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{owner}: {name} must be a number, got {value!r} ({type(value).__name__})')
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f'[{-math.inf if lo is None else lo:g}, {math.inf if hi is None else hi:g}]'
        raise ValueError(f'{owner}: {name} must be in {rng}, got {value!r}')
    return float(value)


def check_neg_pos_ub(owner: str, value: Any) -> Any:
    """``neg_pos_ub`` as mmdet reads it: ``-1`` (no bound) or a number ``>= 0``.

    Raises:
        TypeError: If it is not a number (e.g. the string ``'3'``).
        ValueError: If it is negative other than ``-1``.
    """
    check_number(owner, 'neg_pos_ub', value)
    if value < 0 and value != -1:
        raise ValueError(f'{owner}: neg_pos_ub must be -1 (no bound) or >= 0, got {value!r}')
    return value


def check_mining_settings(owner: str, unit: str, num: Any, ranking_loss: Any, pos_fraction: Any, neg_pos_ub: Any,
                          nonfinite: Any, **flags: Any) -> None:
    """The settings every OHEM miner (RoIs or anchors) shares, checked at build time.

    Args:
        owner: The component's name for the message (``'OHEMSampler'``).
        unit: What is mined, for the message (``'RoIs'``, ``'anchors'``).
        num, ranking_loss, pos_fraction, neg_pos_ub, nonfinite: The settings of that name.
        **flags: Settings that must be real bools (``keep_ratio=...``, ``log_stats=...``).

    Raises:
        ValueError / TypeError: Naming the setting and the value.
    """
    if num is None:
        raise TypeError(f'{owner}: num ({unit} mined per image) is required and was not given: mmdet\'s configs set '
                        f'it in the sampler dict, so a sampler dict written from scratch (or one replacing a sampler '
                        f"without it, such as PseudoSampler) must too, e.g. dict(type='{owner}', num=512)")
    if isinstance(num, bool) or not isinstance(num, int) or num <= 0:
        raise ValueError(f'{owner}: num ({unit} mined per image) must be a positive int, got {num!r}')
    if ranking_loss not in RANKING_LOSSES:
        raise ValueError(f'{owner}: ranking_loss must be one of {RANKING_LOSSES}, got {ranking_loss!r}')
    check_number(owner, 'pos_fraction', pos_fraction, 0.0, 1.0)
    check_neg_pos_ub(owner, neg_pos_ub)
    for name, flag in flags.items():
        check_bool(owner, name, flag)
    if nonfinite not in ('skip', 'raise'):
        raise ValueError(f"{owner}: nonfinite must be 'skip' or 'raise', got {nonfinite!r}")
