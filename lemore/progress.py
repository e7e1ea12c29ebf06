"""Progress bars: a widget in Jupyter (``tqdm.auto`` with ipywidgets), a live bar in a terminal, a line every
30 s in a log file or a pipe (so that ``train.log`` / DVC output stay readable)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def in_notebook() -> bool:
    """True when ``tqdm.auto`` draws widgets (running in a Jupyter kernel, ipywidgets installed)."""
    return tqdm.__module__.startswith("tqdm.notebook")


def progress(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` with an update interval that suits where it is shown."""
    if in_notebook():
        kwargs.setdefault("mininterval", 0.5)
    else:
        kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 30.0)
        kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
