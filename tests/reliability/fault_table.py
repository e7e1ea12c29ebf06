"""Every fault the reliability tests inject, as data: the tests are parametrized over ``FAULTS`` and
``docs/reliability.md`` is rendered from it, so the table cannot list a fault that is not tried, nor miss one.

    python -m tests.reliability.fault_table            # rewrite docs/reliability.md (outcomes kept as they are)
    python -m tests.reliability.fault_table --run      # run the fast reliability tests, then write their outcomes
    python -m tests.reliability.fault_table --run --slow   # ... the slow ones (dvc repro, W&B timeout) too

A row's ``inputs`` are what its test feeds in; placeholders in braces are filled by the test (``{data}`` a copy of
the synthetic dataset, ``{runs}`` a runs folder holding an earlier finished run ``{run}``, ``{results}`` a results
folder holding that run's JSON, ``{ckpt}`` its ``model.pt``, ``{evil}`` a pickle that runs code, ``{tmp}`` a
scratch folder, ``{run_name}`` the run name). ``known_issue`` marks a defect in code this suite does not own: its
test still asserts everything else, and xfails only at the check that the defect breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
RUN_NAME = "lemore_2x1-4_synthetic-64x64"  # the earlier / reference run of every test (tests/reliability/conftest)


@dataclass(frozen=True)
class Fault:
    id: str  # the pytest id
    area: str  # a key of AREAS
    test: str  # the test function that runs it (parametrized with ``cases(test)``)
    entry: str  # the entry point, as a user would call it
    fault: str  # what goes wrong
    expected: str  # what happens instead of a disaster (what the test asserts)
    inputs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    slow: bool = False
    known_issue: str = ""


AREAS = {
    "kill": "Killed mid-run",
    "pipeline": "`dvc repro` interrupted",
    "input": "Bad input",
    "checkpoint": "Checkpoints that do not fit or are damaged",
    "unsafe": "Checkpoints that would run code",
    "wandb": "W&B unavailable",
    "disk": "Disk full, folders not writable",
}

_SAME = "final metrics, weights and `metrics.jsonl` equal an uninterrupted run's"
_UNCHANGED = "earlier runs and results byte-for-byte unchanged"
_PREFLIGHT = "no run directory is created; " + _UNCHANGED

FAULTS: list[Fault] = [
    # ------------------------------------------------------------------------------------------------ kills
    Fault("kill-mid-iteration", "kill", "test_killed_run_resumes_exactly", "`lemore train`",
          "SIGKILL after the backward pass of iteration 3, before its optimizer step (`LEMORE_FAULT=step:3`)",
          f"`last.pt` of iteration 2 loads, no `metrics.json`; rerunning resumes at 2; {_SAME}",
          {"spec": "step:3", "last": 2, "temps": [], "via": "cli"}),
    Fault("kill-first-checkpoint-write", "kill", "test_killed_run_resumes_exactly", "`lemore train`",
          "SIGKILL after the first `last.pt` (iteration 2) is written to its temp file, before the rename "
          "(`LEMORE_FAULT=write:last.pt@2`)",
          f"no `last.pt`, only a hidden temp file; rerunning starts over and deletes it; {_SAME}",
          {"spec": "write:last.pt@2", "last": None, "temps": ["last.pt"]}),
    Fault("kill-checkpoint-write", "kill", "test_killed_run_resumes_exactly", "`lemore train`",
          "SIGKILL while `last.pt` of iteration 4 is written (`LEMORE_FAULT=write:last.pt@4`)",
          f"the previous `last.pt` (iteration 2) is intact; rerunning resumes at 2 and deletes the temp file; {_SAME}",
          {"spec": "write:last.pt@4", "last": 2, "temps": ["last.pt"]}),
    Fault("kill-mid-evaluation", "kill", "test_killed_run_resumes_exactly", "`lemore train`",
          "SIGKILL after 2 of the 4 batches of the final evaluation (`LEMORE_FAULT=eval:2`)",
          f"`last.pt` of iteration 4, no `model.pt` / `metrics.json`; rerunning evaluates again; {_SAME}",
          {"spec": "eval:2", "last": 4, "temps": []}),
    Fault("kill-metrics-write", "kill", "test_killed_run_resumes_exactly", "`lemore train`",
          "SIGKILL while `metrics.json` is written (`LEMORE_FAULT=write:metrics.json`)",
          f"`metrics.json` absent, never half-written; rerunning writes it; {_SAME}",
          {"spec": "write:metrics.json", "last": 4, "temps": ["metrics.json"]}),
    Fault("kill-results-write", "kill", "test_killed_run_resumes_exactly", "`lemore train --results-dir`",
          "SIGKILL while `<results-dir>/<run>.json` is written (`LEMORE_FAULT=write:<run>.json`)",
          f"the run's own `metrics.json` is complete, the results file absent; rerunning writes it and deletes "
          f"its temp file; {_SAME}",
          {"spec": "write:{run_name}.json", "last": 4, "temps": [], "result_temps": ["{run_name}.json"]}),
    Fault("kill-pretrain-mid-iteration", "kill", "test_killed_pretraining_resumes_exactly", "`lemore pretrain`",
          "SIGKILL after the backward pass of iteration 3 of ImageNet pretraining (`LEMORE_FAULT=step:3`)",
          "`last.pt` of iteration 2 loads; rerunning resumes at 2; the encoder weights, top-1/top-5 and "
          "`metrics.jsonl` equal an uninterrupted run's",
          {"spec": "step:3", "last": 2}),
    # ---------------------------------------------------------------------------------------------- pipeline
    Fault("dvc-repro-killed-mid-stage", "pipeline", "test_dvc_repro_killed_mid_stage", "`dvc repro`",
          "dvc, papermill and the notebook kernel all SIGKILLed in the middle of the fine-tuning stage's training "
          "(`LEMORE_FAULT=step:2:hang`, then the whole process tree is killed)",
          "rerunning `dvc repro` completes the stage, `dvc status` is clean, and no temp file, `*.failed.ipynb` "
          "or half-written JSON remains under `results/` or `runs/`",
          {"stage": "finetune@synthetic-lemore-0", "spec": "step:2:hang"}, slow=True),
    # ------------------------------------------------------------------------------------------- bad input
    Fault("cli-unknown-dataset", "input", "test_cli_rejects_bad_input", "`lemore train --dataset ade`",
          "unknown dataset", "exit 2: `invalid choice: 'ade'` with the valid datasets; " + _UNCHANGED,
          {"argv": ["train", "--dataset", "ade"], "code": 2, "messages": ["invalid choice: 'ade'", "'ade20k'"]}),
    Fault("cli-unknown-model", "input", "test_cli_rejects_bad_input", "`lemore train --set model.name=nope`",
          "unknown model", "exit 1: `unknown model.name 'nope'; choose from [...]`; " + _PREFLIGHT,
          {"argv": ["train", "--set", "model.name=nope"], "preflight": True,
           "messages": ["unknown model.name 'nope'; choose from [", "'lemore'", "'segformer_b0'"]}),
    Fault("cli-wrong-type", "input", "test_cli_rejects_bad_input", "`lemore train --set train.iters=ten`",
          "a parameter of the wrong type",
          "exit 1: `bad value 'ten' for train.iters: expected an integer`; " + _PREFLIGHT,
          {"argv": ["train", "--set", "train.iters=ten"], "preflight": True,
           "messages": ["bad value 'ten' for train.iters: expected an integer"]}),
    Fault("cli-unknown-key", "input", "test_cli_rejects_bad_input", "`lemore train --set train.learning_rate=0.1`",
          "an unknown parameter", "exit 1: the unknown key and the valid ones (`train.lr`, ...); " + _PREFLIGHT,
          {"argv": ["train", "--set", "train.learning_rate=0.1"], "preflight": True,
           "messages": ["unknown config key 'train.learning_rate'", "'train.lr'"]}),
    Fault("cli-bad-yaml", "input", "test_cli_rejects_bad_input", "`lemore train --config bad.yaml`",
          "a config file that is not YAML", "exit 1: names the file and the YAML error; " + _PREFLIGHT,
          {"argv": ["train", "--config", "{tmp}/bad.yaml"], "setup": "bad_yaml", "preflight": True,
           "messages": ["config file", "bad.yaml", "is not valid YAML"]}),
    Fault("cli-yaml-wrong-type", "input", "test_cli_rejects_bad_input", "`lemore train --config run.yaml`",
          "a config file with `train: {weight_decay: lots}`",
          "exit 1: `bad value 'lots' for train.weight_decay: expected a number`; " + _PREFLIGHT,
          {"argv": ["train", "--config", "{tmp}/run.yaml"], "setup": "yaml_wrong_type", "preflight": True,
           "messages": ["bad value 'lots' for train.weight_decay: expected a number"]}),
    Fault("cli-missing-data-root", "input", "test_cli_rejects_bad_input",
          "`lemore train --dataset ade20k --set data.root=...`", "a data root that does not exist",
          "exit 1: the path, `$LEMORE_DATA` and the expected layout; " + _PREFLIGHT,
          {"argv": ["train", "--dataset", "ade20k", "--set", "data.root={tmp}/no-such-folder"], "preflight": True,
           "messages": ["ade20k root", "no-such-folder' does not exist", "$LEMORE_DATA", "Expected layout",
                        "ADEChallengeData2016/"]}),
    Fault("cli-wrong-layout", "input", "test_cli_rejects_bad_input",
          "`lemore train --dataset cityscapes --set data.root=<an ADE20K tree>`", "a data root of the wrong layout",
          "exit 1: the missing folder and the expected layout; " + _PREFLIGHT,
          {"argv": ["train", "--dataset", "cityscapes", "--set", "data.root={data}"], "preflight": True,
           "messages": ["cityscapes train: folder", "leftImg8bit/train does not exist", "expected layout"]}),
    Fault("cli-empty-split", "input", "test_cli_rejects_bad_input",
          "`lemore train --dataset ade20k --set data.root=...`", "an empty validation split",
          "exit 1: `ade20k val: no images found under <root>` and the layout; " + _PREFLIGHT,
          {"argv": ["train", "--dataset", "ade20k", "--set", "data.root={data}"], "setup": "empty_val",
           "preflight": True, "messages": ["ade20k val: no images found under", "expected layout"]}),
    Fault("cli-corrupt-jpeg", "input", "test_cli_rejects_bad_input", "`lemore train --set data.root=...`",
          "a corrupt training JPEG",
          "exit 1 when the file is loaded: names the file, `cannot decode image`; " + _UNCHANGED,
          {"argv": ["train", "--set", "data.root={data}", "name=bad_data"], "setup": "corrupt_jpeg",
           "messages": ["images/training/SYN_train_00000003.jpg: cannot decode image"]}),
    Fault("cli-corrupt-png", "input", "test_cli_rejects_bad_input", "`lemore train --set data.root=...`",
          "a truncated label PNG", "exit 1 when the file is loaded: names the file, `cannot decode label`; "
          + _UNCHANGED,
          {"argv": ["train", "--set", "data.root={data}", "name=bad_data"], "setup": "corrupt_png",
           "messages": ["annotations/training/SYN_train_00000003.png: cannot decode label"]}),
    Fault("cli-label-out-of-range", "input", "test_cli_rejects_bad_input", "`lemore train --set data.root=...`",
          "label value 200 in a dataset of 8 classes",
          "exit 1 when the file is loaded: the file, the bad values and the valid ones; " + _UNCHANGED,
          {"argv": ["train", "--set", "data.root={data}", "name=bad_data"], "setup": "label_out_of_range",
           "messages": ["SYN_train_00000003.png: label values out of range for synthetic: 200 "
                        "(valid stored values: 0-5, 255)"]}),
    Fault("cli-rerun-finished-run", "input", "test_cli_rejects_bad_input",
          "`lemore train` (the same run again, `data.root` moved)",
          "rerunning a finished run with a data root whose validation labels are corrupt",
          "exit 0: `<run> is finished`; nothing is read or re-evaluated, the run and its results are unchanged",
          {"argv": ["train", "--set", "data.root={data}"], "setup": "corrupt_val_label", "code": 0,
           "messages": [f"{RUN_NAME} is finished (delete its metrics.json to evaluate it again)"]}),
    Fault("cli-eval-not-a-run", "input", "test_cli_rejects_bad_input", "`lemore eval --run-dir <not a run>`",
          "a run directory without `config.yaml`", "exit 1: `'<dir>/config.yaml' not found: is '<dir>' a training "
          "run directory?`; " + _UNCHANGED,
          {"argv": ["eval", "--run-dir", "{tmp}"],
           "messages": ["config.yaml' not found: is", "a training run directory?"]}),
    Fault("cli-pretrain-missing-root", "input", "test_cli_rejects_bad_input", "`lemore pretrain --root ...`",
          "an ImageNet root that does not exist", "exit 1: the path and the layout; " + _PREFLIGHT,
          {"argv": ["pretrain", "--root", "{tmp}/no-imagenet", "--set", "out_dir={runs}"], "preflight": True,
           "messages": ["imagenet root", "no-imagenet' does not exist", "Expected layout"]}),
    Fault("cli-data-check-missing-root", "input", "test_cli_rejects_bad_input",
          "`lemore data check ade20k --root ...`", "a data root that does not exist",
          "exit 1: `error: ade20k root '...' does not exist` and the layout",
          {"argv": ["data", "check", "ade20k", "--root", "{tmp}/no-ade"],
           "messages": ["error: ade20k root", "no-ade' does not exist"]}),
    Fault("cli-profile-unknown-model", "input", "test_cli_rejects_bad_input", "`lemore profile --models nope`",
          "unknown model", "exit 1: `unknown model(s) ['nope']; choose from [...]`",
          {"argv": ["profile", "--models", "nope"],
           "messages": ["unknown model(s) ['nope']; choose from [", "'lemore'"]}),
    Fault("cli-export-unknown-model", "input", "test_cli_rejects_bad_input", "`lemore export --model nope`",
          "unknown model", "exit 1: `unknown model 'nope'; choose from [...]`, no file written",
          {"argv": ["export", "--model", "nope", "--out", "{tmp}/x.onnx"],
           "messages": ["unknown model 'nope'; choose from [", "'lemore'"]}),
    Fault("notebook-unknown-dataset", "input", "test_notebook_rejects_bad_parameter",
          "papermill `finetune.ipynb -p dataset ade`", "unknown dataset",
          "fails in the first cell: `unknown dataset 'ade'; choose from [...]`; " + _PREFLIGHT,
          {"parameters": {"dataset": "ade"}, "messages": ["unknown dataset 'ade'; choose from ['ade20k',"]}),
    Fault("notebook-unknown-model", "input", "test_notebook_rejects_bad_parameter",
          "papermill `finetune.ipynb -p model nope`", "unknown model",
          "fails in the first cell: `unknown model 'nope'; choose from [...]`; " + _PREFLIGHT,
          {"parameters": {"model": "nope"}, "messages": ["unknown model 'nope'; choose from ['lemore',"]}),
    Fault("notebook-wrong-type", "input", "test_notebook_rejects_bad_parameter",
          "papermill `finetune.ipynb -p iterations ten`", "a parameter of the wrong type",
          "fails before training, with a message naming the value and the parameter; " + _PREFLIGHT,
          {"parameters": {"iterations": "ten"}, "messages": ["'ten'", "iterations"]}),
    Fault("notebook-bad-crop", "input", "test_notebook_rejects_bad_parameter",
          "papermill `finetune.ipynb -p crop big`", "a malformed size",
          "fails before training: `size 'big': write it as HxW`; " + _PREFLIGHT,
          {"parameters": {"crop": "big"}, "messages": ["size 'big': write it as HxW"]}),
    Fault("notebook-missing-data-root", "input", "test_notebook_rejects_bad_parameter",
          "papermill `finetune.ipynb -p dataset ade20k -p data_root ...`", "a data root that does not exist",
          "fails before training: the path and the layout; " + _PREFLIGHT,
          {"parameters": {"dataset": "ade20k", "data_root": "{tmp}/no-such-folder", "iterations": 2,
                          "batch_size": 2, "crop": "64x64", "wandb": "disabled",
                          "overrides": ["train.device=cpu", "data.num_workers=0"]},
           "messages": ["ade20k root", "no-such-folder' does not exist"]}),
    # ------------------------------------------------------------------------------------------ checkpoints
    Fault("eval-other-num-classes", "checkpoint", "test_cli_rejects_bad_input",
          "`lemore eval --checkpoint model.pt --set data.num_classes=7`", "a checkpoint of another number of classes",
          "exit 1: the file, the model and every mismatching key with both shapes; " + _UNCHANGED,
          {"argv": ["eval", "--checkpoint", "{ckpt}", "--set", "data.num_classes=7"],
           "messages": ["model.pt' does not fit model LeMoRe", "2 shape mismatches",
                        "classifier.weight: checkpoint (5, 96, 1, 1) vs model (7, 96, 1, 1)"]}),
    Fault("eval-other-model", "checkpoint", "test_cli_rejects_bad_input",
          "`lemore eval --checkpoint model.pt --set model.name=segformer_b0`", "a checkpoint of another model",
          "exit 1: the file, the model, the missing and the unexpected keys; " + _UNCHANGED,
          {"argv": ["eval", "--checkpoint", "{ckpt}", "--set", "model.name=segformer_b0"],
           "messages": ["model.pt' does not fit model SegFormer", "missing keys: ['net.decode_head.",
                        "unexpected keys: ['backbone."]}),
    Fault("eval-truncated-checkpoint", "checkpoint", "test_cli_rejects_bad_input",
          "`lemore eval --checkpoint truncated.pt`", "a truncated checkpoint",
          "exit 1: `cannot read checkpoint '<file>' (<n> bytes): it is truncated or corrupt`; " + _UNCHANGED,
          {"argv": ["eval", "--checkpoint", "{tmp}/truncated.pt"], "setup": "truncated_copy",
           "messages": ["cannot read checkpoint", "truncated.pt' (", "it is truncated or corrupt"]}),
    Fault("resume-truncated-checkpoint", "checkpoint", "test_cli_rejects_bad_input", "`lemore train --run-dir <run>`",
          "a truncated `last.pt` in the run to resume",
          "exit 1: `cannot resume`, the file, `truncated or corrupt`, how to start over; the run directory is "
          "otherwise unchanged",
          {"argv": ["train", "--run-dir", "{run}"], "setup": "truncate_last",
           "messages": ["cannot resume: cannot read checkpoint", "last.pt' (", "truncated or corrupt",
                        "Move or delete it to start the run over"]}),
    Fault("resume-not-a-training-checkpoint", "checkpoint", "test_cli_rejects_bad_input",
          "`lemore train --run-dir <run>`", "`model.pt` copied over `last.pt` (weights only, no optimizer)",
          "exit 1: `cannot resume '<file>': it is not a training checkpoint`; the run directory is otherwise "
          "unchanged",
          {"argv": ["train", "--run-dir", "{run}"], "setup": "model_as_last",
           "messages": ["cannot resume", "last.pt': it is not a training checkpoint"]}),
    # ----------------------------------------------------------------------------------------------- unsafe
    Fault("unsafe-eval-checkpoint", "unsafe", "test_cli_rejects_bad_input", "`lemore eval --checkpoint evil.pt`",
          "a pickle whose `__reduce__` runs code",
          "refused (weights-only load), the code never runs; exit 1 naming the file; " + _UNCHANGED,
          {"argv": ["eval", "--checkpoint", "{evil}"], "messages": ["refused to load", "evil.pt", "never code"]}),
    Fault("unsafe-pretrained", "unsafe", "test_cli_rejects_bad_input",
          "`lemore train --set model.pretrained=evil.pt`", "encoder weights that run code",
          "refused, the code never runs; exit 1 naming the file; " + _PREFLIGHT,
          {"argv": ["train", "--set", "model.pretrained={evil}", "name=evil_pretrained"], "preflight": True,
           "messages": ["refused to load", "evil.pt", "never code"]}),
    Fault("unsafe-resume", "unsafe", "test_cli_rejects_bad_input", "`lemore train --run-dir <run>`",
          "a `last.pt` that runs code", "refused, the code never runs; exit 1: `cannot resume: refused to load "
          "'<file>'`; the run directory is otherwise unchanged",
          {"argv": ["train", "--run-dir", "{run}"], "setup": "evil_last",
           "messages": ["cannot resume: refused to load", "last.pt", "never code"]}),
    Fault("unsafe-segformer-weights", "unsafe", "test_segformer_weights_refuse_code",
          "`create_model('segformer_b0', pretrained='evil.pt')`", "SegFormer weights that run code",
          "refused (torch's weights-only unpickler), the code never runs; the message names the file",
          {"messages": ["evil.pt"]}),
    # ---------------------------------------------------------------------------------------------------- W&B
    Fault("wandb-online-no-api-key", "wandb", "test_wandb_unavailable_training_goes_on",
          "`lemore train --set wandb=online`", "W&B online mode without an API key (`HOME` with no `.netrc`)",
          "warns once, falls back to an offline W&B run in the run directory (for `wandb sync`); training "
          "completes and `metrics.json` is written",
          {"env": {}, "error": "UsageError"}),
    Fault("wandb-online-no-network", "wandb", "test_wandb_unavailable_training_goes_on",
          "`lemore train --set wandb=online`", "W&B online mode with a key but no reachable server",
          "after `WANDB_INIT_TIMEOUT` (90 s by default; 5 s here) warns once and falls back to an offline run; "
          "training completes and `metrics.json` is written",
          {"env": {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_INIT_TIMEOUT": "5"},
           "error": "CommError"}),
    # --------------------------------------------------------------------------------------------------- disk
    Fault("results-dir-read-only", "disk", "test_cli_rejects_bad_input", "`lemore train --results-dir results`",
          "a read-only results folder (`EROFS` injected at the write probe: `LEMORE_FAULT=probe:results:EROFS`; "
          "chmod does not stop root)",
          "exit 1 before training: `the results folder '...' is not writable (Read-only file system)`; nothing "
          "written in the run directory; " + _UNCHANGED,
          {"argv": ["train", "--results-dir", "{results}", "--set", "name=ro_results"],
           "env": {"LEMORE_FAULT": "probe:results:EROFS"},
           "no_run_files": True, "messages": ["the results folder", "is not writable (Read-only file system"]}),
    Fault("results-dir-under-a-file", "disk", "test_cli_rejects_bad_input", "`lemore train --results-dir ...`",
          "a results folder whose parent is a regular file (a real `ENOTDIR`, no injection)",
          "exit 1 before training: `... is not writable (Not a directory)`; " + _UNCHANGED,
          {"argv": ["train", "--results-dir", "{results}/" + RUN_NAME + ".json/sub", "--set", "name=file_parent"],
           "no_run_files": True,
           "messages": ["the results folder", "is not writable (Not a directory"]}),
    Fault("run-dir-read-only", "disk", "test_cli_rejects_bad_input", "`lemore train`",
          "a read-only run directory (`LEMORE_FAULT=probe:<run>:EROFS`)",
          "exit 1 before training: `the run directory '...' is not writable`; " + _UNCHANGED,
          {"argv": ["train", "--set", "name=ro_run"], "env": {"LEMORE_FAULT": "probe:ro_run:EROFS"},
           "no_run_files": True, "messages": ["the run directory", "ro_run' is not writable (Read-only file system"]}),
    Fault("eval-output-read-only", "disk", "test_cli_rejects_bad_input", "`lemore eval --checkpoint ... --out ...`",
          "a read-only output folder (`LEMORE_FAULT=probe:ro:EROFS`)",
          "exit 1 before evaluating: `the output folder '...' is not writable`; " + _UNCHANGED,
          {"argv": ["eval", "--checkpoint", "{ckpt}", "--out", "{tmp}/ro/eval.json"],
           "env": {"LEMORE_FAULT": "probe:ro:EROFS"},
           "messages": ["the output folder", "ro' is not writable (Read-only file system"]}),
    Fault("disk-too-full-to-start", "disk", "test_cli_rejects_bad_input", "`lemore train`",
          "less free space than the checkpoints need (`shutil.disk_usage` reports 1 MiB)",
          "exit 1 before training: how much is free and how much is needed; " + _UNCHANGED,
          {"argv": ["train", "--set", "name=full_disk"], "free_bytes": 2**20, "no_run_files": True,
           "messages": ["only 1.0 MiB free under", "the checkpoints of this run need about"]}),
    Fault("disk-fills-at-checkpoint", "disk", "test_disk_fills_during_training", "`lemore train`",
          "the disk fills while `last.pt` of iteration 4 is written (`LEMORE_FAULT=write:last.pt@4:ENOSPC`)",
          "exit 1: `cannot write '.../last.pt' (No space left on device); the previous last.pt is intact`; no temp "
          f"file left; rerunning once there is space resumes at 2; {_SAME}",
          {"spec": "write:last.pt@4:ENOSPC",
           "messages": ["cannot write", "last.pt' (No space left on device", "the previous last.pt is intact"]}),
]


def cases(test: str) -> list:
    """The rows of ``test`` as ``pytest.param``s (id = the row's id; slow rows marked slow)."""
    import pytest

    rows = [f for f in FAULTS if f.test == test]
    assert rows, f"no fault row names the test {test!r}"
    return [pytest.param(f, id=f.id, marks=[pytest.mark.slow] if f.slow else []) for f in rows]


# ------------------------------------------------------------------------------------------------- rendering
HEADER = """\
# Reliability: faults tried and what happens

<!-- Generated by `python -m tests.reliability.fault_table` from FAULTS in tests/reliability/fault_table.py, the
list the tests in tests/reliability/ are parametrized over. tests/reliability/test_fault_table.py fails when this
file and that list disagree: edit the list, then regenerate. -->

Each row is one parametrized case of the tests in `tests/reliability/` (its pytest id is the first column); the
"last run" column is the outcome of that case in the run recorded at the end of this page. The kill points are
deterministic, not timed: `lemore/faults.py` reads `LEMORE_FAULT=<point>:<key>[:<action>]` (`step`, `eval`,
`write`, `probe`; `kill`, `hang` or an errno name such as `ENOSPC`) at the places where a real run dies, so a
test kills a training at exactly "after the backward pass of iteration 3" or "between writing `last.pt` and
renaming it". Runs are the tiny CPU configuration of the engine tests (synthetic data, 64x64 crops, 4 iterations,
a checkpoint every 2, fixed seed), so "equal" means bit-for-bit equal.

What the engine guarantees (and these rows check):

* Every file of a run is written atomically (temp file, fsync, rename): a kill leaves the previous version or
  nothing, never half a file. Temp files of interrupted writes are deleted when the run starts again.
* Rerunning `lemore train` on the same run directory resumes from `last.pt`, and the result is the one an
  uninterrupted run gives: same metrics, weights and logged losses (`metrics.jsonl` is cut back to what it held
  when `last.pt` was written, so no line appears twice).
* Bad input fails before the run directory is touched (config, checkpoint to resume, data folders, model,
  pretrained weights, writable folders, free space): the message names the value and the valid choices, or the
  file and the problem, and no earlier result changes. A bad file that only shows when it is loaded stops the run
  there, with the file named and the last good checkpoint kept.
* Checkpoints are loaded with `weights_only=True`: a pickle that would run code is refused.
* W&B never stops a run; an online run that cannot start falls back to an offline one.
"""


def render(outcomes: dict[str, str] | None = None, summary: str = "") -> str:
    """The Markdown page: one table per area, then the recorded run (``outcomes``: fault id -> outcome)."""
    outcomes = outcomes or {}
    lines = [HEADER]
    for area, title in AREAS.items():
        rows = [f for f in FAULTS if f.area == area]
        if not rows:
            continue
        lines += [f"## {title}", "", "| id | entry point | fault | what happens | last run |", "|---|---|---|---|---|"]
        for f in rows:
            expected = f.expected
            if f.known_issue:
                expected += f"<br>**Known issue**: {f.known_issue}"
            cells = [f"`{f.id}`" + (" (slow)" if f.slow else ""), f.entry, f.fault, expected,
                     outcomes.get(f.id, "not run")]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        lines.append("")
    lines += ["## Last recorded run", "", summary or "none recorded yet", ""]
    return "\n".join(lines)


def parse_doc(text: str) -> tuple[dict[str, str], str]:
    """The outcomes and the summary line of a rendered page (the parts that come from a run, not from FAULTS)."""
    outcomes = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([^`]+)`(?: \(slow\))? \|.*\| ([^|]+) \|$", line)
        if m:
            outcomes[m[1]] = m[2].strip()
    summary = text.split("## Last recorded run", 1)[1].strip() if "## Last recorded run" in text else ""
    return outcomes, summary


def run_tests(slow: bool) -> tuple[dict[str, str], str]:
    """Run tests/reliability (the slow ones too with ``slow``); outcomes per fault id, and a summary line."""
    import datetime
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outcomes.json"
        here = ROOT / "tests" / "reliability"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here),
               "--ignore", str(here / "test_fault_table.py")]  # the page's own check: not a fault
        if not slow:
            cmd += ["-m", "not slow"]
        subprocess.run(cmd, cwd=ROOT, env={**os.environ, "LEMORE_FAULT_OUTCOMES": str(out)}, check=False)
        outcomes = json.loads(out.read_text())
    counts: dict[str, int] = {}
    for v in outcomes.values():
        counts[v] = counts.get(v, 0) + 1
    tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    summary = (f"{datetime.date.today().isoformat()}: {tally} ({'with' if slow else 'without'} the slow tests), "
               f"`python -m tests.reliability.fault_table --run{' --slow' if slow else ''}` on "
               f"{os.cpu_count()} CPU cores.")
    return outcomes, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.fault_table", description=__doc__.splitlines()[0])
    p.add_argument("--run", action="store_true", help="run the reliability tests and record their outcomes")
    p.add_argument("--slow", action="store_true", help="with --run: the slow tests too")
    p.add_argument("--check", action="store_true", help="exit 1 if docs/reliability.md is not up to date")
    args = p.parse_args(argv)
    old = DOC.read_text() if DOC.is_file() else ""
    outcomes, summary = parse_doc(old)
    if args.run:
        new_outcomes, summary = run_tests(args.slow)
        outcomes = {**({} if args.slow else outcomes), **new_outcomes}
    text = render({k: v for k, v in outcomes.items() if any(f.id == k for f in FAULTS)}, summary)
    if args.check:
        print("docs/reliability.md is up to date" if text == old else "docs/reliability.md is out of date")
        return int(text != old)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
