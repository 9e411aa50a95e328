"""Pipelines: adapters + Segmenter + post-processing (installed as samkit.pipelines)."""
