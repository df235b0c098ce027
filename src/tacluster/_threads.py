"""Process-global CPU settings for the kernels (torch and faiss): thread counts
chosen for the machine's load, and denormal flushing. Every context manager
here restores exactly what it found, so no setting leaks out of its block.

On a machine whose cores are already busy, OpenMP threads spend their time
waiting at barriers: on 2 cores at a load average of 7, 20 head-training steps
took 27.7 s with 2 torch threads and 0.8 s with 1, and a faiss k-means of 9
points took 1.9 s with 2 threads and 0.4 ms with 1. On an idle machine the
extra threads are worth up to 2x, so they are only dropped when busy.

The OpenMP runtimes are shared state, and which one faiss uses depends on the
import order (measured with ``LD_DEBUG=bindings``, faiss-cpu 1.15 / torch 2.13
wheels): imported after torch, faiss binds to torch's ``libgomp.so.1`` (torch
loads it ``RTLD_GLOBAL``), so ``faiss.omp_set_num_threads`` also changes
``torch.get_num_threads()``; imported first, faiss keeps its own libgomp. The
faiss side is therefore limited through threadpoolctl on *every* OpenMP
runtime loaded (faiss's limit applies in both orders), and the torch side
through ``torch.set_num_threads``, which also sets MKL's thread count, which
torch does not report: :func:`_torch_threads` reads it back so that it is
restored too (it used to be left at 1 when a torch scope ran inside a faiss
one after torch-first imports).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import re
import sys
from pathlib import Path

import numpy as np


# -- the process: cores it may use, passive waiting, no allocation churn ------------


def available_cpus() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota
    (a container given 1.5 CPUs of a 64-core host gets 1, not 64)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by the cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``),
    None when unlimited or unreadable."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def configure_process(threads: int | None = None) -> int | None:
    """Process-wide CPU settings for a command; call it before torch or faiss
    is imported. Returns the thread count set, or None where torch's own
    default stands (nothing restricts the process).

    - **Passive OpenMP waiting** (``OMP_WAIT_POLICY=PASSIVE`` unless the user
      set one): with the default, a thread that reaches a barrier spins, and
      when another process holds the cores the spinning steals the time the
      late thread needs. Measured on 2 cores under a competing load of other
      jobs (load average 10-12): 50 head-training steps at 40 images took
      79-81 s with 2 spinning threads, 22-25 s with 2 passive ones, 17-20 s
      with 1 (benchmarks/threads.py has the whole-run numbers).
    - **Threads**: ``threads`` when given (``--threads``), else the user's
      ``OMP_NUM_THREADS``, else :func:`available_cpus` when an affinity mask or
      a cgroup quota grants fewer cores than the machine has (torch's default
      ignores both); on an unrestricted machine torch's default (its physical
      cores, not the hyper-threads) stands.
    - **No allocation churn**: glibc returns every freed block over 32 MB to
      the kernel (munmap) and the next batch faults it in again, zeroed, which
      made embedding spend more system than user time; see :func:`keep_freed_memory`.
    """
    env = os.environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None:
        n = int(threads)
    else:
        try:
            n = int(env["OMP_NUM_THREADS"])
        except (KeyError, ValueError):
            n = available_cpus()
            if n >= (os.cpu_count() or n):  # nothing restricts the process: torch's default stands
                keep_freed_memory()
                return None
    n = max(1, n)
    env["OMP_NUM_THREADS"] = str(n)
    env["MKL_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:  # an API caller imported torch already: its pools exist
        sys.modules["torch"].set_num_threads(n)
    keep_freed_memory()
    return n


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed blocks below ``threshold`` bytes for reuse instead
    of unmapping them. Returns False where there is no glibc (nothing changed).

    Measured (`tacluster cluster` of 200 photos, ``lite``, 2 cores under a
    competing load): 20.9 s of system time before, 4.8 s after, and the embed
    stage 110 -> 58 s. The resident size stays at the run's peak instead of
    falling between batches.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def threads_in_use() -> int:
    """torch's intra-op thread count now (the kernels' count after :func:`configure_process`)."""
    import torch

    return torch.get_num_threads()


def machine_is_busy() -> bool:
    """True when the 1-minute load average already fills every core."""
    try:
        return os.getloadavg()[0] >= available_cpus()
    except OSError:  # not available on this platform
        return False


# -- OpenMP (faiss) ---------------------------------------------------------------

_CONTROLLERS: dict[tuple[bool, ...], object] = {}


def _openmp_controller():
    """A threadpoolctl controller of the OpenMP runtimes loaded now.

    Cached (building one costs ~1.7 ms, a limit through it 0.02 ms); rebuilt
    when torch or faiss has been imported since, as they bring their own
    runtimes.
    """
    from threadpoolctl import ThreadpoolController

    key = tuple(name in sys.modules for name in ("torch", "faiss"))
    if key not in _CONTROLLERS:
        _CONTROLLERS[key] = ThreadpoolController().select(user_api="openmp")
    return _CONTROLLERS[key]


@contextlib.contextmanager
def _openmp_threads(n: int):
    """Every loaded OpenMP runtime (faiss's, torch's) at ``n`` threads in the block;
    each one's previous count (of the calling thread) is restored after."""
    import faiss  # noqa: F401  (its OpenMP runtime must be loaded to be seen)

    with _openmp_controller().limit(limits=n):
        yield


# -- torch ------------------------------------------------------------------------

_MKL_THREADS = re.compile(r"mkl_get_max_threads\(\) : (\d+)")


def _mkl_threads(torch) -> int | None:
    """MKL's thread count inside torch (None when torch has no MKL)."""
    found = _MKL_THREADS.search(torch.__config__.parallel_info())
    return int(found.group(1)) if found else None


def _torch_openmp_libs(torch) -> list:
    """threadpoolctl's controllers of the OpenMP runtime(s) shipped inside torch."""
    torch_dir = os.path.dirname(os.path.realpath(torch.__file__))
    return [
        lib for lib in _openmp_controller().lib_controllers
        if os.path.realpath(lib.filepath).startswith(torch_dir + os.sep)
    ]


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch at ``n`` intra-op threads in the block, then exactly as before.

    ``torch.set_num_threads`` sets torch's OpenMP count *and* MKL's, while
    ``torch.get_num_threads`` reports only the OpenMP one, which an enclosing
    faiss limit may have lowered (shared runtime). So both are read, torch is
    restored to MKL's count, and its OpenMP count is then put back on its own.
    """
    import torch

    before, mkl_before = torch.get_num_threads(), _mkl_threads(torch)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(mkl_before if mkl_before is not None else before)
        if torch.get_num_threads() != before:
            libs = _torch_openmp_libs(torch)
            for lib in libs:
                lib.set_num_threads(before)
            if not libs:  # no runtime of torch's own found: the count torch reported wins
                torch.set_num_threads(before)


# -- the public context managers -----------------------------------------------------


@contextlib.contextmanager
def one_thread_if_busy():
    """Run the block with 1 torch and 1 faiss thread when the machine is busy."""
    if not machine_is_busy():
        yield
        return
    with _torch_threads(1), _openmp_threads(1):
        yield


@contextlib.contextmanager
def one_torch_thread():
    """Run the block with 1 torch thread, whatever the machine and its load.

    For the cheap torch steps whose output feeds everything after them (text
    counterpart retrieval, head inference): torch's matrix products round
    differently with different thread counts, and the counterparts s then
    differed in the last bits between 1 and 2 threads (and TAC's labels with
    them). One thread makes s, and the no-train result, the same on every
    machine.
    """
    with _torch_threads(1):
        yield


@contextlib.contextmanager
def one_faiss_thread():
    """Run the block with 1 faiss (OpenMP) thread, whatever the machine.

    For k-means on data with exact ties (the one-hot co-association rows of
    :func:`tacluster.cluster.kmeans.consensus_labels`): which of two equidistant
    centroids wins depends on the rounding of the distance sums, which
    depends on the thread count (measured: 7 of 10 seeds gave the same
    consensus labels at 1 and 2 threads before this).

    Every OpenMP runtime loaded is limited (torch's too, since faiss may be
    using it); the block is meant for faiss calls only.
    """
    with _openmp_threads(1):
        yield


# -- denormals ----------------------------------------------------------------------


def denormals_flushed() -> bool:
    """Whether the calling thread flushes denormal floats to zero (FTZ), as
    ``torch.set_flush_denormal(True)`` makes it; torch has no getter, so a
    float32 division whose exact result is denormal is tried."""
    with np.errstate(under="ignore"):
        return bool(np.float32(np.finfo(np.float32).smallest_normal) / np.float32(4) == 0)


@contextlib.contextmanager
def flush_denormals():
    """Flush denormals to zero in the block (calling thread), then restore the
    state found: left on if it was on, off if it was off."""
    import torch

    was_on = denormals_flushed()
    if was_on or not torch.set_flush_denormal(True):  # already on, or not supported here
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
