"""Decoding and encoding at the edges: what a catalogue throws at Acetate gets a clear error,
never a crash or a wrong number; deliverables are written atomically."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import soundfile as sf

from acetate.pipeline import mastering
from acetate.pipeline.chain import render
from acetate.pipeline.io import audio

FS = 44100


def tone(seconds: float, channels: int = 2, fs: int = FS) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return np.tile(0.1 * np.sin(2 * np.pi * 440 * t), (channels, 1)).astype(np.float32)


def test_decode_is_planar_float32_and_exact_for_pcm(tmp_path):
    x = tone(1.3)
    path = tmp_path / "a.wav"
    sf.write(path, x.T, FS, subtype="FLOAT")
    y, fs = audio.decode(path)
    assert fs == FS and y.dtype == np.float32 and y.shape == x.shape and y.flags.c_contiguous
    np.testing.assert_array_equal(y, x)


def test_decode_blocks_reads_the_file_in_order(tmp_path):
    """Block by block (reused buffers), the same samples as decode, and a clear error for
    a file that cannot be read."""
    x = np.random.default_rng(2).uniform(-0.9, 0.9, (2, 10_000)).astype(np.float32)
    path = audio.encode(x, 48000, tmp_path / "b.flac", "flac24")
    whole, _ = audio.decode(path)
    parts = [b.copy() for b in audio.decode_blocks(path, block=3000)]
    assert [p.shape[1] for p in parts] == [3000, 3000, 3000, 1000]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    (tmp_path / "junk.wav").write_bytes(b"RIFF0000WAVEjunk" * 4)
    with pytest.raises(audio.AudioError, match="cannot decode"):
        list(audio.decode_blocks(tmp_path / "junk.wav"))


@pytest.mark.parametrize("subtype,fs", [("VORBIS", 44100), ("OPUS", 48000)])
def test_ogg_is_decoded_with_pyav_and_falls_back_to_libsndfile(tmp_path, monkeypatch, subtype, fs):
    """Ogg goes through libavcodec (PyAV): the same length and, to the decoders' float
    rounding, the same samples as libsndfile's. Where PyAV fails, or disagrees with the
    header, libsndfile decodes the file: the same result, not an error."""
    x = np.random.default_rng(4).uniform(-0.5, 0.5, (2, 3 * fs)).astype(np.float32)
    path = tmp_path / f"v.{subtype.lower()}.ogg"
    sf.write(path, x.T, fs, format="OGG", subtype=subtype)
    meta = audio.info(path)
    via_av = audio._read_planar_av(str(path), meta)
    assert via_av is not None and via_av.shape == (2, meta.frames)
    monkeypatch.setattr(audio, "_AV_FORMATS", frozenset())
    via_sndfile, _ = audio.decode(path)
    monkeypatch.undo()
    np.testing.assert_allclose(via_av, via_sndfile, rtol=0, atol=1e-5)
    decoded, rate = audio.decode(path)
    assert rate == fs
    np.testing.assert_array_equal(decoded, via_av)
    # a header PyAV disagrees with (one frame fewer) or a PyAV error: libsndfile's samples
    assert audio._read_planar_av(str(path), dataclasses.replace(meta, frames=meta.frames - 1)) is None
    import av

    def broken(*a, **k):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(av, "open", broken)
    fallback, _ = audio.decode(path)
    np.testing.assert_array_equal(fallback, via_sndfile)


def test_chained_ogg_is_read_as_libsndfile_reads_it(tmp_path, monkeypatch):
    """Two Ogg streams back to back (a chained file; here the second at another rate):
    PyAV is not trusted with it, and the samples are libsndfile's."""
    parts = []
    for k, fs in enumerate((44100, 48000)):
        x = np.random.default_rng(k).uniform(-0.3, 0.3, (fs, 2)).astype(np.float32)
        p = tmp_path / f"link{k}.ogg"
        sf.write(p, x, fs, format="OGG", subtype="VORBIS")
        parts.append(p.read_bytes())
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(b"".join(parts))
    meta = audio.info(chained)
    assert audio._read_planar_av(str(chained), meta) is None
    got, _ = audio.decode(chained)
    monkeypatch.setattr(audio, "_AV_FORMATS", frozenset())
    want, _ = audio.decode(chained)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("second", [("fltp", "mono", 48000), ("fltp", "5.1", 48000), ("fltp", "stereo", 44100), ("s16p", "stereo", 48000)])
def test_pyav_frames_that_change_format_rate_or_channels_fall_back(monkeypatch, second):
    """A stream whose frames change channels, rate or sample format midway (a chained
    link) is not gathered (a frame of fewer channels would crash PyAV's fifo): libsndfile decides."""
    import types

    import av

    def frame(fmt, layout, rate):
        f = av.AudioFrame(format=fmt, layout=layout, samples=1024)
        f.sample_rate = rate
        for plane in f.planes:
            plane.update(bytes(plane.buffer_size))
        return f

    frames = [frame("fltp", "stereo", 48000), frame(*second)]

    class Container:
        streams = types.SimpleNamespace(audio=[types.SimpleNamespace(codec_context=types.SimpleNamespace(thread_count=0))])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def decode(self, stream):
            yield from frames

    monkeypatch.setattr(av, "open", lambda path: Container())
    meta = audio.AudioInfo("x.ogg", 48000, 2, 2048, "OGG", "VORBIS")
    assert audio._read_planar_av("x.ogg", meta) is None
    frames[1] = frame("fltp", "stereo", 48000)  # the same stream, unchanged: read
    x = audio._read_planar_av("x.ogg", meta)
    assert x is not None and x.shape == (2, 2048) and not x.any()


def test_multichannel_ogg_keeps_its_channel_order(tmp_path):
    """Beyond stereo, Ogg is read by libsndfile alone (libavcodec would reorder the
    channels): each decoded channel is the one written at its index."""
    fs = 48000
    t = np.arange(2 * fs) / fs
    x = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (220.0, 660.0, 1980.0)]).astype(np.float32)
    path = tmp_path / "three.ogg"
    sf.write(path, x.T, fs, format="OGG", subtype="VORBIS")
    y, _ = audio.decode(path)
    assert y.shape == x.shape
    corr = np.corrcoef(np.concatenate([x, y]))[:3, 3:]  # written x decoded
    assert np.all(np.diag(corr) > 0.99) and np.all(np.abs(corr - np.diag(np.diag(corr))) < 0.1)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt junk that is not audio"), "cannot read"),
        (lambda p: sf.write(p, np.full((4410, 2), np.nan, np.float32), FS, subtype="FLOAT"), "non-finite"),
        (lambda p: sf.write(p, np.zeros((400, 2), np.float32), 4000, subtype="FLOAT"), "outside the supported"),
    ],
    ids=["empty", "corrupt", "nan", "rate-4k"],
)
def test_bad_files_are_clear_errors(tmp_path, make, match):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(audio.AudioError, match=match):
        audio.decode(path)


def test_over_long_programme_is_refused_before_decoding(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, tone(3.0).T, FS)
    with pytest.raises(audio.AudioError, match="exceeds the limit"):
        audio.decode(path, max_seconds=2.0)


@pytest.mark.parametrize(
    "x,stage,match",
    [
        (tone(3.0, channels=3), "analyse", "3-channel input"),
        (tone(0.2), "analyse", "shorter than one 400 ms"),
        (np.zeros((2, FS * 2), np.float32), "analyse", "silent"),
    ],
    ids=["three-channels", "tiny", "silent"],
)
def test_master_file_turns_bad_programmes_into_error_rows(tmp_path, x, stage, match):
    path = tmp_path / "in.wav"
    sf.write(path, x.T, FS, subtype="PCM_24")
    row = mastering.master_file(str(path), tmp_path / "out", render.MasterSettings(target_lufs=-14.0))
    assert row["stage"] == stage and match in row["error"], row
    assert not (tmp_path / "out" / "in.wav").exists()


def test_odd_sample_rates_are_mastered_at_their_own_rate(tmp_path):
    fs = 22050
    path = tmp_path / "low.wav"
    sf.write(path, tone(3.0, fs=fs).T * 3, fs, subtype="PCM_16")
    row = mastering.master_file(str(path), tmp_path / "out", render.MasterSettings(target_lufs=-16.0, ceiling_dbtp=-1.0))
    assert "error" not in row, row
    y, out_fs = audio.decode(row["outputs"][0]["path"])
    assert out_fs == fs and y.shape == (2, 3 * fs)
    assert row["output"]["integrated_lufs"] == pytest.approx(-16.0, abs=0.1)


def test_encode_is_atomic_and_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "m.flac"
    audio.encode(tone(1.0), FS, out, "flac24")
    before = out.read_bytes()
    oct_mode = oct(os.stat(out).st_mode & 0o777)
    assert oct_mode != oct(0o600)  # deliverables get the usual mode, not mkstemp's

    class Boom(Exception):
        pass

    def broken_write(self, data):  # the encoder dies half way
        raise Boom("disk full")

    monkeypatch.setattr(sf.SoundFile, "write", broken_write)
    with pytest.raises(Boom):
        audio.encode(tone(1.0) * 0.5, FS, out, "flac24")
    assert out.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["m.flac"]  # no temporary left


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="unknown format 'ogg9'"):
        audio.encode(tone(0.5), FS, "/tmp/x.ogg", "ogg9")


@pytest.mark.parametrize("fmt,bits", [("wav24", 24), ("flac24", 24), ("wav16", 16), ("flac16", 16)])
def test_fixed_point_formats_round_to_nearest(tmp_path, fmt, bits):
    """The file holds the nearest grid value of every sample (libsndfile alone truncates
    WAV: a -0.5 LSB bias), so it decodes to exactly ``quantize(x, bits)``."""
    from acetate.kernels import dither

    rng = np.random.default_rng(bits)
    x = rng.uniform(-0.99, 0.99, (2, 300_000)).astype(np.float32)  # more than one I/O block
    path = audio.encode(x, 48000, tmp_path / f"r.{audio.FORMATS[fmt][0]}", fmt)
    y, _ = audio.decode(path)
    np.testing.assert_array_equal(y, dither.quantize(x, bits))
    err = (y.astype(np.float64) - x) * 2.0 ** (bits - 1)
    assert np.abs(err).max() <= 0.5 + 1e-9 and abs(err.mean()) < 0.01  # nearest, unbiased
    x[1, 290_000] = np.nan  # in the second block: refused, and nothing left under the name
    with pytest.raises(ValueError, match="non-finite"):
        audio.encode(x, 48000, tmp_path / f"nan.{audio.FORMATS[fmt][0]}", fmt)
    assert not any(p.name.startswith("nan") for p in tmp_path.iterdir())
