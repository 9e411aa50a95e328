"""Adapters: turn other systems' outputs into samkit Prompts (installed as samkit.adapters)."""
