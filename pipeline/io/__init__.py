"""The edges of the pipeline: decoding and encoding audio, atomic files and input checks, the output root's datasets, ledger and lock."""
