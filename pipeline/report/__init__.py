"""The review report of a run (``acetate report OUT``): a static site under ``OUT/report/``."""

from acetate.pipeline.report.build import ReportResult, build_report
from acetate.pipeline.report.data import TrackRow, TriageEntry, load_run, triage

__all__ = ["build_report", "ReportResult", "load_run", "triage", "TrackRow", "TriageEntry"]
