"""The recipe of the shipped default bank (``pipeline/data/default_bank.json``).

The bank itself is data: :func:`acetate.pipeline.chain.presets.load_bank` reads the JSON file.
This module is how that file was made, from documented sources: eight production styles,
each a parametric target curve with its source, a prototype (the mix it suits) and a seeded
synthetic population that fits the selection's scaler. ``tests/test_presets.py`` checks that
:func:`build_default_bank` still gives exactly the shipped file; after changing the recipe,
write it again with ``presets.save_bank(build_default_bank(), presets.DEFAULT_BANK_PATH)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from acetate.kernels.spectrum import BAND_CENTRES_HZ
from acetate.pipeline.chain.presets import (
    SELECTION_BANDS,
    SELECTION_CLIP,
    SELECTION_FEATURES,
    SELECTION_WEIGHTS,
    Bank,
    Preset,
    target_curve,
)
from acetate.schemas.features import THIRD_OCTAVE_LABELS as _LABELS3

__all__ = ["build_default_bank"]


# --- the default bank -------------------------------------------------------------------

_PESTANA = (
    "Pestana, Ma, Reiss, Barbosa & Black (2013), 'Spectral characteristics of popular commercial "
    "recordings 1950-2010', AES 135th Convention"
)
_HOVE = "Hove, Vuust & Stupacher (2019), 'Increased levels of bass in popular music recordings 1955-2016 and their relation to preference ratings'"
_BYRNE = "Byrne et al. (1994), 'An international comparison of long-term average speech spectra', J. Acoust. Soc. Am. 96(4)"

#: Per preset: target-curve parameters, side offset, preset overrides, prototype mix traits
#: (crest factor dB, loudness range LU, overall width dB) and the source statement.
_DEFAULT_SPECS: tuple[dict[str, Any], ...] = (
    dict(
        name="balanced",
        description="Even tonal balance, gentle glue, streaming loudness. The safe default.",
        curve=dict(tilt_db_per_oct=-3.0, pivot_hz=150.0, low_cut_hz=40.0),
        side_db=-12.0,
        preset={},
        proto=(15.0, 7.0, -12.0),
        source=f"Parametric approximation (flat to 150 Hz, -3.0 dB/oct of 1/3-octave band energy above, 12 dB/oct below 40 Hz) of the average long-term spectrum of commercial masters reported in {_PESTANA}, with the tilt set to the -2.7 dB/oct (200 Hz-12.5 kHz) measured here on 20 mastered game soundtracks (Debian hyperrogue-music, nexuiz-music, fb-music-high); not a fit to measured data.",
    ),
    dict(
        name="warm",
        description="Darker top, fuller low-mids, softer compression: for mellow pop, soul, singer-songwriter.",
        curve=dict(tilt_db_per_oct=-4.0, pivot_hz=150.0, low_cut_hz=36.0, bass_db=1.5, air_db=-2.0),
        side_db=-12.0,
        preset=dict(ratio=(1.8, 1.6, 1.6, 1.4), width=(1.0, 1.0, 1.0, 1.05), limiter_release_s=0.12),
        proto=(15.5, 8.0, -12.0),
        source=f"Balanced curve made 1 dB/oct steeper with +1.5 dB below 120 Hz and -2 dB above 8 kHz: the darker end of the spread of master spectra in {_PESTANA}; parametric, not a fit.",
    ),
    dict(
        name="bright",
        description="Bright and open: flatter tilt, extra air and a touch wider top, for acoustic pop, indie, folk-pop.",
        curve=dict(tilt_db_per_oct=-2.2, pivot_hz=150.0, low_cut_hz=45.0, air_db=2.0, presence_db=0.5),
        side_db=-11.0,
        preset=dict(width=(1.0, 1.0, 1.08, 1.15)),
        proto=(14.0, 7.0, -10.0),
        source=f"Balanced curve 0.7 dB/oct flatter with +2 dB air above 8 kHz: the brighter end (recent decades) of the master spectra in {_PESTANA}; parametric, not a fit.",
    ),
    dict(
        name="bass_heavy",
        description="Electronic, hip-hop, R&B: low end kept big and mono, punchy slow low-band attack, loud.",
        curve=dict(tilt_db_per_oct=-3.5, pivot_hz=120.0, low_cut_hz=30.0, bass_db=5.0),
        side_db=-13.0,
        side_low_cut_db=-10.0,
        preset=dict(
            ratio=(1.6, 2.0, 2.0, 1.8),
            attack_s=(0.04, 0.015, 0.008, 0.004),
            width=(0.9, 1.0, 1.1, 1.15),
            target_lufs=-10.0,
            max_limiting_db=10.0,
            eq_max_db=6.0,
        ),
        proto=(13.0, 6.0, -14.0),
        source=f"Balanced curve with +5 dB below 120 Hz and a lower 28 Hz roll-off, after the rise of bass energy in popular recordings (strongest in electronic and hip-hop) measured by {_HOVE}; parametric, not a fit.",
    ),
    dict(
        name="dynamic_acoustic",
        description="Classical, jazz, acoustic: light touch, dynamics kept, lower loudness, little limiting.",
        curve=dict(tilt_db_per_oct=-3.8, pivot_hz=200.0, low_cut_hz=45.0),
        side_db=-9.0,
        preset=dict(
            threshold_rel_db=(8.0, 8.0, 8.0, 8.0),
            ratio=(1.3, 1.25, 1.25, 1.2),
            width=(1.0, 1.0, 1.0, 1.0),
            target_lufs=-18.0,
            max_limiting_db=3.0,
            eq_max_db=4.0,
            limiter_release_s=0.2,
        ),
        proto=(20.0, 13.0, -8.0),
        source=f"Steeper, later-pivot high-frequency roll-off of acoustic recordings made at a distance (air absorption, no close-miked transients) and a wider side, by analogy with the older/acoustic end of {_PESTANA}; -18 LUFS as on classical streaming catalogues; parametric, not a fit.",
    ),
    dict(
        name="dense_loud",
        description="Rock, metal, EDM drops: dense, compressed, loud, with a firm low end.",
        curve=dict(tilt_db_per_oct=-2.5, pivot_hz=150.0, low_cut_hz=40.0, bass_db=1.0, air_db=0.5),
        side_db=-11.0,
        preset=dict(
            threshold_rel_db=(2.0, 2.0, 2.0, 2.0),
            ratio=(3.0, 3.0, 3.0, 2.5),
            attack_s=(0.02, 0.01, 0.005, 0.003),
            target_lufs=-9.0,
            max_limiting_db=12.0,
        ),
        proto=(11.0, 4.0, -10.0),
        source=f"The flatter-tilt, loud-era (2000s) masters of {_PESTANA} (density raises upper-band energy); parametric, not a fit.",
    ),
    dict(
        name="vocal_forward",
        description="Pop and singer-led mixes: presence lift around 2.5 kHz, lean low end, vocal kept centred.",
        curve=dict(tilt_db_per_oct=-3.0, pivot_hz=150.0, low_cut_hz=45.0, bass_db=-1.0, presence_db=2.5),
        side_db=-13.0,
        preset=dict(ratio=(2.0, 2.2, 2.0, 1.6), width=(1.0, 1.0, 1.05, 1.1)),
        proto=(15.0, 6.0, -15.0),
        source=f"Balanced curve ({_PESTANA}) with a +2.5 dB presence bell at 2.5 kHz (the band that carries speech intelligibility, cf. the ANSI S3.5 band-importance function) and 1 dB less bass; parametric, not a fit.",
    ),
    dict(
        name="spoken_word",
        description="Speech, audiobooks, podcasts: speech spectrum, no sub-bass, steady levelling, -16 LUFS.",
        curve=dict(tilt_db_per_oct=-5.0, pivot_hz=500.0, low_cut_hz=110.0),
        side_db=-30.0,
        preset=dict(
            threshold_rel_db=(0.0, 0.0, 0.0, 0.0),
            ratio=(2.5, 2.5, 2.5, 2.0),
            width=(1.0, 1.0, 1.0, 1.0),
            target_lufs=-16.0,
            max_limiting_db=6.0,
            content="speech",
        ),
        proto=(16.0, 8.0, -40.0),
        source=f"Parametric approximation of the long-term average speech spectrum (LTASS) of {_BYRNE}: little energy below ~100 Hz, a plateau to ~500 Hz, then about -6 dB/oct of band energy; -16 LUFS as podcast platforms ask; not a fit.",
    ),
)

#: The default bank's synthetic reference population: per preset, this many rows drawn
#: around the prototype with :data:`_MEMBER_SPREAD` (the scaler is fitted on them).
_MEMBERS_PER_PRESET = 24
#: Spread (1 sd) of real mixes around a style's prototype, per feature group.
_MEMBER_SPREAD = {"ltas": 2.0, "spectral_tilt_db_per_oct": 0.6, "crest_factor_db": 2.0, "loudness_range_lu": 2.5, "width_overall_db": 3.0}
_DEFAULT_SEED = 20240601


def _tilt_of(mid_db: np.ndarray, side_db: np.ndarray) -> float:
    """The fingerprint's tilt definition applied to a target curve (total band energy, 50 Hz .. 16 kHz)."""
    from acetate.kernels.spectrum import spectral_tilt

    total = 10.0 ** (mid_db / 10.0) + 10.0 ** (side_db / 10.0)
    return float(spectral_tilt(total, np.asarray(BAND_CENTRES_HZ)))


def build_default_bank() -> Bank:
    """Build the default bank from its documented specification (deterministic).

    Each preset's prototype -- the mix it suits -- is its own target curve
    (the mid spectrum it aims for) with the crest factor, loudness range and
    width typical of unmastered mixes of that style: selection then picks the
    style whose target is nearest to what the track already is, so mastering
    keeps a track's character and corrects its deviations (a bass-heavy
    electronic mix stays bass-heavy, a classical recording keeps its
    dynamics, speech is treated as speech). The scaler is fitted on a seeded
    synthetic population around the prototypes (:data:`_MEMBER_SPREAD`),
    which stands for the spread of real mixes within a style.

    The shipped ``data/default_bank.json`` is this function's output.
    """
    rng = np.random.default_rng(_DEFAULT_SEED)
    idx = {b: i for i, b in enumerate(_LABELS3)}
    sel_idx = np.array([idx[b] for b in SELECTION_BANDS])
    centres = np.asarray(BAND_CENTRES_HZ)
    spread = np.array(
        [_MEMBER_SPREAD["ltas"]] * len(SELECTION_BANDS) + [_MEMBER_SPREAD[k] for k in SELECTION_FEATURES[len(SELECTION_BANDS) :]]
    )
    presets, protos, members = [], [], []
    for spec in _DEFAULT_SPECS:
        mid = np.asarray(target_curve(**spec["curve"]))
        side = mid + spec["side_db"] + np.where(centres < 120.0, spec.get("side_low_cut_db", 0.0), 0.0)
        # express both re. the overall (mid + side) level, as the fingerprint does
        total = 10.0 * np.log10(np.sum(10.0 ** (mid / 10.0)) + np.sum(10.0 ** (side / 10.0)))
        mid, side = mid - total, side - total
        p = Preset(
            name=spec["name"],
            description=spec["description"],
            target_mid_db=tuple(np.round(mid, 3)),
            target_side_db=tuple(np.round(side, 3)),
            source=spec["source"],
            **spec["preset"],
        )
        crest, lra, width = spec["proto"]
        proto = np.concatenate(
            [np.asarray(p.target_mid_db)[sel_idx], [_tilt_of(np.asarray(p.target_mid_db), np.asarray(p.target_side_db)), crest, lra, width]]
        )
        proto = np.round(proto, 3)
        cloud = np.round(proto + rng.standard_normal((_MEMBERS_PER_PRESET, proto.size)) * spread, 2)
        presets.append(p)
        protos.append(proto)
        members.append(cloud)
    meta = {
        "name": "default",
        "description": "Acetate's default bank: eight production styles with parametric target curves.",
        "kind": "default",
        "band_centres_hz": list(BAND_CENTRES_HZ),
        "selection": {
            "features": list(SELECTION_FEATURES),
            "weights": list(SELECTION_WEIGHTS),
            "clip": {k: list(v) for k, v in SELECTION_CLIP.items()},
            "method": "nearest_prototype",
        },
        "prototypes": (
            "Per preset: the preset's own mid target (31.5 Hz..16 kHz) and its tilt, plus the crest factor, "
            "loudness range and width typical of unmastered mixes of the style (documented in build_default_bank)."
        ),
        "members": (
            f"Synthetic reference population: {_MEMBERS_PER_PRESET} rows per preset drawn (seed {_DEFAULT_SEED}) around the "
            f"prototype with sd {_MEMBER_SPREAD}; used only to fit the scaler."
        ),
        "sources": {spec["name"]: spec["source"] for spec in _DEFAULT_SPECS},
    }
    return Bank(presets, np.asarray(protos), members, meta)
