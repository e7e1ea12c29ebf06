"""Deterministic fault injection for the reliability tests: ``LEMORE_FAULT=<point>:<key>[:<action>]``.

The engine calls :func:`maybe_fault` at the places where a real run can die or fail; when the environment
variable names that place, the fault happens there, every time, instead of at a moment a timer happens to hit:

==========  ===========================================  =================================================
point       where                                        key
==========  ===========================================  =================================================
``step``    ``train``: after the backward pass, before   the iteration being computed (1-based)
            the optimizer step
``eval``    ``evaluate``: after a validation batch        batches done so far (1-based)
``write``   ``checkpoint.atomic_write_bytes``: the temp   the file name (``metrics.json``), with
            file is written and fsync'ed, not yet         ``@<iteration>`` for checkpoints (``last.pt@4``)
            renamed over the target
``probe``   ``checkpoint.check_writable``: the write      the folder's name
            probe of a run / results folder
==========  ===========================================  =================================================

``key`` may be ``*`` (the first time the point is reached). Actions:

* ``kill`` (default): ``SIGKILL`` this process -- a power cut, the OOM killer, a pre-empted cloud machine.
* ``hang``: write this process's id to ``$LEMORE_FAULT_MARKER`` (if set) and sleep forever, so that a test
  can kill a whole process tree (``dvc repro`` -> papermill -> kernel) at a known point.
* an ``errno`` name (``ENOSPC``, ``EROFS``, ``EIO``, ...): raise that ``OSError`` -- a full or read-only disk.

Examples: ``LEMORE_FAULT=step:3``, ``LEMORE_FAULT=write:last.pt@4``, ``LEMORE_FAULT=write:last.pt@4:ENOSPC``.

Cost when unset: one ``os.environ.get`` per call (the calls are per iteration / batch / file, never per
pixel). The variable is read at every call, not at import, so a test can arm it with ``monkeypatch.setenv``.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import time

FAULT_ENV = "LEMORE_FAULT"
MARKER_ENV = "LEMORE_FAULT_MARKER"
POINTS = ("step", "eval", "write", "probe")


@functools.lru_cache(maxsize=8)
def parse(spec: str) -> tuple[str, str, str]:
    """``"write:last.pt@4:ENOSPC"`` -> ``("write", "last.pt@4", "ENOSPC")``; a bad spec raises ValueError."""
    parts = spec.split(":")
    if len(parts) == 2:
        parts.append("kill")
    if len(parts) != 3 or parts[0] not in POINTS or not parts[1]:
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected <point>:<key>[:<action>] with point in {list(POINTS)}")
    action = parts[2]
    if action not in ("kill", "hang") and not isinstance(getattr(errno, action, None), int):
        raise ValueError(f"{FAULT_ENV}={spec!r}: action {action!r} is not 'kill', 'hang' or an errno name "
                         "such as ENOSPC")
    return parts[0], parts[1], action


def maybe_fault(point: str, key: object) -> None:
    """Make the fault named by ``$LEMORE_FAULT`` happen if it names ``point`` and ``key``; else do nothing."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want_point, want_key, action = parse(spec)
    if point != want_point or (want_key != "*" and want_key != str(key)):
        return
    print(f"{FAULT_ENV}: {action} at {point}:{key} (pid {os.getpid()})", file=sys.stderr, flush=True)
    if action == "kill":
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # SIGKILL is delivered asynchronously; never run past the fault point
    if action == "hang":
        marker = os.environ.get(MARKER_ENV)
        if marker:
            tmp = f"{marker}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(str(os.getpid()))
            os.replace(tmp, marker)  # the watcher never reads a half-written pid
        while True:
            time.sleep(3600)
    code = getattr(errno, action)
    raise OSError(code, f"{os.strerror(code)} (injected by {FAULT_ENV}={spec})")
