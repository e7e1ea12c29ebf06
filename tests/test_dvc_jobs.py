"""tools/dvc_jobs.py on a small DVC repository: pending stages run side by side, each recorded in dvc.lock exactly as
`dvc repro` records it; a stage whose input another pending stage makes is refused; a failure is reported and not
recorded."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

PIPELINE = """
stages:
  make:
    foreach: [a, b, c]
    do:
      cmd: >-
        python -c "import os, time; t = time.time(); time.sleep(0.3); n = os.environ['OMP_NUM_THREADS'];
        open('out_${item}.txt', 'w').write(f'{n} {t} {time.time()}')"
      outs:
        - out_${item}.txt:
            cache: false
  join:
    cmd: cat out_a.txt out_b.txt > joined.txt
    deps: [out_a.txt, out_b.txt]
    outs:
      - joined.txt:
          cache: false
  fail:
    cmd: python -c "raise SystemExit(3)"
    outs:
      - never.txt:
          cache: false
  staged:
    cmd: >-
      python -c "import os, pathlib; p = pathlib.Path('parts.txt'); p.touch();
      p.write_text(p.read_text() + os.environ.get('LEMORE_STAGE_MINUTES', '-') + ' ');
      done = len(p.read_text().split()) >= 3; done and pathlib.Path('staged.txt').write_text(p.read_text());
      raise SystemExit(0 if done else 75)"
    outs:
      - staged.txt:
          cache: false
"""


@pytest.fixture(scope="module")
def dvc_jobs():
    spec = importlib.util.spec_from_file_location("dvc_jobs", ROOT / "tools" / "dvc_jobs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True,
                          check=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    dvc(tmp_path, "init", "--no-scm", "-q")
    dvc(tmp_path, "config", "core.analytics", "false")
    (tmp_path / "dvc.yaml").write_text(PIPELINE)
    monkeypatch.chdir(tmp_path)  # the pipeline's `python` is this interpreter (dvc_jobs puts its bin/ first)
    return tmp_path


def test_stages_run_side_by_side_and_are_recorded_as_dvc_repro_records_them(dvc_jobs, repo, capsys):
    assert dvc_jobs.main([str(repo / "dvc.yaml"), "make@c", "make@*", "--jobs", "2", "--threads", "2",
                          "--log-dir", str(repo / "logs")]) == 0
    out = capsys.readouterr().out
    assert out.index("make@c") < out.index("make@a") < out.index("make@b")  # the order of the patterns, then the file's
    assert [(repo / f"out_{x}.txt").read_text().split()[0] for x in "abc"] == ["1", "1", "1"]  # 2 threads, 2 jobs
    ours = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert sorted(ours) == ["make@a", "make@b", "make@c"]
    status = dvc(repo, "status", "--json").stdout
    assert "make@" not in status and "join" in status  # current now; join was not asked for
    outs = {x: (repo / f"out_{x}.txt").read_text() for x in "abc"}
    dvc(repo, "repro", "--force", "--single-item", "make@a", "make@b", "make@c")  # what dvc repro records itself
    theirs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for x in "abc":  # the same entries but for the outputs' hashes, which hold the clock
        ((repo / f"out_{x}.txt").write_text(outs[x]))
        assert {k: v for k, v in theirs[f"make@{x}"].items() if k != "outs"} == \
            {k: v for k, v in ours[f"make@{x}"].items() if k != "outs"}
        assert [o["path"] for o in theirs[f"make@{x}"]["outs"]] == [o["path"] for o in ours[f"make@{x}"]["outs"]]
    assert (repo / "logs" / "make@a.log").is_file()


def test_a_stage_whose_input_is_pending_is_refused(dvc_jobs, repo, capsys):
    assert dvc_jobs.main([str(repo / "dvc.yaml"), "make@*", "join", "--log-dir", str(repo / "logs")]) == 2
    err = capsys.readouterr().err
    assert "join depends on out_a.txt, an output of make@a" in err and "nothing was run" in err
    assert not (repo / "out_a.txt").exists() and not (repo / "dvc.lock").exists()


def test_a_failed_stage_is_reported_and_not_recorded(dvc_jobs, repo, capsys):
    assert dvc_jobs.main([str(repo / "dvc.yaml"), "fail", "make@a", "--log-dir", str(repo / "logs")]) == 1
    err = capsys.readouterr().err
    assert "fail: exit 3" in err
    assert sorted(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == ["make@a"]


def test_unknown_patterns_name_the_stages(dvc_jobs, repo):
    with pytest.raises(SystemExit, match=r"no stage matches \['mkae@\*'\].*'make@a'"):
        dvc_jobs.main([str(repo / "dvc.yaml"), "mkae@*"])


def test_stages_kept_apart_never_overlap(dvc_jobs, repo):
    assert dvc_jobs.main([str(repo / "dvc.yaml"), "make@*", "--jobs", "3", "--apart", "make@[ab]",
                          "--log-dir", str(repo / "logs")]) == 0
    span = {x: [float(v) for v in (repo / f"out_{x}.txt").read_text().split()[1:]] for x in "abc"}
    assert span["a"][1] <= span["b"][0] or span["b"][1] <= span["a"][0]  # a and b one after the other
    assert span["c"][0] < span["a"][1]  # c beside a: the job that a and b kept waiting took it


def test_a_stage_in_timed_processes_runs_again_until_it_finishes(dvc_jobs, repo, capsys):
    """--stage-minutes: each process gets $LEMORE_STAGE_MINUTES; exit 75 (unfinished) runs the command again, and the
    stage is recorded once it succeeds. Without the option, 75 is a failure like any other."""
    assert dvc_jobs.main([str(repo / "dvc.yaml"), "staged", "--stage-minutes", "2.5",
                          "--log-dir", str(repo / "logs")]) == 0
    assert (repo / "staged.txt").read_text().split() == ["2.5", "2.5", "2.5"]
    out = capsys.readouterr().out
    assert "process 1 ended after" in out and "exit 75 (unfinished: resuming)" in out and "process 3" in out
    assert sorted(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == ["staged"]
    (repo / "parts.txt").unlink()
    (repo / "dvc.lock").unlink()
    assert dvc_jobs.main([str(repo / "dvc.yaml"), "staged", "--log-dir", str(repo / "logs")]) == 1
    assert "staged: exit 75" in capsys.readouterr().err and not (repo / "dvc.lock").exists()
    with pytest.raises(SystemExit):
        dvc_jobs.main([str(repo / "dvc.yaml"), "staged", "--stage-minutes", "0"])
