"""Decode and encode audio files at the edges of the pipeline (soundfile / libsndfile; PyAV for Ogg).

Audio inside Acetate is a float32 array shaped ``(channels, samples)`` at full
scale 1.0. Decoding validates what a catalogue throws at it -- unreadable,
empty, absurd rates, NaN -- and raises :class:`AudioError` with a message a
label's engineer can act on; callers turn it into an error row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf

from acetate.kernels import dither
from acetate.pipeline.io import files

__all__ = [
    "AudioError",
    "AudioInfo",
    "check_header",
    "decode",
    "decode_blocks",
    "decode_programme",
    "info",
    "encode",
    "dual_mono",
    "AUDIO_EXTENSIONS",
    "FORMATS",
    "list_audio",
]

#: File extensions treated as audio when a folder is given.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3", ".w64", ".caf", ".opus"})

MIN_RATE, MAX_RATE = 8000, 192000


class AudioError(ValueError):
    """A file that cannot be used as programme audio (the message says why)."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def info(path: str | os.PathLike) -> AudioInfo:
    """Header information of ``path`` without decoding it (a file that is not regular is refused unopened)."""
    _refuse_non_regular(path)
    return _header(path)


def _refuse_non_regular(path: str | os.PathLike) -> None:
    problem = files.input_problem(path)
    if problem is not None:  # opening a FIFO would block, a device never end
        raise AudioError(problem)


def _header(path: str | os.PathLike) -> AudioInfo:
    try:
        i = sf.info(str(path))
    except Exception as exc:  # libsndfile's errors are RuntimeError/LibsndfileError
        raise AudioError(f"cannot read {os.fspath(path)!s}: {files.error_message(exc)}") from exc
    return AudioInfo(str(path), int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)


def check_header(path: str | os.PathLike, *, max_seconds: float | None = 4 * 3600.0) -> AudioInfo:
    """The header of ``path`` if :func:`decode` would go on to read it; else :class:`AudioError` saying why.

    Everything :func:`decode` refuses before it reads a sample: a file that is not
    regular, is empty or whose header cannot be read, a rate outside 8-192 kHz, no
    channels, a header without a usable length, more than ``max_seconds`` of audio.
    What only decoding can find (a corrupt stream, non-finite samples) is not checked.
    """
    p = os.fspath(path)
    _refuse_non_regular(p)
    if os.path.getsize(p) == 0:
        raise AudioError(f"empty file (0 bytes): {p}")
    meta = _header(p)
    if not (MIN_RATE <= meta.sample_rate <= MAX_RATE):
        raise AudioError(f"sample rate {meta.sample_rate} Hz is outside the supported {MIN_RATE}-{MAX_RATE} Hz: {p}")
    if meta.channels < 1:
        raise AudioError(f"no audio channels: {p}")
    if meta.frames >= _UNKNOWN_FRAMES:  # libsndfile's SF_COUNT_MAX: a FLAC header of total 0, a header it cannot size
        raise AudioError(f"the header gives no usable length (a streamed or corrupt file; re-encode it): {p}")
    if max_seconds is not None and meta.frames > max_seconds * meta.sample_rate:
        raise AudioError(f"{meta.duration_s:.0f} s of audio exceeds the limit of {max_seconds:.0f} s: {p}")
    return meta


def decode(path: str | os.PathLike, *, max_seconds: float | None = 4 * 3600.0) -> tuple[np.ndarray, int]:
    """Read ``path`` into a float32 ``(channels, samples)`` array and its rate.

    Raises
    ------
    AudioError
        Unreadable or corrupt file, no samples, a rate outside 8-192 kHz, more
        than ``max_seconds`` of audio, or non-finite samples.
    """
    p = os.fspath(path)
    meta = check_header(p, max_seconds=max_seconds)
    try:
        x = _read_planar(p, meta)
    except Exception as exc:
        raise AudioError(f"cannot decode {p}: {files.error_message(exc)}") from exc
    if x.shape[1] == 0:
        raise AudioError(f"no audio samples: {p}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise AudioError(f"{bad} non-finite (NaN/Inf) samples: {p}")
    return x, meta.sample_rate


#: Frames moved per read/write call: bounds the interleaved staging buffer.
_IO_BLOCK = 1 << 18

#: Containers (libsndfile's name) decoded with libavcodec through PyAV where it is installed:
#: mono and stereo Ogg (Vorbis, Opus), which it decodes about twice as fast as libsndfile's
#: libvorbis (a 322 s Vorbis track: 0.18 s against 0.35 s on one core), straight into planar
#: float32. libsndfile reads everything else: any Ogg that PyAV cannot read or reads
#: differently from the header (chained streams), and Ogg of more than two channels, whose
#: channels libavcodec would put in its own order (L R C LFE ...) and libsndfile in Vorbis's
#: (L C R ...): one file, one channel order, whichever decoder runs.
_AV_FORMATS = frozenset({"OGG"})
#: Samples copied out of PyAV's frame fifo at a time.
_AV_CHUNK = 1 << 16


#: A header length at or above this is no length (libsndfile reports SF_COUNT_MAX when it cannot tell).
_UNKNOWN_FRAMES = 1 << 62

#: Bits per sample of libsndfile's constant-rate subtypes (headers and block overheads only
#: add bytes): a file of N bytes holds at most 8 N / (bits x channels) frames of them.
_FIXED_BITS: dict[str, float] = {
    "PCM_S8": 8,
    "PCM_U8": 8,
    "ULAW": 8,
    "ALAW": 8,
    "DPCM_8": 8,
    "PCM_16": 16,
    "DPCM_16": 16,
    "PCM_24": 24,
    "PCM_32": 32,
    "FLOAT": 32,
    "DOUBLE": 64,
    "IMA_ADPCM": 4,
    "MS_ADPCM": 4,
    "VOX_ADPCM": 4,
    "G721_32": 4,
    "G723_24": 3,
    "G723_40": 5,
    "NMS_ADPCM_16": 2,
    "NMS_ADPCM_24": 3,
    "NMS_ADPCM_32": 4,
    "GSM610": 33 * 8 / 160,
}
#: Containers whose subtype names the decoded word, not the stored one (compressed streams).
_COMPRESSED_FORMATS = frozenset({"FLAC", "OGG", "MP3"})
#: Frames per byte of file allocated up front for a compressed stream (or a variable-rate
#: subtype): more than music at any usual bit rate needs (FLAC 0.3-1, Vorbis/Opus at 32 kbps
#: about 11-12); a stream that decodes to more (near-silence) grows the buffer by doubling.
_FRAMES_PER_BYTE = 32


def _first_frames(path: str, meta: AudioInfo, frames: int) -> int:
    """Frames to allocate before decoding a file whose header claims ``frames``.

    A header can lie (a patched or corrupt WAV/AIFF/FLAC/Ogg claiming hours): the
    allocation is bounded by what the file's size can hold -- exactly for the
    constant-rate subtypes, by :data:`_FRAMES_PER_BYTE` for compressed streams, whose
    buffer then grows as decoded data actually arrives (:func:`_grow`). A truthful
    header of a usual file gets exactly its length, in one allocation.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    bits = None if meta.format in _COMPRESSED_FORMATS else _FIXED_BITS.get(meta.subtype)
    if bits:
        bound = int(size * 8 // (bits * max(1, meta.channels))) + 1
    else:
        bound = size * _FRAMES_PER_BYTE + _AV_CHUNK
    return max(0, min(frames, bound))


def _grow(x: np.ndarray, pos: int, need: int, limit: int) -> np.ndarray:
    """``x`` with room for ``need`` frames (at least doubled, at most ``limit``); its first ``pos`` kept."""
    y = np.empty((x.shape[0], min(limit, max(need, 2 * x.shape[1]))), dtype=x.dtype)
    y[:, :pos] = x[:, :pos]
    return y


def _trimmed(x: np.ndarray, pos: int) -> np.ndarray:
    """The first ``pos`` frames of ``x``: ``x`` itself when full, else a compact copy (no view pinning the rest)."""
    return x if pos == x.shape[1] else np.ascontiguousarray(x[:, :pos])


def _read_planar(path: str, meta: AudioInfo) -> np.ndarray:
    """Decode into a (channels, frames) float32 array block by block: no full interleaved copy.

    At most the header's frames are kept; the array is allocated for what the file can
    hold (:func:`_first_frames`) and grown as decoded data arrives, so a header claiming
    billions of frames costs memory only for the frames actually there.
    """
    if meta.format in _AV_FORMATS and meta.channels <= 2:  # beyond stereo the two order channels differently
        x = _read_planar_av(path, meta)
        if x is not None:
            return x
    with sf.SoundFile(path) as f:
        frames = f.frames if f.frames > 0 else meta.frames
        x = np.empty((f.channels, _first_frames(path, meta, frames)), dtype=np.float32)
        # The staging buffer holds at most what the array can and _IO_BLOCK stereo frames'
        # worth of samples: a header claiming 65535 channels would make it gigabytes.
        staging = max(1, min(_IO_BLOCK, (2 * _IO_BLOCK) // max(1, f.channels), x.shape[1]))
        pos = 0
        for block in _interleaved_blocks(f, staging):
            m = min(block.shape[0], frames - pos)
            if pos + m > x.shape[1]:
                x = _grow(x, pos, pos + m, frames)
            x[:, pos : pos + m] = block[:m].T
            pos += m
    return _trimmed(x, pos)


def _interleaved_blocks(f: sf.SoundFile, block: int = _IO_BLOCK) -> Iterator[np.ndarray]:
    """An open file's samples in order, as interleaved float32 blocks ``(<= block, channels)``
    read into one reused buffer (a block is valid until the next is read)."""
    buf = np.empty((block, f.channels), dtype=np.float32)
    while True:
        m = f.read(block, dtype="float32", always_2d=True, out=buf).shape[0]
        if m == 0:
            return
        yield buf[:m]


def _read_planar_av(path: str, meta: AudioInfo) -> np.ndarray | None:
    """Decode with PyAV (libavcodec) into a (channels, frames) float32 array; None where PyAV
    is missing, fails, or disagrees with the header (channels, rate, length): the caller
    then decodes with libsndfile.

    The codec's frames (about a thousand samples each) are gathered in an ``AudioFifo``
    and copied out :data:`_AV_CHUNK` samples at a time. Every frame must be planar float at
    the header's rate and channels (a chained stream's next link may change them).
    """
    try:
        import av
    except ImportError:
        return None
    x = np.empty((meta.channels, _first_frames(path, meta, meta.frames)), dtype=np.float32)  # grown as frames arrive
    pos = 0

    def drain(fifo: Any, least: int) -> bool:  # copy out while ``least`` (>= 1) samples wait; False: longer than the header
        nonlocal pos, x
        while fifo.samples >= least:
            frame = fifo.read(min(_AV_CHUNK, fifo.samples))
            m = frame.samples
            if pos + m > meta.frames:
                return False
            if pos + m > x.shape[1]:
                x = _grow(x, pos, pos + m, meta.frames)
            for ch, plane in enumerate(frame.planes):  # planar float: one plane per channel, copied as is
                x[ch, pos : pos + m] = np.frombuffer(plane, dtype=np.float32, count=m)
            pos += m
        return True

    try:
        with av.open(path) as container:
            stream = container.streams.audio[0]
            cc = stream.codec_context
            cc.thread_count = 1  # one track per core: a batch runs tracks side by side
            fifo = av.AudioFifo()
            for frame in container.decode(stream):
                if (  # every frame: planar float (Vorbis's and Opus's) at the header's rate and channels
                    frame.format.name != "fltp" or frame.sample_rate != meta.sample_rate or frame.layout.nb_channels != meta.channels
                ):  # (the fifo checks format and rate, not the channels: a frame of fewer would crash it)
                    return None
                frame.pts = None  # timestamps: the decoder's first frames jump (pre-skip), the fifo would object
                fifo.write(frame)
                if not drain(fifo, _AV_CHUNK):
                    return None
            if not drain(fifo, 1):
                return None
    except Exception:  # PyAV's errors (FFmpegError, a frame the fifo refuses, ...): libsndfile decides
        return None
    return _trimmed(x, pos) if pos == meta.frames else None


def decode_blocks(path: str | os.PathLike, block: int = _IO_BLOCK) -> Iterator[np.ndarray]:
    """The samples of ``path`` in order, as planar float32 blocks ``(channels, <= block)``.

    For reading a file back to compare it with what was written, a block at a
    time: no array of the track's length, and each block is compared while it is
    still in cache. The blocks share two reused buffers: a block is valid until
    the next one is read (copy it to keep it).

    Raises
    ------
    AudioError
        The file cannot be opened or decoded.
    """
    p = os.fspath(path)
    try:
        with sf.SoundFile(p) as f:
            planar = np.empty((f.channels, block), dtype=np.float32)
            for inter in _interleaved_blocks(f, block):
                m = inter.shape[0]
                planar[:, :m] = inter.T
                yield planar[:, :m]
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"cannot decode {p}: {files.error_message(exc)}") from exc


#: Word length of the fixed-point subtypes that :func:`encode` rounds to.
PCM_BITS = {"PCM_24": 24, "PCM_16": 16}

#: Delivery formats: name -> (extension, soundfile format, subtype).
FORMATS: dict[str, tuple[str, str, str]] = {
    "wav24": ("wav", "WAV", "PCM_24"),
    "wav16": ("wav", "WAV", "PCM_16"),
    "wav32f": ("wav", "WAV", "FLOAT"),
    "flac24": ("flac", "FLAC", "PCM_24"),
    "flac16": ("flac", "FLAC", "PCM_16"),
    "mp3": ("mp3", "MP3", "MPEG_LAYER_III"),
}


def pcm_bits(fmt: str) -> int | None:
    """Word length of a fixed-point delivery format (24 or 16), None for float and MP3."""
    return PCM_BITS.get(FORMATS[fmt][2])


def is_lossless(fmt: str) -> bool:
    """Whether a delivery format stores its samples exactly (WAV, FLAC; not MP3)."""
    return FORMATS[fmt][1] != "MP3"


def encode(x: np.ndarray, fs: int, path: str | os.PathLike, fmt: str = "wav24") -> str:
    """Write ``x`` (channels, samples) to ``path`` atomically in delivery format ``fmt``.

    The file is written under a temporary name in the same folder and renamed
    into place, so a crash never leaves a half-written file under the final name.
    Fixed-point formats (24 and 16 bit) get the samples rounded to the nearest
    step of their grid here (:func:`acetate.kernels.dither.quantize`, block by
    block; libsndfile's own conversion truncates for WAV), so the file decodes
    to exactly ``quantize(x, bits)``. Dither *before* calling this for 16-bit
    delivery (:func:`acetate.kernels.dither.tpdf_dither_quantize`): dithered
    samples are on the grid already and pass unchanged.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(FORMATS)}")
    _, container, subtype = FORMATS[fmt]
    # libsndfile: compression level 0 = highest MP3 bit rate (320 kbps), constant.
    extra = {"compression_level": 0.0, "bitrate_mode": "CONSTANT"} if fmt == "mp3" else {}
    x = np.asarray(x, dtype=np.float32)
    bits = pcm_bits(fmt)

    def _w(tmp: str) -> None:
        with sf.SoundFile(tmp, "w", int(fs), x.shape[0], subtype=subtype, format=container, **extra) as f:
            pcm = None if bits is None else np.empty((min(_IO_BLOCK, x.shape[1]), x.shape[0]), dtype=np.int32)
            for a in range(0, x.shape[1], _IO_BLOCK):  # interleave block by block: no full copy
                blk = x[:, a : a + _IO_BLOCK]
                if pcm is None:
                    f.write(np.ascontiguousarray(blk.T))
                    continue
                # Integers, left-justified in int32 (libsndfile's integer full scale): the codec
                # stores the steps as given, with no float conversion of its own.
                b = pcm[: blk.shape[1]]
                k = dither.quantize_steps(blk, bits)
                if not bool(np.isfinite(k).all()):  # NaN would cast to an arbitrary integer
                    raise ValueError(f"non-finite samples cannot be written as {subtype}")
                for ch in range(k.shape[0]):  # whole numbers: the cast is exact; a channel at a
                    b[:, ch] = k[ch]  # time (4x faster than one transposing cast of the block)
                b *= 1 << (32 - bits)  # exact: |k| <= 2**(bits-1) fits int32 after the scaling
                f.write(b)

    return files.atomic_write(path, _w)


def dual_mono(x: np.ndarray) -> np.ndarray:
    """Mono programme as two identical channels; anything else unchanged.

    Acetate delivers mono input as dual-mono stereo, so every stage that masters or
    fingerprints a track measures it that way (:func:`acetate.pipeline.stages.decode`:
    ``master``, ``run`` and its album gains, ``analyze``, ``training-data``); a mono file
    reads 3.01 LU lower than the same samples in both channels. The meter
    (``acetate loudness``) and the pairs of ``acetate learn`` measure files as they are.
    """
    return np.concatenate([x, x]) if x.ndim == 2 and x.shape[0] == 1 else x


def decode_programme(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """:func:`decode`, then :func:`dual_mono`: the programme as Acetate delivers and measures it."""
    x, fs = decode(path)
    return dual_mono(x), fs


def list_audio(paths: list[str]) -> list[str]:
    """Expand folders to the audio files inside (sorted, recursive); keep files as given.

    Inside a folder, every entry with an audio extension that is not itself a folder is
    listed, regular or not (a FIFO, a device, a dangling link or a link loop named
    ``*.wav``), so that it gets an error row of its own rather than a silent skip;
    nothing is opened here. Hidden names (``.*``) are left out, symbolic links to
    folders are not followed.
    """
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(
                sorted(
                    str(f)
                    for f in Path(p).rglob("*")
                    if f.suffix.lower() in AUDIO_EXTENSIONS and not f.name.startswith(".") and not f.is_dir()
                )
            )
        else:
            out.append(p)
    return out
