"""Annotation projects: the data engine's human loop (SQLite store, stages, retraining)."""
