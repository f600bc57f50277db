"""Declarative job definitions (YAML) shipped with Acetate."""
