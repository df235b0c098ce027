"""Thread counts for the CPU kernels (torch and faiss), chosen for the machine's load.

On a machine whose cores are already busy, OpenMP threads spend their time
waiting at barriers: on 2 cores at a load average of 7, 20 head-training steps
took 27.7 s with 2 torch threads and 0.8 s with 1, and a faiss k-means of 9
points took 1.9 s with 2 threads and 0.4 ms with 1. On an idle machine the
extra threads are worth up to 2x, so they are only dropped when busy.
"""

from __future__ import annotations

import contextlib
import os


def machine_is_busy() -> bool:
    """True when the 1-minute load average already fills every core."""
    try:
        return os.getloadavg()[0] >= (os.cpu_count() or 1)
    except OSError:  # not available on this platform
        return False


@contextlib.contextmanager
def one_thread_if_busy():
    """Run the block with 1 torch and 1 faiss thread when the machine is busy."""
    if not machine_is_busy():
        yield
        return
    import faiss
    import torch

    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_before)
        faiss.omp_set_num_threads(faiss_before)


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
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def one_faiss_thread():
    """Run the block with 1 faiss (OpenMP) thread, whatever the machine.

    For k-means on data with exact ties (the one-hot co-association rows of
    :func:`tacluster.cluster.consensus_labels`): which of two equidistant
    centroids wins depends on the rounding of the distance sums, which
    depends on the thread count (measured: 7 of 10 seeds gave the same
    consensus labels at 1 and 2 threads before this).
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
