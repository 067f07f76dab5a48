"""Where figures go: PNG files the README embeds, beside the rendered reports."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["save_figure"]


def save_figure(fig: Figure, name: str, figures_dir: str | os.PathLike[str] | None) -> Path | None:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` (nothing when ``figures_dir`` is empty)."""
    if not figures_dir:
        return None
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
