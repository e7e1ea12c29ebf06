"""Progress bars: a widget in Jupyter (``tqdm.auto`` with ipywidgets), a live bar in a terminal, a line every
30 s in a log file or a pipe (so that ``train.log`` and the DVC pipeline's output stay readable).

A notebook that the pipeline executes (:func:`lemore.launch.run_notebook` sets :data:`TEXT_ENV`) writes text
lines to the kernel's own stderr instead of a widget: papermill copies a notebook's output streams, not widget
updates, so the terminal that runs ``dvc repro`` shows the training progress live.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm

#: Set (to anything) in a kernel's environment: progress as text lines on the process's stderr, not a widget.
TEXT_ENV = "LEMORE_PROGRESS_TEXT"


def in_notebook() -> bool:
    """True when ``tqdm.auto`` draws widgets (running in a Jupyter kernel, ipywidgets installed)."""
    return tqdm.__module__.startswith("tqdm.notebook")


def progress(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` with an update interval that suits where it is shown."""
    if in_notebook() and not os.environ.get(TEXT_ENV):
        kwargs.setdefault("mininterval", 0.5)
        return tqdm(iterable, **kwargs)
    stream = sys.__stderr__ if in_notebook() else sys.stderr
    kwargs.setdefault("mininterval", 0.1 if stream.isatty() else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return text_tqdm(iterable, file=stream, **kwargs)
