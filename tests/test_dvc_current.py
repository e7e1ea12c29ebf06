"""Every committed DVC pipeline is current: a commit that changes a code or params dependency of a committed stage
without its outputs (rerun the stage, commit what it wrote and dvc.lock) fails here.

What ``dvc status`` may still list, because a fresh clone cannot have it: outputs kept in DVC's cache and not in git
(the checkpoints under ``runs/``: "not in cache"), and dependencies on them ("deleted" under ``runs/``, e.g. the default
pipeline's figures stage, which reads the fine-tuned checkpoints). And stages that have never run: a long study is
committed stage by stage, over several sessions, and a stage counts once ``dvc.lock`` records it. Anything else of a
recorded stage, a changed dependency, parameter, command or an output edited by hand, makes it stale.

A contributor keeps this green by committing, with any change to a file a stage depends on (its ``deps`` and
``params`` in the pipeline's ``dvc.yaml``), the rerun: ``dvc repro <dvc.yaml>`` (or ``dvc repro -s <dvc.yaml>:<stage>``),
then ``git add`` its outputs and ``dvc.lock``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = sorted(str(p.relative_to(ROOT)) for p in [ROOT / "dvc.yaml", *ROOT.glob("studies/*/dvc.yaml")])


def allowed(change: str, path: str, state: str) -> bool:
    """Whether one entry of ``dvc status --json`` is what a fresh clone shows of a current pipeline."""
    under_runs = path.replace("\\", "/").startswith("runs/")
    return under_runs and ((change == "changed outs" and state == "not in cache")
                           or (change == "changed deps" and state == "deleted"))


def recorded_stages(lock_file: Path) -> set[str]:
    """The stages a pipeline's ``dvc.lock`` records (those that have run and were committed)."""
    if not lock_file.is_file():
        return set()
    return set((yaml.safe_load(lock_file.read_text()) or {}).get("stages", {}))


def stale_entries(status: dict, recorded: set[str] | None = None) -> list[str]:
    """The entries of ``dvc status --json`` output that :func:`allowed` does not excuse, one line each; with
    ``recorded``, only for those stages (``dvc status`` names them ``<dvc.yaml>:<stage>`` outside the root)."""
    bad = []
    for stage, changes in status.items():
        if recorded is not None and stage.rsplit(":", 1)[-1] not in recorded:
            continue  # never run: not yet part of the committed study
        for item in changes:
            if isinstance(item, str):  # "changed command", "always changed", ...
                bad.append(f"{stage}: {item}")
                continue
            for change, entries in item.items():
                for path, state in (entries.items() if isinstance(entries, dict) else [(str(entries), "")]):
                    if not allowed(change, path, state):
                        bad.append(f"{stage}: {change}: {state} {path}")
    return bad


def test_the_rule_excuses_only_what_a_fresh_clone_lacks():
    status = {"finetune@synthetic-lemore-0": [{"changed outs": {"runs/synthetic/lemore/seed0": "not in cache"}}],
              "figures@synthetic": [{"changed deps": {"runs/synthetic": "deleted"}}]}
    assert stale_entries(status) == []
    status["finetune@camvid-lemore-0"] = [{"changed deps": {"lemore/engine": "modified"}},
                                          {"changed outs": {"results/camvid/metrics": "deleted"}}, "changed command"]
    assert stale_entries(status) == ["finetune@camvid-lemore-0: changed deps: modified lemore/engine",
                                     "finetune@camvid-lemore-0: changed outs: deleted results/camvid/metrics",
                                     "finetune@camvid-lemore-0: changed command"]
    assert stale_entries(status, recorded={"figures@synthetic"}) == []  # the camvid stage never ran
    status = {"studies/camvid/dvc.yaml:data": [{"changed deps": {"lemore/data": "modified"}}]}
    assert stale_entries(status, recorded={"data"}) == ["studies/camvid/dvc.yaml:data: changed deps: modified "
                                                        "lemore/data"]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_committed_pipeline_is_current(pipeline):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = Path(sys.executable).with_name("dvc")
    proc = subprocess.run([str(dvc), "status", "--json", pipeline], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bad = stale_entries(json.loads(proc.stdout or "{}"), recorded_stages((ROOT / pipeline).with_suffix(".lock")))
    assert not bad, (f"{pipeline} has stale stages: rerun them (`dvc repro {pipeline}`, or `dvc repro -s "
                     f"{pipeline}:<stage>`) and commit their outputs and dvc.lock:\n" + "\n".join(bad))
