"""Writing a finished matplotlib figure to a file, the same way everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(figure: Any, path: Path, dpi: int = 100, tight_layout: bool = True, **savefig: Any) -> Path:
    """Lay ``figure`` out (unless ``tight_layout`` is off), write it to ``path`` (its folder created
    when missing), close it so pyplot lets go of its memory, and return ``path``; ``savefig`` passes
    on to :meth:`matplotlib.figure.Figure.savefig` (``bbox_inches="tight"`` for a colorbar that
    spans panels, where the layout engine would warn)."""
    import matplotlib.pyplot as plt

    if tight_layout:
        figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, **savefig)
    plt.close(figure)
    return path
