"""Ray engine for the embedding stage: :func:`run_tasks` on Ray actors.

A drop-in for :func:`tacluster.embed.runner.run_tasks`: same arguments,
same results in task order. The worker (a ``functools.partial`` of the
runner's ``_embed_task`` holding the backbone and the cache) is put in Ray's
object store once per call; each actor unpickles it once per call, so the
backbone is loaded once per actor, not once per task. Actors stay up between
calls (starting one, and importing torch in it, costs more than a small task). Actors write the same cache shards as the
local engine (atomic writes, content keys), so a run on either engine reuses
the other's work and a killed run resumes after its finished batches. On a
multi-machine cluster the cache folder must be a shared file system path
(NFS, a mounted bucket) that every node sees under the same name.

``pip install "tacluster[ray]"``; nothing here imports ray at module import.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Sequence, TypeVar

from tacluster.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

#: Keyword of the runner's worker that carries a progress callback; a callback
#: bound to the driver's tqdm bar cannot run inside an actor, so it is called
#: on the driver once per finished task instead.
_PROGRESS_KEYWORD = "on_batch"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(
            "engine='ray' needs Ray, which is not installed; pip install 'tacluster[ray]' "
            "(or use engine='local')"
        ) from None
    return ray


def _split_progress(worker: Callable) -> tuple[Callable, Callable[[int], object] | None]:
    """Remove a driver-side progress callback from a partial worker."""
    if isinstance(worker, functools.partial) and _PROGRESS_KEYWORD in worker.keywords:
        keywords = dict(worker.keywords)
        progress = keywords.pop(_PROGRESS_KEYWORD)
        return functools.partial(worker.func, *worker.args, **keywords), progress
    return worker, None


def run_tasks_ray(
    tasks: Sequence[T],
    worker: Callable[[T], R],
    *,
    num_actors: int | None = None,
    num_cpus_per_actor: float = 1,
    num_gpus_per_actor: float = 0,
    address: str | None = None,
) -> list[R]:
    """Run ``worker`` on every task on a pool of Ray actors; results in task order.

    Parameters
    ----------
    tasks : sequence
        Self-contained tasks (the runner's :class:`~tacluster.embed.runner.EmbedTask`).
    worker : callable
        Picklable; each actor holds one copy for all the tasks it runs.
    num_actors : int, optional
        Default: as many as the cluster's CPUs (or GPUs, when
        ``num_gpus_per_actor > 0``) allow, at most one per task.
    num_cpus_per_actor, num_gpus_per_actor : float
        Ray resources each actor reserves (and torch threads it uses).
    address : str, optional
        Ray cluster to join when Ray is not initialised yet (default: the
        ``RAY_ADDRESS`` environment variable, else a local instance).

    Returns
    -------
    list
        ``worker(task)`` for each task.

    Raises
    ------
    InputError
        When Ray is not installed or a parameter is out of range.
    Exception
        The first error a task raised, re-raised on the driver (Ray keeps the
        original type, e.g. :class:`~tacluster.errors.BackboneError`); the
        shards written before it stay in the cache.
    """
    ray = _import_ray()
    if num_actors is not None and (not isinstance(num_actors, int) or num_actors < 1):
        raise InputError(f"num_actors={num_actors!r} must be a positive integer or None")
    if num_cpus_per_actor <= 0 or num_gpus_per_actor < 0:
        raise InputError(
            f"num_cpus_per_actor={num_cpus_per_actor!r} must be > 0 and "
            f"num_gpus_per_actor={num_gpus_per_actor!r} >= 0"
        )
    if not tasks:
        return []
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    worker, progress = _split_progress(worker)
    if num_actors is None:
        res = ray.cluster_resources()
        by_cpu = int(res.get("CPU", 1) // num_cpus_per_actor)
        by_gpu = int(res.get("GPU", 0) // num_gpus_per_actor) if num_gpus_per_actor else by_cpu
        num_actors = max(1, min(by_cpu, by_gpu))
    actors = _actors(ray, min(num_actors, len(tasks)), num_cpus_per_actor, num_gpus_per_actor)
    # Wrapped in a list so Ray hands the actor the reference, not the value: the
    # actor fetches (unpickles) the worker once per call, not once per task.
    worker_ref = [ray.put(worker)]
    pool = ray.util.ActorPool(actors)
    results = []
    for task, result in zip(tasks, pool.map(lambda actor, task: actor.run.remote(worker_ref, task), tasks)):
        results.append(result)
        if progress is not None:
            progress(len(getattr(task, "keys", ())) or 1)
    return results


# Actors outlive one call: starting a worker process (and importing torch in
# it) costs seconds to tens of seconds, more than a small task. Keyed by the
# Ray job, so a ray.shutdown() + ray.init() starts afresh.
_ACTORS: dict[tuple, list] = {}


def _actors(ray, n: int, num_cpus: float, num_gpus: float) -> list:
    key = (ray.get_runtime_context().get_job_id(), num_cpus, num_gpus)
    for stale in [k for k in _ACTORS if k[0] != key[0]]:
        del _ACTORS[stale]
    pool = _ACTORS.setdefault(key, [])
    if len(pool) < n:
        cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_TaskActor)
        pool.extend(cls.remote(max(1, int(num_cpus))) for _ in range(n - len(pool)))
    return pool[:n]


class _TaskActor:
    """Runs tasks with the worker of the current call (fetched once per call)."""

    def __init__(self, n_threads: int):
        import torch

        # Ray sets OMP_NUM_THREADS=1 in actors; use the CPUs reserved instead.
        torch.set_num_threads(n_threads)
        self._ref = None
        self._fn = None

    def run(self, worker_ref: list, task):
        import ray

        if self._ref != worker_ref[0]:
            self._fn, self._ref = None, None  # drop the previous backbone first
            self._fn, self._ref = ray.get(worker_ref[0]), worker_ref[0]
        return self._fn(task)
