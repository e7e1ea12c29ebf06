"""Bad input at every entry point: a clear message, and no earlier result changed.

Each row of ``fault_table.FAULTS`` for these tests runs one command against a folder holding an earlier finished
run and its results file (``earlier``); afterwards that folder must be byte-for-byte what it was. Rows marked
``preflight`` must also fail before the new run's directory exists. The CLI runs in this process
(``lemore.cli.main``: seconds, not the 8 s of imports of a new process); the notebook rows run papermill.
"""

from __future__ import annotations

import pickle
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from fault_table import cases
from PIL import Image
from reliability_harness import RUN_NAME, fill, known_issue, run_cli, snapshot, tiny_sets

ROOT_DIR = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ damage done in setup
def _bad_yaml(p):
    (p["tmp"] / "bad.yaml").write_text("train: [iters: 3\n")


def _yaml_wrong_type(p):
    (p["tmp"] / "run.yaml").write_text("train:\n  weight_decay: lots\n")


def _empty_val(p):
    for kind in ("images", "annotations"):
        for f in (p["data"] / kind / "validation").iterdir():
            f.unlink()


def _corrupt_jpeg(p):
    (p["data"] / "images" / "training" / "SYN_train_00000003.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 50)


def _corrupt_png(p):
    f = p["data"] / "annotations" / "training" / "SYN_train_00000003.png"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _label_out_of_range(p):
    f = p["data"] / "annotations" / "training" / "SYN_train_00000003.png"
    label = np.array(Image.open(f))
    label[:8, :8] = 200
    Image.fromarray(label).save(f)


def _corrupt_val_label(p):
    f = p["data"] / "annotations" / "validation" / "SYN_val_00000001.png"
    f.write_bytes(f.read_bytes()[:100])


def _truncated_copy(p):
    data = p["ckpt"].read_bytes()
    (p["tmp"] / "truncated.pt").write_bytes(data[: len(data) // 2])


def _truncate_last(p):
    last = p["run"] / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])


def _model_as_last(p):
    shutil.copyfile(p["run"] / "model.pt", p["run"] / "last.pt")


def _evil_last(p):
    shutil.copyfile(p["evil"], p["run"] / "last.pt")


SETUPS = {f.__name__[1:]: f for f in (_bad_yaml, _yaml_wrong_type, _empty_val, _corrupt_jpeg, _corrupt_png,
                                       _label_out_of_range, _corrupt_val_label, _truncated_copy, _truncate_last,
                                       _model_as_last, _evil_last)}


@pytest.fixture
def places(earlier, evil, synthetic_root, tmp_path) -> dict:
    """The placeholders of the rows' inputs; ``data`` is a copy of the synthetic dataset, free to damage."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    return {**earlier, "data": data, "evil": evil, "run_name": RUN_NAME}


def _new_run_dirs(runs):
    return [d for d in runs.iterdir() if d.name != RUN_NAME]


def earlier_results(places) -> dict[str, str]:
    """The earlier run's directory and the results folder (a new run's own directory may appear beside them)."""
    return {**snapshot(places["run"]), **{f"results/{k}": v for k, v in snapshot(places["results"]).items()}}


# ---------------------------------------------------------------------------------------------------- CLI
@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", cases("test_cli_rejects_bad_input"))
def test_cli_rejects_bad_input(fault, places, synthetic_root, monkeypatch):
    inputs = fill(fault.inputs, places)
    if "setup" in inputs:
        SETUPS[inputs["setup"]](places)
    for key, value in inputs.get("env", {}).items():
        monkeypatch.setenv(key, value)
    if "free_bytes" in inputs:  # the OS says the disk is (almost) full
        usage = shutil.disk_usage(places["tmp"])
        fake = types.SimpleNamespace(disk_usage=lambda _: usage._replace(free=inputs["free_bytes"]))
        monkeypatch.setattr("lemore.checkpoint.shutil", fake)
    argv = inputs["argv"]
    if argv[0] == "train":  # the tiny CPU run, then the row's own options (later --set values win)
        argv = ["train", "--set", *tiny_sets(synthetic_root, places["runs"]), *argv[1:]]
    before = earlier_results(places)

    code, out = run_cli(argv)

    assert code == inputs.get("code", 1), out[-3000:]
    assert "Traceback" not in out, out[-3000:]  # one clear line, not a stack
    assert earlier_results(places) == before, "an earlier result changed"
    assert not (places["evil"].parents[1] / "code-ran").exists(), "pickled code ran"
    if inputs.get("preflight"):
        assert _new_run_dirs(places["runs"]) == [], "a run directory was created before the error"
    if inputs.get("no_run_files"):
        assert [f for d in _new_run_dirs(places["runs"]) for f in d.rglob("*")] == [], "something was written"
    missing = [m for m in inputs["messages"] if m not in out]
    known_issue(fault, not missing, f"the message contains {missing}:\n{out[-2000:]}")


# ---------------------------------------------------------------------------------------------- notebooks
@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", cases("test_notebook_rejects_bad_parameter"))
def test_notebook_rejects_bad_parameter(fault, places, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    parameters = {"out_dir": str(places["runs"]), "results_dir": str(places["results"]),
                  **fill(fault.inputs["parameters"], places)}
    before = earlier_results(places)
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(ROOT_DIR / "notebooks" / "finetune.ipynb"), str(places["tmp"] / "out.ipynb"),
                            parameters=parameters, cwd=str(places["tmp"]), kernel_name="python3", progress_bar=False)
    assert earlier_results(places) == before, "an earlier result changed"
    assert _new_run_dirs(places["runs"]) == [], "a run directory was created before the error"
    message = f"{err.value.ename}: {err.value.evalue}"  # the error itself, not the traceback's source lines
    missing = [m for m in fill(fault.inputs["messages"], places) if m not in message]
    known_issue(fault, not missing, f"the error {message!r} contains {missing}")


# ------------------------------------------------------------------------------------ SegFormer weights
@pytest.mark.parametrize("fault", cases("test_segformer_weights_refuse_code"))
def test_segformer_weights_refuse_code(fault, evil):
    import lemore
    from lemore.checkpoint import CheckpointError

    with pytest.raises((CheckpointError, pickle.UnpicklingError)) as err:
        lemore.create_model("segformer_b0", num_classes=8, pretrained=str(evil))
    assert not (evil.parents[1] / "code-ran").exists(), "pickled code ran"
    missing = [m for m in fault.inputs["messages"] if m not in str(err.value)]
    known_issue(fault, not missing, f"the error names {missing}")
