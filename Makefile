# Entry points on a fresh machine with only Python >= 3.11:
#   make demo   creates .venv, installs, and runs the study on the embedded synthetic dataset
#   make test   same set-up, then the test suite (the `slow` marker is left to `make test-all`)
#   make bench  same set-up, then the latency benchmark on this machine's CPU (results/benchmarks/latency.*)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export WANDB_SILENT := true

.PHONY: setup test test-all demo bench bench-engine profile gpu-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU/CUDA wheels of these exact versions; pinned first so that nothing else pulls another torch
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	# papermill needs a `python3` kernelspec; install it inside the venv
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lemore)" >/dev/null
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -m "not slow" -q -p no:cacheprovider

test-all: setup
	$(PY) -m pytest -q

# The whole study on the synthetic dataset (params.yaml): `dvc repro dvc.yaml` runs what is out of date (stage by
# stage, with progress bars; the CamVid study, studies/camvid/dvc.yaml, is left to its own command), then a summary says
# where the results are. The venv's bin/ goes first on PATH because every stage command starts
# `python -m lemore.launch ...`. Two OpenMP threads unless OMP_NUM_THREADS is set: the demo's numbers are
# bit-for-bit those committed only with the same thread count (floating-point sums run in another order with
# another count), and 2 threads train SegFormer-B0 1.6x faster than 1 on a 2-core machine. About 11 minutes on
# an AMD EPYC Zen 4 with 2 cores (SegFormer-B0 3.3 it/s, LeMoRe 7.9 it/s; docs/synthetic.md).
demo: setup
	@start=$$(date +%s); \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(VENV)/bin/dvc repro dvc.yaml && \
	$(PY) -m lemore.summary --elapsed $$(( $$(date +%s) - start ))

# LeMoRe against its peers on this machine, interleaved in one process: network only and end-to-end label maps,
# ONNX Runtime and eager PyTorch, 1 thread and all cores; rewrites results/benchmarks/latency.{json,md}, which name
# the machine. About 4 minutes on 2 cores (exports included). BENCH_ARGS for options, e.g. BENCH_ARGS="--runs 5"
# (`python benchmarks/latency.py --help`). PYTHONPATH: this checkout's package even with another checkout's venv.
bench: setup
	PYTHONPATH=$(CURDIR) $(PY) benchmarks/latency.py $(BENCH_ARGS)

# The training engine against the model alone, every model, the synthetic and the CamVid recipe, 2 threads: what
# share of `python -m lemore train` is the model (goal >= 0.9), and of an evaluation pass; rewrites
# results/benchmarks/engine_throughput.{json,md}, which name the machine. About 15 minutes on 2 cores. CamVid from
# $LEMORE_DATA/CamVid, else a stand-in of the same layout and sizes (BENCH_ARGS="--camvid-root DIR" to point at it).
bench-engine: setup
	PYTHONPATH=$(CURDIR) $(PY) benchmarks/engine_throughput.py $(BENCH_ARGS)

# One CUDA GPU, at most 8 minutes: the engine's GPU paths measured (AMP, channels_last, NCCL + SyncBatchNorm,
# GPU vs CPU evaluation, latency, data loading) -> results/benchmarks/gpu.{json,md}. Where the environment is
# already installed (a cluster module, a container without internet): python benchmarks/gpu_check.py
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache
