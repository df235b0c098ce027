"""Process-global CPU settings (tacluster._threads): every context manager
applies its setting inside the block and restores exactly what it found."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import threadpoolctl
import torch

import tacluster._threads as threads
from tacluster._threads import (
    _mkl_threads,
    denormals_flushed,
    flush_denormals,
    one_faiss_thread,
    one_thread_if_busy,
    one_torch_thread,
)
from tacluster._threads import flush_denormals as _flush_denormals

SRC = Path(__file__).resolve().parents[1] / "src"


def global_state() -> dict:
    """Everything the context managers may touch, as seen from this thread."""
    return {
        "torch": torch.get_num_threads(),
        "mkl": _mkl_threads(torch),
        "faiss": faiss.omp_get_max_threads(),
        "threadpools": sorted((i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()),
        "flush_denormal": denormals_flushed(),
    }


@pytest.fixture
def restore_globals():
    """Put back, after the test, what the test itself sets up as a starting state."""
    torch_before, faiss_before, flush_before = torch.get_num_threads(), faiss.omp_get_max_threads(), denormals_flushed()
    yield
    torch.set_num_threads(torch_before)
    faiss.omp_set_num_threads(faiss_before)
    torch.set_flush_denormal(flush_before)


@pytest.fixture(params=[False, True], ids=["idle", "busy"])
def busy(request, monkeypatch):
    monkeypatch.setattr(threads, "machine_is_busy", lambda: request.param)
    return request.param


def _nested(outer, inner):
    @contextlib.contextmanager
    def run():
        with outer(), inner():
            yield

    return run


MANAGERS = {
    "one_torch_thread": one_torch_thread,
    "one_faiss_thread": one_faiss_thread,
    "one_thread_if_busy": one_thread_if_busy,
    "flush_denormals": flush_denormals,
    "faiss{busy}": _nested(one_faiss_thread, one_thread_if_busy),  # consensus k-means on a busy machine
    "faiss{torch}": _nested(one_faiss_thread, one_torch_thread),
    "flush{torch}": _nested(_flush_denormals, one_torch_thread),  # text-counterpart retrieval
}

STARTS = {
    "2/2/off": (2, 2, False),
    "1/1/off": (1, 1, False),
    "2/1/on": (2, 1, True),  # torch first, then faiss: with one shared runtime torch reports 1, MKL keeps 2
}


@pytest.mark.parametrize("start", list(STARTS), ids=list(STARTS))
@pytest.mark.parametrize("name", list(MANAGERS))
def test_context_manager_restores_the_exact_prior_state(name, start, busy, restore_globals):
    torch_n, faiss_n, flush = STARTS[start]
    torch.set_num_threads(torch_n)
    faiss.omp_set_num_threads(faiss_n)
    torch.set_flush_denormal(flush)
    before = global_state()
    with MANAGERS[name]():
        inside = global_state()
        x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
        faiss.Kmeans(8, 4, niter=3, seed=1).train(x)  # the runtime's pool actually used inside
    assert global_state() == before
    if "faiss" in name or (name == "one_thread_if_busy" and busy):
        assert inside["faiss"] == 1
    if "torch" in name or "busy" in name and busy:
        assert inside["torch"] == 1 and inside["mkl"] in (1, None)
    if "flush" in name:
        assert inside["flush_denormal"] is True


def test_restored_after_an_exception(restore_globals):
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    before = global_state()
    with pytest.raises(RuntimeError):
        with _flush_denormals(), one_torch_thread(), one_faiss_thread():
            raise RuntimeError("boom")
    assert global_state() == before


def test_flush_denormals_keeps_an_existing_flush_on(restore_globals):
    torch.set_flush_denormal(True)
    with _flush_denormals():
        assert denormals_flushed()
    assert denormals_flushed()  # the old version turned it off here
    torch.set_flush_denormal(False)
    with _flush_denormals():
        assert denormals_flushed()
    assert not denormals_flushed()


def test_denormals_flushed_probe_follows_torch(restore_globals):
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-denormal mode")
    assert denormals_flushed()
    torch.set_flush_denormal(False)
    assert not denormals_flushed()


_ORDER_CHECK = """
import json, sys
if sys.argv[1] == "faiss":
    import faiss, torch
else:
    import torch, faiss
import tacluster._threads as threads
from tacluster._threads import _mkl_threads, one_faiss_thread, one_thread_if_busy, one_torch_thread

def state():
    return [torch.get_num_threads(), _mkl_threads(torch), faiss.omp_get_max_threads()]

threads.machine_is_busy = lambda: True
torch.set_num_threads(2); faiss.omp_set_num_threads(2)
before = state()
with one_faiss_thread():
    faiss_inside = faiss.omp_get_max_threads()
    with one_thread_if_busy():  # as in consensus k-means on a busy machine
        pass
after_nested = state()
with one_torch_thread():
    torch_inside = state()
print(json.dumps([before, faiss_inside, after_nested, torch_inside, state()]))
"""


@pytest.mark.parametrize("first", ["faiss", "torch"])
def test_limits_apply_and_restore_in_either_import_order(first):
    # Imported after torch, faiss uses torch's libgomp (one runtime for both);
    # imported first, its own. The pytest process has one order only, so both
    # are checked in fresh interpreters.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", _ORDER_CHECK, first], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    before, faiss_inside, after_nested, torch_inside, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert faiss_inside == 1
    assert torch_inside[0] == 1 and torch_inside[1] in (1, None)
    # MKL's count too: the old managers left it at 1 after the nested case with torch imported first
    assert after_nested == before and after == before, (before, after_nested, after)


# -- the process settings of a command (configure_process) ------------------------------


@pytest.mark.parametrize("files, want", [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_cpu_quota_is_read_from_v2_and_v1_files(tmp_path, files, want):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads._cgroup_cpu_quota(tmp_path) == want


def test_an_unrestricted_process_keeps_torchs_default_and_a_restricted_one_gets_its_cores(monkeypatch,
                                                                                         restore_globals):
    for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: os.cpu_count())
    assert threads.configure_process() is None
    assert "OMP_NUM_THREADS" not in os.environ  # torch picks its own (physical cores)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)  # e.g. a container given 1.5 CPUs
    assert threads.configure_process() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1" and torch.get_num_threads() == 1


def test_available_cpus_is_capped_by_the_container_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(threads, "_cgroup_cpu_quota", lambda: 1.5)
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads, "_cgroup_cpu_quota", lambda: None)
    assert threads.available_cpus() == 64


_CONFIGURE = r"""
import json, os, sys
from tacluster._threads import configure_process
n = configure_process(1)
import torch
print(json.dumps([n, torch.get_num_threads(), os.environ["OMP_WAIT_POLICY"]]))
"""


def test_configure_process_sets_passive_waiting_and_the_thread_count_before_torch_loads():
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", _CONFIGURE], capture_output=True, text=True, env=clean)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [1, 1, "PASSIVE"]


@pytest.mark.parametrize("arg, env, want", [
    (None, {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"}, (1, "ACTIVE")),  # the user's choice stands
    (2, {"OMP_NUM_THREADS": "1"}, (2, "PASSIVE")),  # --threads wins over the environment
])
def test_configure_process_keeps_the_users_choices_and_threads_wins(monkeypatch, restore_globals, arg, env, want):
    for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert threads.configure_process(arg) == want[0]
    assert (torch.get_num_threads(), os.environ["OMP_WAIT_POLICY"]) == want  # torch was imported: set at once
    assert os.environ["OMP_NUM_THREADS"] == str(want[0])


def test_keep_freed_memory_serves_large_blocks_from_the_heap_not_fresh_mappings():
    if not threads.keep_freed_memory():
        pytest.skip("no glibc mallopt on this platform")
    code = r"""
import ctypes, importlib.util, sys
spec = importlib.util.spec_from_file_location("_threads", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
keep_freed_memory = module.keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
if sys.argv[1] == "1":
    keep_freed_memory()
before = libc.mallinfo2().hblks
block = libc.malloc(40 << 20)  # 40 MB: above glibc's largest dynamic mmap threshold (32 MB)
print(libc.mallinfo2().hblks - before)
libc.free(ctypes.c_void_p(block))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    path = str(SRC / "tacluster" / "_threads.py")  # the module alone: no package import, no torch
    mapped = [int(subprocess.run([sys.executable, "-c", code, arg, path], capture_output=True, text=True,
                                 env=env, check=True).stdout.split()[-1]) for arg in ("0", "1")]
    # glibc's default maps such a block afresh (and unmaps it on free: every batch faults it in
    # again, zeroed); kept, it comes from the heap and is reused
    assert mapped == [1, 0], mapped
