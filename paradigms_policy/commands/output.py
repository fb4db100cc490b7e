"""What the commands share for their results: JSON files and matplotlib figures saved as PNG."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def write_json(document: Any, path: str | Path) -> None:
    """`document` as indented JSON at `path` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


@contextmanager
def saved_figure(path: str | Path, ncols: int = 1, figsize: tuple[float, float] = (6.4, 3.8)) -> Iterator[Any]:
    """A figure with `ncols` axes (one axis, or a tuple of them) written to `path` as a PNG when the block ends.

    matplotlib is imported here, with the Agg back end, so that commands without plots never need it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield axes
        figure.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
    finally:
        plt.close(figure)
