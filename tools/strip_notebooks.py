"""Strip outputs from the committed notebooks: ``python tools/strip_notebooks.py [--check] [PATHS...]``.

Committed notebooks are sources (parameters + library calls); executed copies are pipeline outputs under
results/. This removes outputs, execution counts and the metadata papermill / Jupyter add when running
(``papermill``, ``widgets``, per-cell ``execution``), keeping cell tags (``parameters``). ``--check`` changes
nothing and exits 1 listing the notebooks that are not clean (the test suite runs the same check).
Default paths: ``notebooks/*.ipynb``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

NOTEBOOK_METADATA_DROP = ("papermill", "widgets", "varInspector", "toc")
CELL_METADATA_DROP = ("papermill", "execution", "collapsed", "scrolled", "ExecuteTime")


def strip(nb: dict) -> dict:
    """The notebook without outputs and run metadata (a new dict; the input is not modified)."""
    nb = json.loads(json.dumps(nb))
    for key in NOTEBOOK_METADATA_DROP:
        nb.get("metadata", {}).pop(key, None)
    for cell in nb.get("cells", []):
        for key in CELL_METADATA_DROP:
            cell.get("metadata", {}).pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def is_clean(nb: dict) -> bool:
    return strip(nb) == nb


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", type=Path)
    p.add_argument("--check", action="store_true", help="only report notebooks with outputs (exit 1 if any)")
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    paths = args.paths or sorted((root / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = json.loads(path.read_text())
        if is_clean(nb):
            continue
        dirty.append(path)
        if not args.check:
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(_dump(strip(nb)))
            os.replace(tmp, path)
            print(f"stripped {path}")
    if args.check and dirty:
        print("notebooks with outputs (run `python tools/strip_notebooks.py`):", *dirty, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
