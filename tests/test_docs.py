"""Every command and every relative link in README.md and docs/*.md works as shown from a fresh clone.

Commands are the lines of the ```bash blocks (a trailing backslash continues a line, ``# ...`` is a comment,
leading ``NAME=value`` environment assignments are set aside). Each command is classified in one of two tables
below, and a command in neither fails :func:`test_every_command_is_classified`:

* :data:`RUN`: cheap and read-only, run as shown (from the repository root, with this interpreter as
  ``python``); it must exit 0 and print what the table says.
* :data:`NOT_RUN`: needs data, a GPU, SLURM, the network, or minutes to hours, or rewrites committed results;
  the table says which. It is checked without running anything: ``python X.py ...`` and ``python -m M ...`` go
  through their own argument parser (the real ``argparse`` parser, stopped once it has parsed, so an unknown
  option, a bad choice or a missing required argument fails here; a script without a parser must be shown
  without arguments); ``torchrun`` / ``python -m torch.distributed.run`` through torchrun's parser and then
  the training module's; ``papermill`` through papermill's CLI, with the notebook present and every
  ``-p NAME`` one of its parameters (``papermill.inspect_notebook``); ``make X`` with X a rule of the Makefile
  and ``make -n`` accepting it (and ``BENCH_ARGS`` through the benchmark's parser); ``dvc`` through DVC's
  parser, with every ``dvc.yaml`` target present, every ``file:stage`` / stage a stage of it and every
  ``-S key=value`` a key of params.yaml; ``sbatch`` with its script present; ``git clone`` with a GitHub URL.

Links: every ``[text](path)`` and image outside code, relative to the file, must exist, and every ``#anchor``
must be a heading of its target; so must every repository path written in inline code. Paths that pipelines
still being run will write (:data:`PRODUCED_LATER`) are exempt, so the README can show the CamVid figures
before they exist. The README's latency and budget tables must hold the numbers of the committed
results/benchmarks/latency.md and results/profile/budget.md, and the README at most 200 lines. The last tests
feed each checker a broken command, link or number, so that none of them passes by checking nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

#: Written by pipelines and benchmarks that have not run in this commit: links and inline paths there are not
#: checked.
PRODUCED_LATER = (
    "results/camvid/",  # dvc repro studies/camvid/dvc.yaml (tables, figures, weights, profile, data.json)
    "results/benchmarks/gpu.",  # make gpu-check, on a CUDA machine
)

#: Commands run as shown: the whole command (environment assignments aside) -> a string its stdout must
#: contain.
RUN = {
    "python -m lemore --help": "train",
    "python -m lemore train --help": "--dataset",
    "python -m lemore.summary": "Where everything is",
    "python benchmarks/latency.py --help": "--runs",
}

#: Commands checked without running, by the first words they start with (the longest match wins), and why.
NOT_RUN = {
    "make demo": "installs the environment, then trains two models: about a quarter of an hour",
    "make test": "the whole test suite (this file is part of it)",
    "make bench": "the latency benchmark: about 4 minutes; rewrites results/benchmarks/latency.*",
    "make bench-engine": "about 15 minutes; rewrites results/benchmarks/engine_throughput.*",
    "make gpu-check": "needs a CUDA GPU",
    "dvc repro": "trains: minutes (the default pipeline) to hours with the data (CamVid, the paper's "
                 "datasets)",
    "dvc exp run": "trains three seeds of the default study: about half an hour",
    "papermill": "a notebook run trains: hours with the dataset (ADE20K, Cityscapes) and GPUs; with "
                 "smoke=True it is the run tests/test_notebooks.py already makes of every notebook",
    "torchrun": "DDP training on several GPUs with the dataset",
    "python -m torch.distributed.run": "multi-node DDP training: several machines with GPUs",
    "sbatch": "needs a SLURM cluster",
    "git clone": "needs the network",
    "python -m lemore train": "trains for hours and needs the dataset (ADE20K, Cityscapes)",
    "python -m lemore eval": "needs trained or official weights and the dataset (ADE20K, CamVid)",
    "python -m lemore pretrain": "needs ImageNet-1K and GPUs",
    "python -m lemore predict": "needs a trained checkpoint and images",
    "python -m lemore export": "exports and runs ONNX Runtime (tens of seconds) and writes a file into the "
                               "working tree",
    "python -m lemore profile": "times models: minutes",
    "python -m lemore data check": "needs the dataset (ADE20K, CamVid), which is not on these machines",
    "python -m lemore data synth": "writes the dataset into data/ (make demo and the notebook tests generate "
                                   "it)",
    "python -m lemore data convert-coco-stuff": "needs COCO-Stuff-10k",
    "python -m lemore.budget": "counts every budget configuration with fvcore: about a minute on 2 cores",
    "python benchmarks/latency.py": "minutes; rewrites results/benchmarks/latency.*",
    "python benchmarks/latency_ops.py": "minutes; rewrites results/benchmarks/latency_ops.*",
    "python benchmarks/data_pipeline.py": "rewrites results/benchmarks/data_pipeline.* (it takes no "
                                          "arguments)",
    "python benchmarks/train_throughput.py": "minutes; rewrites results/benchmarks/ (channels_last_cpu.*)",
    "python benchmarks/train_loader.py": "about 5 minutes on 2 cores; rewrites results/benchmarks/train_loader.*",
    "python benchmarks/synthetic_cpu.py": "trains for 20 minutes and more",
    "python benchmarks/reproducibility.py": "retrains the demo's models: about 45 minutes",
    "python benchmarks/parallel_runs.py": "about 5 minutes on 2 cores; rewrites results/benchmarks/parallel_runs.*",
    "python tools/dvc_jobs.py": "trains the CamVid study's stages: hours (tests/test_dvc_jobs.py runs it on a small "
                                "pipeline)",
    "python studies/camvid/search.py": "trains on CamVid for hours, or (--summary) rewrites a search's "
                                       "summary.md under results/camvid/",
}

#: ``python -m PACKAGE`` whose ``__main__`` hands over to another module's ``main``, which parses the
#: arguments.
MAIN_DELEGATES = {"lemore": "lemore.cli"}
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# ----------------------------------------------------------------------------------------------- extraction
def _fenced(text: str) -> list[tuple[str, int, str]]:
    """(language, line number of the first body line, body) of every fenced block."""
    out = []
    for m in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        out.append((m.group(1), text.count("\n", 0, m.start(2)) + 1, m.group(2)))
    return out


def doc_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every command line of the ```bash blocks of ``text``."""
    commands = []
    for lang, first, body in _fenced(text):
        if lang != "bash":
            continue
        pending, start = "", None
        for i, line in enumerate(body.splitlines()):
            if start is None:
                start = first + i
            stripped = line.strip()
            if stripped.endswith("\\"):
                pending += stripped[:-1].rstrip() + " "
                continue
            command, pending = (pending + stripped).strip(), ""
            if command and not command.startswith("#"):
                commands.append((start, command))
            start = None
    return commands


def split_command(command: str) -> tuple[dict[str, str], list[str]]:
    """(environment assignments, words) of a command line, comments dropped; ``python3`` reads as
    ``python``."""
    words = shlex.split(command, comments=True)
    env = {}
    while words and _ENV.match(words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if words and words[0] == "python3":
        words[0] = "python"
    return env, words


def all_commands() -> list[tuple[str, int, str]]:
    return [(p.relative_to(ROOT).as_posix(), n, c) for p in DOCS for n, c in doc_commands(p.read_text())]


COMMANDS = all_commands()
IDS = [f"{f}:{n}" for f, n, _ in COMMANDS]


def classify(command: str) -> tuple[str, str] | None:
    """("run", expected output) or ("not run", reason), or None for a command in neither table."""
    words = split_command(command)[1]
    if " ".join(words) in RUN:
        return "run", RUN[" ".join(words)]
    matches = [k for k in NOT_RUN if words[: len(k.split())] == k.split()]
    return ("not run", NOT_RUN[max(matches, key=len)]) if matches else None


# ----------------------------------------------------------------------------------------------- checkers
class _Parsed(BaseException):
    """Raised by the patched ``ArgumentParser.parse_args`` once the arguments have parsed: nothing else
    runs."""

    def __init__(self, namespace: argparse.Namespace):
        super().__init__()
        self.namespace = namespace


@contextlib.contextmanager
def _stop_after_parsing():
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    saved = (list(sys.argv), list(sys.path), dict(os.environ))
    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv[:], sys.path[:] = saved[0], saved[1]
        os.environ.clear()
        os.environ.update(saved[2])


def _entry_source(args: list[str]) -> tuple[str, Path | None]:
    """(what runs, the file whose source parses its arguments), or (what, None) where there is no such
    file."""
    import importlib.util

    if args[0] == "-m":
        name = MAIN_DELEGATES.get(args[1], args[1])
        try:
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.submodule_search_locations:  # a package: its __main__
                spec = importlib.util.find_spec(f"{name}.__main__")
        except ModuleNotFoundError:
            spec = None
        return f"python -m {args[1]}", Path(spec.origin) if spec and spec.origin else None
    path = ROOT / args[0]
    return f"python {args[0]}", path if path.is_file() else None


def check_python(args: list[str]) -> list[str]:
    """Problems of ``python ARGS`` (``-m MODULE ...`` or ``SCRIPT ...``), found by the program's own
    parser."""
    if not args or (args[0] == "-m" and len(args) < 2):
        return [f"python {' '.join(args)}: no script or module"]
    what, source = _entry_source(args)
    if source is None:
        return [f"{what}: no such script or module"]
    rest = args[2:] if args[0] == "-m" else args[1:]
    if "parse_args(" not in source.read_text():
        # No argument parser: it would run whatever it is given, so it is never started here.
        return [f"{what} takes no arguments, but the command passes {rest}"] if rest else []
    if args[:2] == ["-m", "torch.distributed.run"]:
        return check_torchrun(rest)
    out, err = io.StringIO(), io.StringIO()
    try:
        with _stop_after_parsing(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.argv[:] = [str(source), *rest]
            if args[0] == "-m":
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(source), run_name="__main__")
    except _Parsed:
        return []
    except SystemExit as e:
        if e.code in (0, None) and ("--help" in rest or "-h" in rest):
            return []
        return [f"{what} {' '.join(rest)}: exit {e.code}: {err.getvalue().strip()[-600:]}"]
    except Exception as e:  # noqa: BLE001 (an import error, a parser that raises: reported, not raised)
        return [f"{what} {' '.join(rest)}: {type(e).__name__}: {e}"]
    return [f"{what} {' '.join(rest)}: ran to the end without parsing its arguments"]


def check_torchrun(args: list[str]) -> list[str]:
    """torchrun's own parser, then the training module's or script's."""
    from torch.distributed.run import get_args_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = get_args_parser().parse_args(args)
    except SystemExit as e:
        return [f"torchrun {' '.join(args)}: exit {e.code}: {err.getvalue().strip()[-600:]}"]
    target = ["-m", ns.training_script] if ns.module else [ns.training_script]
    return check_python([*target, *ns.training_script_args])


def makefile_rules() -> dict[str, list[str]]:
    """Makefile target -> its recipe lines."""
    rules: dict[str, list[str]] = {}
    current = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.$()/-]+):(?!=)", line)
        if m:
            current = rules.setdefault(m.group(1), [])
        elif line.startswith("\t") and current is not None:
            current.append(line.strip())
        else:
            current = None
    return rules


def check_make(args: list[str]) -> list[str]:
    targets = [a for a in args if "=" not in a and not a.startswith("-")]
    variables = dict(a.split("=", 1) for a in args if "=" in a)
    rules = makefile_rules()
    problems = [f"make {t}: no such target in the Makefile" for t in targets if t not in rules]
    if problems:
        return problems
    dry = subprocess.run(["make", "-n", *args], check=False, cwd=ROOT, capture_output=True, text=True)
    if dry.returncode != 0:
        problems.append(f"make -n {' '.join(args)}: exit {dry.returncode}: {dry.stderr.strip()[-400:]}")
    if "BENCH_ARGS" in variables:
        recipe = " ".join(line for t in targets for line in rules[t])
        script = re.search(r"(\S+\.py) \$\(BENCH_ARGS\)", recipe)
        if script is None:
            problems.append(f"make {' '.join(targets)}: BENCH_ARGS given, but the recipe does not use it")
        else:
            problems += check_python([script.group(1), *shlex.split(variables["BENCH_ARGS"])])
    return problems


def check_papermill(args: list[str]) -> list[str]:
    import click
    import papermill
    from papermill.cli import papermill as cli

    try:
        ctx = cli.make_context("papermill", list(args))
    except click.ClickException as e:
        return [f"papermill {' '.join(args)}: {e.format_message()}"]
    notebook = ROOT / ctx.params["notebook_path"]
    if not notebook.is_file():
        return [f"papermill: no notebook {ctx.params['notebook_path']}"]
    known = set(papermill.inspect_notebook(str(notebook)))
    given = [name for name, _ in [*ctx.params["parameters"], *ctx.params["parameters_raw"]]]
    return [f"papermill: {name!r} is not a parameter of {notebook.name} ({sorted(known)})"
            for name in given if name not in known]


def _dvc_stages(path: Path) -> set[str]:
    return set((yaml.safe_load(path.read_text()) or {}).get("stages", {}))


def check_dvc(args: list[str]) -> list[str]:
    from dvc.cli import DvcParserError, parse_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            ns = parse_args(list(args))
    except (SystemExit, DvcParserError):
        return [f"dvc {' '.join(args)}: DVC's parser refuses it: {err.getvalue().strip()[-400:]}"]
    problems = []
    for target in getattr(ns, "targets", None) or []:
        file, _, stage = target.partition(":") if ".yaml" in target else ("dvc.yaml", "", target)
        path = ROOT / file
        if not path.is_file():
            problems.append(f"dvc {args[0]}: no pipeline file {file}")
        elif stage and stage.split("@")[0] not in _dvc_stages(path):
            problems.append(f"dvc {args[0]}: {file} has no stage {stage!r} ({sorted(_dvc_stages(path))})")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for assignment in getattr(ns, "set_param", None) or []:
        for item in [assignment] if isinstance(assignment, str) else assignment:
            node = params
            for key in item.split("=", 1)[0].split("."):
                if not isinstance(node, dict) or key not in node:
                    problems.append(f"dvc {' '.join(args)}: params.yaml has no key {item.split('=', 1)[0]!r}")
                    break
                node = node[key]
    return problems


def check_command(command: str) -> list[str]:
    """Every problem of one documented command, found without running it."""
    _, words = split_command(command)
    program, args = words[0], words[1:]
    if program == "python":
        return check_python(args)
    if program == "torchrun":
        return check_torchrun(args)
    if program == "make":
        return check_make(args)
    if program == "papermill":
        return check_papermill(args)
    if program == "dvc":
        return check_dvc(args)
    if program == "sbatch":
        scripts = [a for a in args if not a.startswith("-")]
        found = scripts and (ROOT / scripts[0]).is_file()
        return [] if found else [f"sbatch {' '.join(args)}: no such script"]
    if program == "git" and args[:1] == ["clone"]:
        return [] if len(args) >= 2 and re.match(r"^https://github\.com/[\w.-]+/[\w.-]+$", args[1]) else [
            f"git {' '.join(args)}: not a GitHub URL"]
    return [f"{program}: no checker for this program; add one to tests/test_docs.py"]


# ----------------------------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (code marks included) dropped, spaces to
    hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    prose = _outside_code(text)
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", prose, flags=re.MULTILINE):
        slug = _slug(m.group(1))
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def _outside_code(text: str) -> str:
    """``text`` with fenced blocks blanked (line numbers kept)."""
    def blank(m: re.Match) -> str:
        return "\n" * m.group(0).count("\n")

    return re.sub(r"^```.*?^```", blank, text, flags=re.MULTILINE | re.DOTALL)


def _produced_later(rel: str) -> bool:
    return any(rel.startswith(p) for p in PRODUCED_LATER)


def link_problems(text: str, base: Path) -> list[str]:
    """Relative links and images of ``text`` (a file in ``base``) that point at nothing."""
    prose = re.sub(r"`[^`\n]*`", "", _outside_code(text))
    problems = []
    for m in re.finditer(r"!?\[[^\]\n]*\]\(([^)\s]+)\)", prose):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (base / path).resolve() if path else None
        if file is not None:
            try:
                rel = file.relative_to(ROOT).as_posix()
            except ValueError:
                problems.append(f"{target}: outside the repository")
                continue
            if _produced_later(rel):
                continue
            if not file.exists():
                problems.append(f"{target}: no such file or folder")
                continue
        in_markdown = file is None or file.suffix == ".md"
        if anchor and in_markdown and anchor not in anchors(file.read_text() if file is not None else text):
            problems.append(f"{target}: no heading #{anchor} there")
    return problems


def inline_path_problems(text: str) -> list[str]:
    """Repository paths written in inline code (`lemore/...`, `results/...`) that do not exist."""
    problems = []
    for m in re.finditer(r"`((?:lemore|benchmarks|notebooks|studies|tests|docs|tools|results)/[^`\s]*)`",
                         _outside_code(text)):
        rel, _, test = m.group(1).partition("::")  # a pytest node id: the file, then the test in it
        if re.search(r"[<>{}*]", rel) or _produced_later(rel):
            continue
        if not (ROOT / rel).exists():
            problems.append(f"`{rel}`: no such file or folder")
        elif test and f"def {test.split('::')[-1].split('[')[0]}(" not in (ROOT / rel).read_text():
            problems.append(f"`{m.group(1)}`: no such test in {rel}")
    return problems


# ----------------------------------------------------------------------------------------------- the tests
def test_the_docs_have_commands():
    assert len(COMMANDS) >= 40, f"only {len(COMMANDS)} commands found: is the ```bash extraction broken?"


@pytest.mark.parametrize(("doc", "line", "command"), COMMANDS, ids=IDS)
def test_every_command_is_classified(doc, line, command):
    assert classify(command) is not None, (
        f"{doc}:{line}: `{command}` is in neither RUN nor NOT_RUN of tests/test_docs.py: run it there if it "
        "is cheap and read-only, else add it to NOT_RUN with the reason")


def test_every_table_entry_is_used():
    words = [" ".join(split_command(c)[1]) for _, _, c in COMMANDS]
    unused = [k for k in RUN if k not in words] + [k for k in NOT_RUN if not any(
        w == k or w.startswith(k + " ") for w in words)]
    assert not unused, f"no command in the docs starts with {unused}: remove them from RUN / NOT_RUN"


@pytest.mark.parametrize(("doc", "line", "command"), COMMANDS, ids=IDS)
def test_every_command_is_valid_as_shown(doc, line, command):
    assert check_command(command) == [], f"{doc}:{line}: `{command}`"


@pytest.mark.parametrize("command", sorted(RUN))
def test_cheap_commands_run(command):
    env, words = split_command(command)
    words = [sys.executable if w == "python" and i == 0 else w for i, w in enumerate(words)]
    run = subprocess.run(words, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert RUN[command] in run.stdout


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_links_and_anchors_resolve(doc):
    assert link_problems(doc.read_text(), doc.parent) == []


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_paths_in_inline_code_exist(doc):
    assert inline_path_problems(doc.read_text()) == []


def _table_under(text: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first table after the heading that starts with ``heading``, header excluded."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2 : end]]


LATENCY_NAMES = {"LeMoRe": "lemore", "SegFormer-B0": "segformer_b0",
                 "LR-ASPP MobileNetV3-Large": "lraspp_mobilenet_v3_large",
                 "LR-ASPP MobileNetV3-Large reduced": "lraspp_mobilenet_v3_large_reduced",
                 "TopFormer-T": "topformer_t", "SeaFormer-T": "seaformer_t"}


def latency_problems(readme: str) -> list[str]:
    """README latency cells missing from their model's rows in results/benchmarks/latency.md."""
    source = (ROOT / "results" / "benchmarks" / "latency.md").read_text().splitlines()
    rows = _table_under(readme, "### Speed")
    problems = [] if [r[0] for r in rows] == list(LATENCY_NAMES) else [f"models {[r[0] for r in rows]}"]
    for row in rows:
        theirs = " ".join(line for line in source if line.startswith(f"| {LATENCY_NAMES.get(row[0])} |"))
        problems += [f"{row[0]}: {c}" for c in row[1:] if c not in theirs]
    return problems


def budget_problems(readme: str) -> list[str]:
    """Values of the README's "(ours)" budget columns that results/profile/budget.md does not hold."""
    source = {float(x) for x in re.findall(r"\b\d+\.\d+\b", (ROOT / "results/profile/budget.md").read_text())}
    rows = _table_under(readme, "### Budgets")
    return [f"{r[0]}: {r[i]}" for r in rows for i in (1, 3) if float(r[i]) not in source]


def search_problems(readme: str) -> list[str]:
    """README rows of the CamVid search table (run, model, crop and resize, lr, iterations, val mIoU, minutes, CPU)
    that differ from the run's results/camvid/search2/<run>.json, rounded as the README shows them; the CPU as the
    search's summary names it, where the run recorded it (runs before that name their machine in the text)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("camvid_search", ROOT / "studies" / "camvid" / "search.py")
    search = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search)
    problems = []
    for row in _table_under(readme, "### CamVid"):
        path = ROOT / "results" / "camvid" / "search2" / f"{row[0]}.json"
        if not path.is_file():
            problems.append(f"{row[0]}: no {path.relative_to(ROOT)}")
            continue
        r = json.loads(path.read_text())
        c, total = r["config"], r["timing"].get("total", r["timing"])
        (h, w), (lo, hi) = c["data"]["crop_size"], c["data"]["ratio_range"]
        want = [row[1] == c["model"]["name"], row[2] == f"{h}x{w}, {lo:g}-{hi:g}",
                float(row[3]) == c["train"]["lr"], int(row[4]) == c["train"]["iters"],
                _shows_roundings(row[5], [str(r["metrics"]["miou"])]),
                _shows_roundings(row[6], [str((total["loop_s"] + total["eval_s"]) / 60)])]
        machines = r.get("search", {}).get("machines")
        cpu = row[7] if len(row) > 7 else "(no CPU cell)"
        want.append(len(row) > 7 and (not machines or cpu == search.cpu_label(machines)))
        problems += [f"{row[0]}: {cell!r}" for cell, ok in zip([*row[1:7], cpu], want) if not ok]
    return problems


CAMVID_TABLES = ROOT / "results" / "camvid" / "tables"


def _csv_by(path: Path, key: str) -> dict[str, dict[str, str]]:
    import csv

    with open(path, newline="") as f:
        return {r[key]: r for r in csv.DictReader(f)}


def _cell_problems(name: str, cells: list[tuple[str, list[str]]]) -> list[str]:
    """``(README cell, CSV values)`` pairs whose cell does not show, in order, roundings of the values that are not
    empty (an empty CSV cell is a number the README must not show)."""
    return [f"{name}: {cell!r}, expected roundings of {[w for w in want if w != '']}" for cell, want in cells
            if not _shows_roundings(cell.replace("n=", ""), [w for w in want if w != ""])]


def camvid_problems(readme: str, tables: Path = CAMVID_TABLES) -> list[str]:
    """README rows of the CamVid study table (model, lr, val mIoU mean ± std (n=...), LeMoRe minus it [95% interval],
    params, GFLOPs, ms (ratio to LR-ASPP), the published ADE20K mIoU) that differ from camvid_models.csv and
    camvid_pairs.csv, rounded as the README shows them; and the models missing from the README."""
    models, pairs = _csv_by(tables / "camvid_models.csv", "model"), _csv_by(tables / "camvid_pairs.csv", "model")
    rows = _table_under(readme, "### CamVid")
    problems = [f"{m}: not in the README" for m in models if m not in [r[0] for r in rows]]
    for row in rows:
        r, p = models.get(row[0]), pairs.get(row[0], {})
        if r is None or len(row) != 8:
            problems.append(f"{row[0]}: not in camvid_models.csv" if r is None else f"{row[0]}: {len(row)} cells")
            continue
        if (row[1], r["lr"]) != ("", "") and (not row[1] or not r["lr"] or float(row[1]) != float(r["lr"])):
            problems.append(f"{row[0]}: lr {row[1]}, the runs' {r['lr']}")
        vs = [p.get(c, "") for c in ("difference (reference - model)", "95% ci low", "95% ci high")]
        problems += _cell_problems(row[0], [
            (row[2], [r["val miou"], r["val miou std"], r["n"]]), (row[3], vs), (row[4], [r["params_m"]]),
            (row[5], [r["gflops (360x480)"]]), (row[6], [r["latency_ms (360x480)"], r["latency ratio to LR-ASPP"]]),
            (row[7], [r["ade20k miou (published)"]])])
    return problems


def schedule_problems(readme: str, tables: Path = CAMVID_TABLES) -> list[str]:
    """README rows of the doubling check (model, seed 0 at the schedule (rank), at twice it (rank), the mean
    last-quarter gain over the seeds, seed 0's at twice the schedule) that differ from camvid_schedules.csv and
    camvid_models.csv."""
    sched, models = _csv_by(tables / "camvid_schedules.csv", "model"), _csv_by(tables / "camvid_models.csv", "model")
    problems = []
    for row in _table_under(readme, "### Twice the schedule"):
        r = sched.get(row[0])
        if r is None or len(row) != 5:
            problems.append(f"{row[0]}: not in camvid_schedules.csv" if r is None else f"{row[0]}: {len(row)} cells")
            continue
        problems += _cell_problems(row[0], [
            (row[1], [r["seed-0 miou"], r["rank"]]), (row[2], [r["seed-0 miou (long)"], r["rank (long)"]]),
            (row[3], [models[row[0]]["last-quarter gain"]]), (row[4], [r["last-quarter gain (long)"]])])
    return problems


def ablation_problems(readme: str, tables: Path = CAMVID_TABLES) -> list[str]:
    """README rows of Table 2 on CamVid (switch (from to to), the paper's ADE20K gain, ours [95% interval], Welch's
    p, the verdict) that differ from camvid_gains.csv, rounded as the README shows them."""
    gains = _csv_by(tables / "camvid_gains.csv", "switch")
    problems = []
    for row in _table_under(readme, "### Table 2"):
        r = gains.get(row[0].split(" (")[0])
        if r is None or len(row) != 5:
            problems.append(f"{row[0]}: not in camvid_gains.csv" if r is None else f"{row[0]}: {len(row)} cells")
            continue
        ours = [r["camvid gain (ours)"], r["camvid gain 95% ci low (ours)"], r["camvid gain 95% ci high (ours)"]]
        problems += _cell_problems(row[0], [(row[1], [r["ade20k gain (paper)"]]), (row[2], ours),
                                            (row[3], [r["welch p (ours)"]])])
        if row[4] != r["verdict"]:
            problems.append(f"{row[0]}: verdict {row[4]!r}, the table's is {r['verdict']!r}")
    return problems


def _rounds_to(shown: str, value: float) -> bool:
    """``shown`` (a decimal string) is ``value`` rounded to as many decimals as it shows."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown) - value) <= 0.5 * 10**-decimals + 1e-9


def _shows_roundings(text: str, want: list[str]) -> bool:
    """The numbers in ``text`` are, in order, roundings of the CSV values ``want``, and no more or fewer."""
    shown = re.findall(r"[-+]?\d+(?:\.\d+)?", text)
    return len(shown) == len(want) and all(_rounds_to(a, float(w)) for a, w in zip(shown, want))


def test_readme_numbers_are_the_committed_ones():
    readme = (ROOT / "README.md").read_text()
    assert len(_table_under(readme, "### Budgets")) >= 10
    assert latency_problems(readme) == [], "the README's latency table is not results/benchmarks/latency.md's"
    assert budget_problems(readme) == [], "the README's budget table differs from results/profile/budget.md"
    assert search_problems(readme) == [], "the README's CamVid search table differs from results/camvid/search2/"


def test_number_checks_catch_a_changed_number():
    readme = (ROOT / "README.md").read_text()
    assert latency_problems(readme.replace("| 25.0 (0.51) |", "| 25.1 (0.51) |")) == ["LeMoRe: 25.1 (0.51)"]
    assert budget_problems(readme.replace("| 1.577 |", "| 1.578 |")) != []
    rows = _table_under(readme, "### CamVid")
    if rows:  # the search's runs so far
        first = rows[0]
        assert search_problems(readme.replace(f"| {first[5]} |", f"| {float(first[5].strip('*')) + 0.02:.2f} |", 1))
        assert search_problems(readme.replace(f"| {first[0]} |", "| no_such_run |", 1))
        recorded = [r for r in rows if json.loads((ROOT / "results" / "camvid" / "search2" / f"{r[0]}.json")
                                                  .read_text()).get("search", {}).get("machines")]
        for row in recorded[:1]:  # a run that recorded its CPU, shown with another
            wrong = "| " + " | ".join([*row[:7], "Zen 9"]) + " |"
            assert search_problems(readme.replace("| " + " | ".join(row) + " |", wrong, 1)) != []
    fake = readme.replace("### CamVid", "### CamVid\n\n| run | model |\n|---|---|\n| no_such_run | lemore |\n", 1)
    assert search_problems(fake) != []


def study_readme_tables(tables: Path = CAMVID_TABLES) -> str:
    """The README's three CamVid study tables, rendered from the report's CSVs the way the checkers above read them
    (``python -c "import sys; sys.path.insert(0, 'tests'); import test_docs; print(test_docs.study_readme_tables())"``
    prints them for the README)."""
    import csv

    def read(name):
        with open(tables / f"{name}.csv", newline="") as f:
            return list(csv.DictReader(f))

    def num(x, fmt=".2f", sign=False):
        return "" if x == "" else format(float(x), ("+" if sign else "") + fmt)

    pairs = {r["model"]: r for r in read("camvid_pairs")}
    out = ["### CamVid", "", "| model | lr | val mIoU, mean ± std (n) | LeMoRe minus it [95% interval] | params (M) | "
           "GFLOPs at 360x480 | ms at 360x480 (ratio to LR-ASPP) | ADE20K mIoU (published) |",
           "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in read("camvid_models"):
        p = pairs.get(r["model"])
        std = f" ± {num(r['val miou std'])}" if r["val miou std"] else ""
        vs = "—" if p is None else num(p["difference (reference - model)"], sign=True) + (
            f" [{num(p['95% ci low'], sign=True)}, {num(p['95% ci high'], sign=True)}]" if p["95% ci low"] else "")
        lr = f"{float(r['lr']):.0e}".replace("e-0", "e-") if r["lr"] else ""  # 0.004 -> 4e-3
        out.append(f"| {r['model']} | {lr} | {num(r['val miou'])}{std} "
                   f"(n={r['n']}) | {vs} | {num(r['params_m'])} | {num(r['gflops (360x480)'])} | "
                   f"{num(r['latency_ms (360x480)'], '.1f')} ({num(r['latency ratio to LR-ASPP'])}) | "
                   f"{num(r['ade20k miou (published)'], '.1f')} |")
    gains = {r["model"]: r["last-quarter gain"] for r in read("camvid_models")}
    out += ["", "### Twice the schedule", "", "| model | seed 0 (rank) | seed 0, twice the schedule (rank) | "
            "last-quarter gain, mean of the seeds | last-quarter gain, twice the schedule |", "|---|--:|--:|--:|--:|"]
    for r in read("camvid_schedules"):
        def ranked(miou, rank):
            return "" if miou == "" else f"{num(miou)} ({int(float(rank))})"
        out.append(f"| {r['model']} | {ranked(r['seed-0 miou'], r['rank'])} | "
                   f"{ranked(r['seed-0 miou (long)'], r['rank (long)'])} | {num(gains[r['model']], sign=True)} | "
                   f"{num(r['last-quarter gain (long)'], sign=True)} |")
    out += ["", "### Table 2 on CamVid", "", "| switch | ADE20K gain (paper) | CamVid gain (ours) [95% interval] | "
            "Welch p | verdict |", "|---|--:|--:|--:|---|"]
    for r in read("camvid_gains"):
        interval = (f" [{num(r['camvid gain 95% ci low (ours)'], sign=True)}, "
                    f"{num(r['camvid gain 95% ci high (ours)'], sign=True)}]" if r["camvid gain 95% ci low (ours)"] else "")
        out.append(f"| {r['switch']} ({r['from']} to {r['to']}) | {num(r['ade20k gain (paper)'], '.1f', True)} | "
                   f"{num(r['camvid gain (ours)'], sign=True)}{interval} | {num(r['welch p (ours)'], '.3f')} | "
                   f"{r['verdict']} |")
    return "\n".join(out) + "\n"


def test_study_checkers_read_the_report_tables(tmp_path):
    """The CamVid study checkers on the report's tables from the fake results of tests/camvid_results.py: the
    rendered README passes, and a changed number, interval, rank, verdict, lr or a missing model is caught."""
    import camvid_results

    from lemore import tables as T

    results = camvid_results.make_results(tmp_path / "results" / "camvid")
    T.write_camvid_tables(T.camvid_tables(results), tmp_path / "tables")
    readme = study_readme_tables(tmp_path / "tables")
    check = {"models": camvid_problems, "schedule": schedule_problems, "gains": ablation_problems}
    for name, problems in check.items():
        assert problems(readme, tmp_path / "tables") == [], name
    rows = {h: _table_under(readme, h) for h in ("### CamVid", "### Twice the schedule", "### Table 2")}
    assert len(rows["### CamVid"]) == 4 and len(rows["### Table 2"]) == 7 and len(rows["### Twice the schedule"]) == 3
    lem = next(r for r in rows["### CamVid"] if r[0] == "LeMoRe")
    seg = next(r for r in rows["### CamVid"] if r[0] == "SegFormer-B0")
    assert lem[2] == "42.00 ± 2.00 (n=3)" and lem[3] == "—" and lem[1] == "4e-3"
    assert seg[3].startswith("-4.00 [") and seg[1] == "1e-3"
    line = next(line for line in readme.splitlines() if line.startswith("| SegFormer-B0 | 1e-3"))
    broken = {
        "models": [line.replace("46.00 ± 1.41", "46.00 ± 1.45"), line.replace("(n=2)", "(n=3)"),
                   line.replace("| 1e-3 |", "| 2e-3 |"), line.replace(seg[3], seg[3].replace("-4.00", "-4.10")),
                   line.replace(seg[3], "-4.00"), ""],  # the interval left out; the row left out
        "schedule": [readme.split("### Twice")[0] + "### Twice" + readme.split("### Twice")[1].replace("(1)", "(2)", 1)],
        "gains": [readme.replace("| holds |", "| undecided |", 1), readme.replace("| +5.00 [", "| +5.10 [", 1)],
    }
    for name, variants in broken.items():
        for text in variants:
            text = readme.replace(line, text) if name == "models" else text
            assert check[name](text, tmp_path / "tables") != [], (name, text[:80])


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the details to docs/"


# Each checker, fed something broken, says so: none of the tests above passes by checking nothing.
@pytest.mark.parametrize("command", [
    "python -m lemore train --no-such-option 1",
    "python -m lemore eval --split nowhere --run-dir x",
    "python -m lemore frobnicate",
    "python -m lemore.no_such_module",
    "python benchmarks/latency.py --runs five",
    "python benchmarks/no_such_script.py",
    "python benchmarks/data_pipeline.py --runs 3",
    "torchrun --no-such-torchrun-option -m lemore train",
    "torchrun --nproc_per_node 2 -m lemore train --dataset nowhere",
    "make no-such-target",
    "make bench BENCH_ARGS='--runs five'",
    "papermill notebooks/finetune.ipynb out.ipynb -p no_such_parameter 1",
    "papermill notebooks/no_such.ipynb out.ipynb",
    "papermill notebooks/finetune.ipynb out.ipynb -p dataset",
    "dvc repro studies/no_such_study/dvc.yaml",
    "dvc repro --single-item no_such_stage",
    "dvc repro --no-such-dvc-option",
    "dvc exp run -S no_such_key=1",
    "sbatch docs/slurm/no_such.sbatch",
    "git clone no-url",
    "curl https://example.org",
])
def test_checkers_catch_a_broken_command(command):
    assert check_command(command) != []


def test_classify_catches_an_unknown_command():
    assert classify("python -m lemore frobnicate") is None
    assert classify("rm -rf results") is None
    # RUN entries match whole commands only
    assert classify("python -m lemore.summary --results elsewhere") is None


def test_link_checkers_catch_broken_links():
    text = "\n".join([
        "# Title", "", "## A section", "",
        "[ok](#a-section) [bad anchor](#nowhere) [missing](no_such_file.md)",
        "![missing image](results/figures/no_such.png) [later](results/camvid/figures/x.png)",
        "[web](https://example.org) [docs](docs/usage.md#the-models) [bad doc anchor](docs/usage.md#nowhere)",
        "```bash", "[in code](not_checked.md)", "```",
        "`results/no_such_file.md` `results/camvid/x.md` `lemore/config.py`",
        "`tests/test_docs.py::test_readme_is_short` `tests/test_docs.py::test_no_such`", ""])
    assert sorted(link_problems(text, ROOT)) == sorted([
        "#nowhere: no heading #nowhere there", "no_such_file.md: no such file or folder",
        "results/figures/no_such.png: no such file or folder",
        "docs/usage.md#nowhere: no heading #nowhere there"])
    assert inline_path_problems(text) == [
        "`results/no_such_file.md`: no such file or folder",
        "`tests/test_docs.py::test_no_such`: no such test in tests/test_docs.py"]


def test_command_extraction():
    text = "\n".join([
        "x", "```bash", "make demo   # a comment", "", "# only a comment",
        "python -m lemore eval --official a.pth \\", "    --model topformer_t   # continued",
        "OMP_NUM_THREADS=1 python3 benchmarks/train_throughput.py", "```", "```", "make not-bash", "```", ""])
    assert doc_commands(text) == [
        (3, "make demo   # a comment"),
        (6, "python -m lemore eval --official a.pth --model topformer_t   # continued"),
        (8, "OMP_NUM_THREADS=1 python3 benchmarks/train_throughput.py")]
    assert split_command(doc_commands(text)[2][1]) == (
        {"OMP_NUM_THREADS": "1"}, ["python", "benchmarks/train_throughput.py"])
