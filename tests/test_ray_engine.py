"""The Ray engine gives the local engine's embeddings and shares its cache."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from tacluster.embed import EmbeddingCache, embed_images
from tacluster.embed import runner as runner_mod
from tacluster.embed.ray_engine import _split_progress, run_tasks_ray
from tacluster.errors import BackboneError, InputError
from tacluster.testing import TinyBackbone

_SKIP = "Ray is not installed: pip install 'tacluster[ray]' to test the Ray engine"

LOCAL = runner_mod.run_tasks  # the sequential engine, before any test patches it


PixelBackbone = TinyBackbone  # deterministic; raises after ``fail_after`` batches


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason=_SKIP)
    # Actors unpickle the test backbone; this module is not importable there.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(12):
        (root / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / f"c{i % 3}" / f"{i:02d}.png")
    return root


@pytest.fixture
def small_tasks(monkeypatch):
    # Two images per task, so a dozen images make six tasks spread over the actors.
    monkeypatch.setattr(runner_mod, "_TASK_IMAGES", 2)


def _embed(folder, engine, monkeypatch, backbone=None, **kw):
    monkeypatch.setattr(runner_mod, "run_tasks", engine)
    return embed_images(folder, backbone or PixelBackbone(), batch_size=2, progress=False, num_workers=0, **kw)


def test_ray_equals_local_and_shares_the_cache(ray_local, folder, tmp_path, small_tasks, monkeypatch):
    local = _embed(folder, LOCAL, monkeypatch)
    cache = tmp_path / "cache"
    on_ray = _embed(folder, run_tasks_ray, monkeypatch, cache_dir=cache)
    assert on_ray.paths == local.paths and len(on_ray.paths) == 12
    assert on_ray.stats.n_computed == 12
    for name in ("image", "joint"):
        np.testing.assert_allclose(on_ray.arrays[name], local.arrays[name], rtol=1e-6, atol=1e-7)
    # The actors wrote the shards the local engine reads: a local rerun computes nothing.
    again = _embed(folder, LOCAL, monkeypatch, cache_dir=cache)
    assert again.stats.n_cached == 12 and again.stats.n_computed == 0
    np.testing.assert_array_equal(again.arrays["image"], on_ray.arrays["image"])


def test_killed_ray_run_resumes_on_either_engine(ray_local, folder, tmp_path, small_tasks, monkeypatch):
    cache = tmp_path / "cache"
    engine = lambda tasks, worker: run_tasks_ray(tasks, worker, num_actors=1)  # noqa: E731  deterministic order
    with pytest.raises(BackboneError, match="simulated crash"):
        _embed(folder, engine, monkeypatch, backbone=PixelBackbone(fail_after=2), cache_dir=cache)
    assert len(EmbeddingCache(cache, "tiny0001", ("image", "joint"))) == 4  # two finished batches

    resumed = _embed(folder, run_tasks_ray, monkeypatch, cache_dir=cache)
    assert resumed.stats.n_cached == 4 and resumed.stats.n_computed == 8
    reference = _embed(folder, LOCAL, monkeypatch)
    np.testing.assert_allclose(resumed.arrays["joint"], reference.arrays["joint"], rtol=1e-6, atol=1e-7)


def test_results_keep_task_order_and_progress_runs_on_the_driver(ray_local):
    seen = []

    def work(task, on_batch=None):
        return task * 10

    import functools

    out = run_tasks_ray(list(range(7)), functools.partial(work, on_batch=seen.append), num_actors=2)
    assert out == [0, 10, 20, 30, 40, 50, 60]
    assert seen == [1] * 7  # plain ints have no .keys: one tick per task
    assert run_tasks_ray([], work) == []


def test_bad_parameters(ray_local):
    with pytest.raises(InputError, match="num_actors=0"):
        run_tasks_ray([1], lambda t: t, num_actors=0)
    with pytest.raises(InputError, match="num_cpus_per_actor"):
        run_tasks_ray([1], lambda t: t, num_cpus_per_actor=0)


def test_split_progress_leaves_other_workers_alone():
    def work(task, scale=1, on_batch=None):
        return task * scale

    import functools

    plain, progress = _split_progress(functools.partial(work, scale=3, on_batch=print))
    assert progress is print and plain(2) == 6 and "on_batch" not in plain.keywords
    f = lambda t: t  # noqa: E731
    assert _split_progress(f) == (f, None)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(InputError, match=r"pip install 'tacluster\[ray\]'"):
        run_tasks_ray([1], lambda t: t)


def test_engine_ray_through_the_public_api(ray_local, folder, small_tasks):
    """`embed_images(..., engine="ray")` (what `tacluster cluster --engine ray` calls) equals the local path."""
    local = embed_images(folder, PixelBackbone(), batch_size=2, progress=False, num_workers=0)
    on_ray = embed_images(folder, PixelBackbone(), batch_size=2, progress=False, num_workers=0, engine="ray")
    assert on_ray.paths == local.paths
    np.testing.assert_allclose(on_ray.arrays["image"], local.arrays["image"], rtol=1e-6, atol=1e-7)
    with pytest.raises(InputError, match="engine"):
        embed_images(folder, PixelBackbone(), progress=False, engine="spark")
