"""Progress bars: widgets in Jupyter, text lines in pipelines and log files."""

import os
import sys

from lemore import progress as P


class Recorder:
    def __init__(self, iterable=None, **kwargs):
        self.kwargs = kwargs


class Widget(Recorder):  # stands for tqdm.notebook.tqdm, which needs a running kernel
    __module__ = "tqdm.notebook"


def test_text_outside_notebooks(monkeypatch):
    monkeypatch.setattr(P, "text_tqdm", Recorder)
    bar = P.progress(total=3)
    assert not P.in_notebook() and isinstance(bar, Recorder) and bar.kwargs["file"] is sys.stderr
    assert bar.kwargs["mininterval"] == (0.1 if sys.stderr.isatty() else 30.0)  # a log file: a line every 30 s


def test_widget_in_jupyter_text_on_the_kernels_stderr_when_the_pipeline_runs_it(monkeypatch):
    monkeypatch.setattr(P, "tqdm", Widget)
    monkeypatch.setattr(P, "text_tqdm", Recorder)
    monkeypatch.delenv(P.TEXT_ENV, raising=False)
    assert P.in_notebook() and type(P.progress(total=3)) is Widget
    monkeypatch.setenv(P.TEXT_ENV, "1")  # what lemore.launch.run_notebook sets for the kernels it starts
    bar = P.progress(total=3)
    assert type(bar) is Recorder and bar.kwargs["file"] is sys.__stderr__


def test_run_notebook_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    import papermill as pm

    from lemore import launch

    monkeypatch.delenv(P.TEXT_ENV, raising=False)
    seen = {}

    def fake_execute(src, out, **kwargs):
        seen["env"] = os.environ.get(P.TEXT_ENV)
        open(out, "w").write("{}")

    monkeypatch.setattr(pm, "execute_notebook", fake_execute)
    launch.run_notebook("results", tmp_path / "out.ipynb", {"smoke": True}, stream=True)
    assert seen["env"] == "1" and P.TEXT_ENV not in os.environ
