"""Per-track stages (decode, analyse, select, render, verify, write) and batch orchestration."""
