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
    if target_lufs is not None:
        t = float(target_lufs)
        if not math.isfinite(t) or not HARD_TARGET_LUFS[0] <= t <= HARD_TARGET_LUFS[1]:
            raise ValueError(f"{where}target {t:+.1f} LUFS is outside {HARD_TARGET_LUFS[0]:g}..{HARD_TARGET_LUFS[1]:g} LUFS")
        if t > SAFE_MAX_TARGET_LUFS and not allow_unsafe:
            raise ValueError(
                f"{where}target {t:+.1f} LUFS is louder than {SAFE_MAX_TARGET_LUFS:g} LUFS, which no delivery asks for; "
                "pass --allow-unsafe-levels if you mean it"
            )
    if ceiling_dbtp is not None:
        c = float(ceiling_dbtp)
        if not math.isfinite(c) or not HARD_CEILING_DBTP[0] <= c <= HARD_CEILING_DBTP[1]:
            raise ValueError(f"{where}ceiling {c:+.1f} dBTP is outside {HARD_CEILING_DBTP[0]:g}..{HARD_CEILING_DBTP[1]:g} dBTP")
        if c > SAFE_MAX_CEILING_DBTP and not allow_unsafe:
            raise ValueError(
                f"{where}ceiling {c:+.2f} dBTP is above {SAFE_MAX_CEILING_DBTP:g} dBTP: inter-sample peaks over full scale clip in decoders and converters; "
                "pass --allow-unsafe-levels if you mean it"
            )
