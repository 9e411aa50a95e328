"""The data engine: batch jobs over large image collections on Ray Data (``samkit.engine``)."""
