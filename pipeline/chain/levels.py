"""Which loudness targets and true-peak ceilings Acetate accepts, and which need saying twice.

A target or ceiling outside the hard limits cannot be rendered (the meter and the
limiter are specified there). Inside them, a target louder than
:data:`SAFE_MAX_TARGET_LUFS` or a ceiling above :data:`SAFE_MAX_CEILING_DBTP` is
*unsafe*: no delivery specification asks for it, it is most often a typo (``+5``
for ``-5``, ``1`` for ``-1``), and it would destroy a catalogue's dynamics or
clip in its listeners' decoders (a ceiling above 0 dBTP lets inter-sample peaks
over full scale through; the samples themselves are still clipped at full scale
by every fixed-point format). Those are refused unless the caller says
``allow_unsafe`` (``--allow-unsafe-levels``, or ``options.allow_unsafe_levels``
in a job file).
"""

from __future__ import annotations

import math

__all__ = ["HARD_TARGET_LUFS", "HARD_CEILING_DBTP", "SAFE_MAX_TARGET_LUFS", "SAFE_MAX_CEILING_DBTP", "check_levels"]

#: Integrated loudness targets that can be rendered at all (LUFS).
HARD_TARGET_LUFS = (-60.0, 0.0)
#: True-peak ceilings that can be rendered at all (dBTP).
HARD_CEILING_DBTP = (-30.0, 3.0)
#: Loudest target accepted without ``allow_unsafe`` (LUFS): louder than any delivery spec.
SAFE_MAX_TARGET_LUFS = -5.0
#: Highest ceiling accepted without ``allow_unsafe`` (dBTP).
SAFE_MAX_CEILING_DBTP = 0.0


def check_levels(target_lufs: float | None, ceiling_dbtp: float | None, *, allow_unsafe: bool = False, where: str = "") -> None:
    """Raise ``ValueError`` (one sentence naming the value) for a target or ceiling Acetate will not render.

    Parameters
    ----------
    target_lufs, ceiling_dbtp : float or None
        None: not given (the preset's own is used).
    allow_unsafe : bool
        Accept a target above -5 LUFS or a ceiling above 0 dBTP (within the hard limits).
    where : str
        Prefix of the message (``"targets.loud: "``).

    Examples
    --------
    >>> check_levels(-14.0, -1.0)
    >>> check_levels(5.0, -1.0)
    Traceback (most recent call last):
    ...
    ValueError: target +5.0 LUFS is outside -60..0 LUFS
    >>> check_levels(-3.0, -1.0)
    Traceback (most recent call last):
    ...
    ValueError: target -3.0 LUFS is louder than -5 LUFS, which no delivery asks for; pass --allow-unsafe-levels if you mean it
    """
    _check(
        "target",
        target_lufs,
        "LUFS",
        1,
        HARD_TARGET_LUFS,
        SAFE_MAX_TARGET_LUFS,
        "louder than {safe:g} LUFS, which no delivery asks for",
        allow_unsafe,
        where,
    )
    _check(
        "ceiling",
        ceiling_dbtp,
        "dBTP",
        2,
        HARD_CEILING_DBTP,
        SAFE_MAX_CEILING_DBTP,
        "above {safe:g} dBTP: inter-sample peaks over full scale clip in decoders and converters",
        allow_unsafe,
        where,
    )


def _check(
    what: str, value: float | None, unit: str, digits: int, hard: tuple[float, float], safe: float, why: str, allow_unsafe: bool, where: str
) -> None:
    """Raise for ``value`` outside ``hard``, or above ``safe`` without ``allow_unsafe`` (shown with ``digits`` decimals)."""
    if value is None:
        return
    v = float(value)
    shown = f"{v:+.{digits}f}"
    if not math.isfinite(v) or not hard[0] <= v <= hard[1]:
        raise ValueError(f"{where}{what} {shown} {unit} is outside {hard[0]:g}..{hard[1]:g} {unit}")
    if v > safe and not allow_unsafe:
        raise ValueError(f"{where}{what} {shown} {unit} is {why.format(safe=safe)}; pass --allow-unsafe-levels if you mean it")
