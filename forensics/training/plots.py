"""matplotlib for the figures a run writes, on its file-only backend (no display on servers and in CI)."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot with the Agg backend, imported on first use (the scan side never loads matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
