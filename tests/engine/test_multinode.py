"""Several nodes: ``lemore.launch`` builds torchrun's multi-node command, and two "nodes" of one process each
(two torchrun agents on localhost, c10d rendezvous, gloo) end with exactly the metrics and weights of one node
running two processes with the same seed and global batch."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
import torch

from lemore import launch
from lemore.checkpoint import load_checkpoint

NODES_TWO = dict(nodes=2, rdzv_endpoint="127.0.0.1:29400")


# ------------------------------------------------------------------------------------------- the command
def test_one_node_is_standalone(tiny_cfg):
    cmd = launch.torchrun_command(tiny_cfg(), 4)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert not any(a.startswith("--rdzv") or a.startswith("--nnodes") for a in cmd)
    # nodes=1 ignores an endpoint: a one-node allocation runs the same script as a larger one
    assert launch.torchrun_command(tiny_cfg(), 4, rdzv_endpoint="h:1") == cmd


@pytest.mark.parametrize("node_rank", [0, 1])
def test_several_nodes_use_a_c10d_rendezvous_hosted_by_node_0(tiny_cfg, node_rank):
    cfg = tiny_cfg(**{"train.batch_size": 8})
    cmd = launch.torchrun_command(cfg, 2, "results/m", node_rank=node_rank, nodes=2,
                                  rdzv_endpoint="node001:29500", rdzv_id="job42")
    i = cmd.index("-m", 3)  # torchrun's options end where the module to run starts
    assert cmd[3:i] == ["--nnodes=2", "--nproc_per_node=2", "--rdzv_backend=c10d", "--rdzv_endpoint=node001:29500",
                        "--rdzv_id=job42", f"--rdzv_conf=is_host={int(node_rank == 0)}"]
    assert cmd[i:i + 3] == ["-m", "lemore", "train"] and cmd[-2:] == ["--results-dir", "results/m"]
    # rdzv_id defaults to the run name: the same string on every node, with the world size of all nodes
    default = launch.torchrun_command(cfg, 2, node_rank=node_rank, **NODES_TWO)
    assert f"--rdzv_id={cfg.run_name(4)}" in default and cfg.run_name(4) == "lemore_2x4-4_synthetic-64x64"


@pytest.mark.parametrize("kwargs,match", [
    (dict(nodes=0), r"nodes=0 must be an integer >= 1"),
    (dict(nodes="2", rdzv_endpoint="h:1"), r"nodes='2' must be an integer"),
    (dict(nodes=2, node_rank=2, rdzv_endpoint="h:1"), r"node_rank=2 must be .*\[0, 1\]"),
    (dict(nodes=1, node_rank=1), r"node_rank=1 must be .*\[0, 0\]"),
    (dict(nodes=2, node_rank=-1, rdzv_endpoint="h:1"), r"node_rank=-1"),
    (dict(nodes=2), r"nodes=2 needs rdzv_endpoint='host:port'"),
    (dict(nodes=2, rdzv_endpoint="node001"), r"rdzv_endpoint='node001' must look like 'host:port'"),
    (dict(nodes=2, rdzv_endpoint="node001:http"), r"rdzv_endpoint='node001:http'"),
    (dict(nodes=2, rdzv_endpoint="node001:70000"), r"port in 1-65535"),
    (dict(nodes=2, rdzv_endpoint=":29500"), r"rdzv_endpoint=':29500'"),
    (dict(nodes=2, rdzv_endpoint="fe80::1:29500"), r"\[fe80::1\]:29500"),
])
def test_bad_node_settings_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        launch.check_choices(gpus=1, **kwargs)


def test_endpoints_that_parse():
    assert launch.parse_endpoint("node001:29500") == ("node001", 29500)
    assert launch.parse_endpoint("10.0.0.1:1") == ("10.0.0.1", 1)
    assert launch.parse_endpoint("[fe80::1]:29500") == ("fe80::1", 29500)


def test_finetune_checks_before_launching(tiny_cfg, monkeypatch):
    monkeypatch.setattr(launch, "run_streaming", lambda cmd: pytest.fail("must not launch"))
    with pytest.raises(ValueError, match="node_rank=3"):
        launch.finetune(tiny_cfg(), nodes=2, node_rank=3, rdzv_endpoint="h:1")
    with pytest.raises(ValueError, match="needs rdzv_endpoint"):
        launch.pretrain(object(), nodes=2)


def test_finetune_on_two_nodes_runs_torchrun_and_returns_the_shared_run_dir(tiny_cfg, monkeypatch):
    seen = []
    monkeypatch.setattr(launch, "run_streaming", seen.append)
    cfg = tiny_cfg(**{"train.batch_size": 4})
    run_dir = launch.finetune(cfg, gpus=1, nodes=2, node_rank=1, rdzv_endpoint="node001:29500", results_dir=None)
    assert run_dir.name == cfg.run_name(2) == "lemore_2x2-4_synthetic-64x64"
    assert "--nnodes=2" in seen[0] and "--rdzv_conf=is_host=0" in seen[0]


# --------------------------------------------------------------------------------------------- the runs
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmds: list[list[str]], env: dict[str, str], timeout: float = 300) -> None:
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for c in cmds]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]


def test_two_nodes_of_one_process_train_as_one_world(tiny_cfg, tmp_path, subprocess_env):
    """The fast variant (the default suite): two torchrun agents meet at the endpoint and train one run."""
    cfg = tiny_cfg(**{"train.iters": 1, "train.batch_size": 4, "train.ckpt_interval": 1})
    endpoint = f"127.0.0.1:{_free_port()}"
    _run([launch.torchrun_command(cfg, 1, nodes=2, node_rank=r, rdzv_endpoint=endpoint) for r in (0, 1)],
         {**subprocess_env, "OMP_NUM_THREADS": "1"})
    run_dir = tmp_path / "runs" / cfg.run_name(2)
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["world_size"] == 2 and result["run_name"] == "lemore_2x2-1_synthetic-64x64"
    assert result["metrics"]["num_images"] == 4  # each validation image once over the two nodes' shards
    assert "2 x 1 x 2 (world x accum x micro) = batch 4" in (run_dir / "train.log").read_text()
    assert len(load_checkpoint(run_dir / "last.pt")["rng"]) == 2  # both ranks' RNG states, for exact resume


def test_two_nodes_of_one_process_equal_one_node_of_two(tiny_cfg, tmp_path, subprocess_env):
    """Same seed, same global batch (8 = 2 processes x 2 accumulation steps x 2), CPU, gloo."""
    env = {**subprocess_env, "OMP_NUM_THREADS": "1"}
    overrides = {"train.iters": 3, "train.batch_size": 8, "train.accum_steps": 2, "train.ckpt_interval": 2}
    one = tiny_cfg(**overrides, out_dir=str(tmp_path / "one_node"))
    two = tiny_cfg(**overrides, out_dir=str(tmp_path / "two_nodes"))
    endpoint = f"127.0.0.1:{_free_port()}"
    t0 = time.time()
    _run([launch.torchrun_command(two, 1, nodes=2, node_rank=r, rdzv_endpoint=endpoint) for r in (0, 1)], env)
    t1 = time.time()
    _run([launch.torchrun_command(one, 2)], env)
    print(f"two nodes: {t1 - t0:.1f}s, one node: {time.time() - t1:.1f}s")

    run_one, run_two = tmp_path / "one_node" / one.run_name(2), tmp_path / "two_nodes" / two.run_name(2)
    a = json.loads((run_one / "metrics.json").read_text())
    b = json.loads((run_two / "metrics.json").read_text())
    assert a["run_name"] == b["run_name"] == "lemore_4x2-3_synthetic-64x64" and a["world_size"] == b["world_size"] == 2
    assert a["metrics"] == b["metrics"]
    log = (run_two / "train.log").read_text()
    assert "2 x 2 x 2 (world x accum x micro) = batch 8" in log and "DDP over gloo" in log
    wa, wb = load_checkpoint(run_one / "model.pt")["model"], load_checkpoint(run_two / "model.pt")["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    losses = [[rec["train/loss"] for rec in map(json.loads, (r / "metrics.jsonl").read_text().splitlines())
               if "train/loss" in rec] for r in (run_one, run_two)]
    assert losses[0] == losses[1] and len(losses[0]) == 3


def test_slurm_script_passes_notebook_parameters_per_node(tmp_path):
    """docs/slurm/finetune.sbatch: every `-p NAME` is a parameter of the notebook, and each task expands its own
    $SLURM_NODEID (the srun command is in single quotes)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = (root / "docs" / "slurm" / "finetune.sbatch").read_text()
    nb = json.loads((root / "notebooks" / "finetune.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    names = {line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines() if "=" in line}
    passed = set(re.findall(r"-p (\w+) ", script))
    assert {"nodes", "node_rank", "rdzv_endpoint", "rdzv_id", "gpus", "dataset", "model"} <= passed <= names
    srun = script[script.index("srun "):]
    assert srun.count("'") == 2 and '"${SLURM_NODEID}"' in srun and "--requeue" in script
    # the task's command, as bash expands it on node 1 of 2 (python replaced by printf)
    env = {"PATH": "/usr/bin:/bin", "SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_JOB_ID": "77", "DATASET": "ade20k",
           "MODEL": "lemore", "DATA_ROOT": "/data/ade", "GPUS_PER_NODE": "4", "RDZV_HOST": "node001",
           "RDZV_PORT": "29500"}
    task = srun[srun.index("'") + 1:srun.rindex("'")].replace("python -m", "printf '%s\\n'", 1)
    out = subprocess.run(["bash", "-c", task], capture_output=True, text=True, env=env, check=True).stdout.split("\n")
    params = {out[i + 1]: out[i + 2] for i, a in enumerate(out) if a == "-p"}
    assert params["node_rank"] == "1" and params["nodes"] == "2" and params["rdzv_endpoint"] == "node001:29500"
    assert params["rdzv_id"] == "lemore-77" and params["gpus"] == "4"
