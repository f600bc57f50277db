"""Versioned Arrow/Parquet schemas for every dataset Acetate writes."""
