"""lemore.system: the allocator setting the engine applies, and the core count."""

from __future__ import annotations

import ctypes
import sys

import pytest

from lemore import system


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_sets_glibc_mallopt(monkeypatch):
    calls = []

    class Mallopt:  # a ctypes function: argtypes and restype can be set
        def __call__(self, param, value):
            calls.append((param, value))
            return 1

    class FakeLibc:
        def __init__(self, name):
            assert name == "libc.so.6"
            self.mallopt = Mallopt()

    monkeypatch.setattr(ctypes, "CDLL", FakeLibc)
    assert system.keep_freed_memory() is True
    assert dict(calls) == system.MALLOPT and max(v for _, v in calls) < 2**31  # fits mallopt's int
    calls.clear()
    monkeypatch.setenv(system.KEEP_FREED_MEMORY_ENV, "0")
    assert system.keep_freed_memory() is False and calls == []


def test_keep_freed_memory_leaves_other_allocators_alone(monkeypatch):
    def no_glibc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    assert system.keep_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_applies_here():
    assert system.keep_freed_memory() is True  # the real glibc accepts every value


def test_available_cores():
    assert system.available_cores() >= 1
