"""`acetate analyze`: one Parquet row per input with the versioned features schema."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from acetate.pipeline import cli
from acetate.pipeline.catalogue import demo
from acetate.schemas.features import FEATURE_NAMES, FEATURES_SCHEMA


def test_analyze_writes_features_parquet_with_error_rows(tmp_path, capsys):
    fs = 22050
    sf.write(tmp_path / "bright.flac", demo.render_style("pop", 3.0, fs).T, fs)
    sf.write(tmp_path / "spoken.wav", demo.render_style("spoken", 3.0, fs).T, fs)
    (tmp_path / "junk.wav").write_bytes(b"RIFF....WAVEnot really")
    out = tmp_path / "out" / "features.parquet"
    rc = cli.main(["analyze", str(tmp_path), "--out", str(out)])
    assert rc == 1  # one input failed, the others are still there
    table = pq.read_table(out)
    assert table.schema.equals(FEATURES_SCHEMA, check_metadata=True)
    assert table.schema.metadata[b"acetate.schema_version"] == b"1.0"
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in table.to_pylist()}
    assert set(rows) == {"bright.flac", "spoken.wav", "junk.wav"}
    assert rows["junk.wav"]["error"] and rows["junk.wav"]["integrated_lufs"] is None
    good = rows["bright.flac"]
    assert good["error"] is None and good["sample_rate"] == fs and good["channels"] == 2
    assert all(name in good for name in FEATURE_NAMES)
    # The features mean something: mono speech has no side; the pop mix has stereo content.
    assert rows["spoken.wav"]["correlation_overall"] == pytest.approx(1.0, abs=1e-6)
    assert good["correlation_overall"] < 0.999
    assert np.isfinite(good["integrated_lufs"]) and -40 < good["integrated_lufs"] < -10
