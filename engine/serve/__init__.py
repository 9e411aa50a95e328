"""Model servers for labelling tools (Label Studio ML backend)."""
