"""From a folder of images to a finished run directory (what ``tacluster cluster`` does).

Stages: list + embed (cached) -> noun bank (cached) -> fit -> name clusters ->
2-D map -> write outputs (each file atomically) -> report. The estimator does
the clustering; this module only wires stages and files together.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tacluster._atomic import atomic_write_bytes
from tacluster._paths import path_to_text
from tacluster._threads import threads_in_use
from tacluster._validation import check_n_clusters
from tacluster.errors import CollapseWarning, InputError, ModelFileError
from tacluster.methods import TEXT_METHODS
from tacluster.report.layout import map_coordinates
from tacluster.run.cluster_map import assign_run_clusters, read_cluster_map
from tacluster.run.duplicates import DUPLICATES_FILE, Duplicates, collection_duplicates
from tacluster.run.outliers import outlier_mask, outlier_thresholds
from tacluster.run.rundir import (
    RUN_FILE, begin_writing, check_out_dir, check_same_input, commit_outputs, record_failed_run, recover_pending,
    run_lock,
)
from tacluster.run.tables import (
    csv_bytes,
    parquet_bytes,
    read_assignments,
    read_labels,
    text_rows,
    write_run_tables,
)
from tacluster.run.unloaded import UnloadedBackbone, backbone_or_stand_in, unnamed_clusters

if TYPE_CHECKING:
    from tacluster.embed import EmbeddingResult
    from tacluster.embed.backbones.auto import AutoChoice
    from tacluster.embed.backbones.base import Backbone


@dataclass
class ClusterRun:
    """What :func:`cluster_images` produced."""

    out_dir: Path
    paths: list[str]
    labels: np.ndarray
    confidence: np.ndarray
    names: list[str]
    skipped: list[tuple[str, str]]
    report: Path | None
    timings_s: dict[str, float] = field(default_factory=dict)
    #: Entries of an input list that named a file already listed (clustered once).
    duplicates: int = 0
    #: ``(usable, total, unknown words)`` of a ``vocabulary`` file; None for WordNet.
    vocabulary_use: tuple[int, int, list[str]] | None = None
    #: The fit's :class:`~tacluster.errors.CollapseWarning` messages (also in run.json's ``warnings``).
    warnings: list[str] = field(default_factory=list)


def recommended_method(backbone_name: str) -> str:
    """The method ``--method auto`` resolves to for a backbone.

    CLIP-like backbones: the paper's TAC. The offline ``lite`` backbone: its
    text side is too weak for TAC (held-out ACC, 10 seeds: 15-Scene TAC
    no-train 43.1 vs k-means 77.6; docs/tuning.md), so the image side is
    clustered and the nouns only name the clusters. Which image-side method
    is chosen per collection without labels (``method="auto"``,
    :mod:`tacluster.choices.choose_method`: k-means, spectral clustering, or spectral
    clustering of power-normalised features, whichever partition best follows
    the collection's neighbour graph); measured on nine domains with a
    leave-one-domain-out check in docs/tuning.md (issue 19).
    """
    return "auto" if backbone_name.split(":")[0] == "lite" else "tac"


def _load_backbone_quietly(name: str, device: str, offline: bool | None, progress: bool):
    """load_backbone, with the Hub's download bars only when progress is shown."""
    from tacluster.embed.backbones import load_backbone
    from tacluster.embed.backbones.hub import hub_progress

    with hub_progress(progress and sys.stderr.isatty()):  # in a log, a bar is a stream of carriage returns
        return load_backbone(name, device=device, offline=offline)


def top_reasons(skipped: Sequence[tuple[str, str]], n: int = 3) -> str:
    """The commonest skip reasons with their counts, e.g. ``"2 missing, 1 not an image"``."""
    from collections import Counter

    counts = Counter(reason.split(" (")[0] for _, reason in skipped)
    top = [f"{c} {r}" for r, c in counts.most_common(n)]
    rest = len(counts) - len(top)
    return ", ".join(top) + (f" and {rest} other reason(s)" if rest > 0 else "")


def versions() -> dict[str, str]:
    import faiss
    import numpy
    import torch

    from tacluster import __version__

    return {
        "tacluster": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
        "torch": torch.__version__, "faiss": getattr(faiss, "__version__", "?"),
    }


@dataclass
class _RunPlan:
    """A :func:`cluster_images` request once checked, before the run directory is taken: the
    options later stages read, the opened input, the run's settings and their key."""

    source: str | os.PathLike | None
    backbone: str
    seed: int
    device: str
    batch_size: int | None
    engine: str | None
    vocabulary: str | None
    estimator_params: dict | None
    progress: bool
    offline: bool | None
    noun_bank: str
    n_clusters: int | str  # a plain int, or "auto"
    resolved_method: str
    cache: Path
    external: tuple | None  # the opened --embeddings (and joint) sources; None for images
    src: Path
    settings: dict
    run_key: str
    #: What ``--backbone auto`` became, why, and the line that says it (None when a backbone was named).
    backbone_choice: AutoChoice | None = None
    #: ``--ranking-precision``: the precision of ``--noun-bank candidates``'s ranking bank.
    ranking_precision: str = "auto"
    #: ``--image-precision``: the image tower's precision (:mod:`tacluster.embed.precision`).
    image_precision: str = "auto"


def _plan_run(source, out: Path, n_clusters: int | str, *, backbone: str, method: str, seed: int, device: str,
              batch_size: int | None, engine: str | None, cache_dir, vocabulary: str | None,
              estimator_params: dict | None, progress: bool, offline: bool | None, embeddings, joint_embeddings,
              embedding_column: str | None, noun_bank: str, ranking_precision: str = "auto",
              image_precision: str = "auto") -> _RunPlan:
    """Every argument of :func:`cluster_images` checked and the input opened, before anything is loaded or embedded."""
    from tacluster.nouns.bank import default_cache_dir

    n_clusters = _check_request(n_clusters, method, source, embeddings, joint_embeddings, embedding_column)
    from tacluster.nouns.exact import NOUN_BANK_MODES

    if noun_bank not in NOUN_BANK_MODES:
        raise InputError(f"--noun-bank {noun_bank!r} is not one of {', '.join(NOUN_BANK_MODES)}")
    _check_ranking_precision(ranking_precision, noun_bank)
    _refuse_embedding_options(embeddings, batch_size=batch_size, engine=engine,
                              image_precision=None if image_precision == "auto" else image_precision)
    _check_image_precision(image_precision, device, engine)
    if vocabulary is not None:  # a missing or empty file is refused now, not after hours of embedding
        from tacluster.nouns.vocabulary import load_vocabulary

        load_vocabulary(vocabulary)
    backbone, choice = _resolve_backbone(backbone, embeddings, offline, cache_dir)
    resolved_method = recommended_method(backbone) if method == "auto" else method
    # every setting checked before anything is loaded or embedded (the backbone's tau is valid by construction)
    _make_estimator(None, n_clusters, resolved_method, seed, device, progress, estimator_params).validate_params()
    external, src = _open_input(source, embeddings, joint_embeddings, embedding_column)
    if external is None:
        out_r, src_r = out.resolve(), src.resolve()
        if out_r == src_r:
            raise InputError(f"--out {str(out)!r} is the input folder {str(source)!r}: the run's files would "
                             "mix with the images and every later run over it; choose another --out")
    settings = _run_settings(src, external, n_clusters, backbone, method, resolved_method, seed, vocabulary,
                             estimator_params, joint_embeddings, embedding_column)
    if noun_bank != "auto":  # an explicit choice is part of the run key ("auto" keeps the keys it always had)
        settings["noun_bank"] = noun_bank
    for name, value in (("ranking_precision", ranking_precision), ("image_precision", image_precision)):
        if value != "auto":
            settings[name] = value
    run_key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _RunPlan(source, backbone, seed, device, batch_size, engine, vocabulary, estimator_params, progress,
                    offline, noun_bank, n_clusters, resolved_method, cache, external, src, settings, run_key, choice,
                    ranking_precision, image_precision)


def _check_ranking_precision(ranking_precision: str, noun_bank: str) -> None:
    """``--ranking-precision`` is one of its values and names a bank that runs (the candidates' ranking bank)."""
    from tacluster.nouns.precision import RANKING_PRECISIONS

    if ranking_precision not in RANKING_PRECISIONS:
        raise InputError(f"--ranking-precision {ranking_precision!r} is not one of {', '.join(RANKING_PRECISIONS)}")
    if ranking_precision != "auto" and noun_bank == "full":
        raise InputError(f"--ranking-precision {ranking_precision} sets the ranking bank of --noun-bank candidates; "
                         "--noun-bank full builds no ranking bank (drop one of the two)")


def _check_image_precision(image_precision: str, device: str, engine: str | None) -> None:
    """``--image-precision`` is one of its values, and int8 is asked for where it runs (a CPU, the local
    engine), before the backbone is loaded (:func:`tacluster.embed.precision.check_image_request`)."""
    from tacluster.embed.precision import check_image_request

    check_image_request(image_precision, _device_used(device), engine or "local")


def _resolve_backbone(backbone: str, embeddings, offline: bool | None, cache_dir):
    """``(name, AutoChoice or None)``: ``"auto"`` resolved (:mod:`tacluster.embed.backbones.auto`)."""
    if backbone != "auto":
        return backbone, None
    from tacluster.embed.backbones.auto import FALLBACK, AutoChoice, resolve_auto

    if embeddings is not None:  # nothing to embed: the vectors' model is named with --backbone, else lite as before
        return FALLBACK, AutoChoice(FALLBACK, "embeddings given")
    choice = resolve_auto(offline, cache_dir=cache_dir)
    return choice.backbone, choice


def cluster_images(
    source: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    n_clusters: int | str,
    *,
    backbone: str = "auto",
    method: str = "auto",
    seed: int = 0,
    device: str = "auto",
    batch_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    vocabulary: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
    estimator_params: dict | None = None,
    command: str | None = None,
    engine: str | None = None,
    offline: bool | None = None,
    embeddings: str | os.PathLike | None = None,
    joint_embeddings: str | os.PathLike | None = None,
    embedding_column: str | None = None,
    noun_bank: str = "auto",
    ranking_precision: str = "auto",
    image_precision: str = "auto",
) -> ClusterRun:
    """Cluster every image of ``source`` and write the run directory ``out_dir``.

    Parameters
    ----------
    source : folder, or .csv / .txt list of image paths; None with ``embeddings``
    embeddings : vectors made elsewhere, clustered instead of embedding images
        (see :func:`cluster_embeddings`); give exactly one of ``source`` and this
    joint_embeddings, embedding_column : see :func:`cluster_embeddings`
    out_dir : directory to write (see the README for its files)
    n_clusters : K, or ``"auto"`` to estimate it (candidates and scores go to run.json)
    backbone : backbone name: ``"auto"`` (CLIP when cached or downloadable, else ``"lite"``;
        :mod:`tacluster.embed.backbones.auto`), ``"lite"``, ``"clip"``, ``"hf:/path"``, ``"openclip:ARCH//path.pt"``
    method : ``"auto"`` (per backbone, :func:`recommended_method`: with ``lite``
        the label-free choice of :mod:`tacluster.choices.choose_method`, recorded in
        run.json as ``method_choice``), ``"tac"``, ``"no-train"``, ``"kmeans"``
        or ``"spectral"``
    batch_size, engine : images per forward pass (default 64) and ``"local"`` (default) or
        ``"ray"``; refused with ``embeddings`` (nothing is embedded)
    cache_dir : embedding / noun-bank cache root (default: ``~/.cache/tacluster``)
    vocabulary : a file with one noun per line (default: WordNet nouns)
    offline : never download a named model (``HF_HUB_OFFLINE=1`` does the same);
        by default a model such as ``"clip"`` is fetched on first use
    noun_bank : ``"full"`` (the paper: every noun with every template),
        ``"candidates"`` (rank with one template, embed exactly only each
        semantic centre's candidates; :mod:`tacluster.nouns.exact`) or ``"auto"``
        (candidates on a CPU unless the full bank is cached; full on a GPU and
        for backbones without templates); run.json records which ran
    ranking_precision : the candidates' ranking bank in ``"float32"``, ``"int8"``
        (CPU) or ``"auto"`` (int8 where measured faster on this machine;
        :mod:`tacluster.nouns.precision`); the exact vectors stay float32
    image_precision : the image tower in ``"float32"``, ``"int8"`` (CPU, local engine: its
        Linear layers quantised) or ``"auto"`` (int8 where the images are cached in int8, or a
        probe on this machine measured it >= 1.2x faster at min cosine >= 0.999;
        :mod:`tacluster.embed.precision`); run.json ``counts.image_precision`` says which ran,
        the saved model records it; refused (unless ``"auto"``) with ``embeddings``
    """
    t_start, timings, out = time.perf_counter(), {}, Path(out_dir)
    plan = _plan_run(source, out, n_clusters, backbone=backbone, method=method, seed=seed, device=device,
                     batch_size=batch_size, engine=engine, cache_dir=cache_dir, vocabulary=vocabulary,
                     estimator_params=estimator_params, progress=progress, offline=offline, embeddings=embeddings,
                     joint_embeddings=joint_embeddings, embedding_column=embedding_column, noun_bank=noun_bank,
                     ranking_precision=ranking_precision, image_precision=image_precision)
    with run_lock(out):  # one command writes a run directory at a time
        check_out_dir(out, plan.run_key, overwrite)
        if plan.backbone_choice is not None and plan.backbone_choice.message and progress:
            print(plan.backbone_choice.message, file=sys.stderr)
        bb, emb, nouns = _fit_inputs(plan, out, timings, overwrite)
        u = emb.arrays["image"]
        joint = emb.arrays.get("joint", u)
        words, bank, unknown = nouns.words, nouns.bank, nouns.unknown

        est = _make_estimator(bb, plan.n_clusters, plan.resolved_method, seed, device, progress, estimator_params)
        with _timed(timings, "fit"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CollapseWarning)
            est.fit(u, noun_embeddings=bank.embeddings, nouns=bank.words, joint_embeddings=None if joint is u else joint,
                    exact_noun_embeddings=nouns.exact)
        fit_warnings = _reissue_others(caught, CollapseWarning)
        timings.update({f"fit.{k}": v for k, v in est.timings_.items()})
        with _timed(timings, "naming"):
            named = _name_run(est, bb, nouns, joint, emb, fit_warnings)

        with _timed(timings, "duplicates"):
            dups = collection_duplicates(emb, backbone, cache_dir=plan.cache, progress=progress)
        _write_outputs(out, plan, est, bb, emb, nouns, named, dups, fit_warnings, command, timings, t_start)
        report_path = _report_if_asked(out, report, progress)
        return ClusterRun(out, emb.paths, est.labels_, est.confidence_, named.names, emb.skipped, report_path, timings,
                          duplicates=emb.stats.n_duplicates,
                          vocabulary_use=(len(bank.words), len(words), unknown) if vocabulary is not None else None,
                          warnings=fit_warnings)


def _name_run(est, bb, nouns: _Nouns, joint, emb, fit_warnings: list[str]):
    """Each cluster's name and top nouns; without a noun side (:class:`UnloadedBackbone`), numbered
    clusters, and the run's warnings say why."""
    from tacluster.evaluate.naming import name_clusters

    if isinstance(bb, UnloadedBackbone):
        fit_warnings.append(bb.note())
        return unnamed_clusters(est.n_clusters_)
    return name_clusters(joint, est.labels_, est.n_clusters_, nouns.naming_bank(est), nouns.bank.words,
                         class_probs=emb.arrays.get("probs"))


def _fit_inputs(plan: _RunPlan, out: Path, timings: dict[str, float],
                overwrite: bool) -> tuple[Backbone, EmbeddingResult, _Nouns]:
    """What the fit reads: the backbone loaded, the images embedded (or the vectors read) and
    checked against the run directory, the noun bank."""
    from tacluster.embed import embed_images, list_inputs

    with _timed(timings, "load_backbone"):
        bb = backbone_or_stand_in(lambda: _load_backbone_quietly(plan.backbone, plan.device, plan.offline,
                                                                  plan.progress),
                                  plan.backbone, from_embeddings=plan.external is not None,
                                  text_method=plan.resolved_method in TEXT_METHODS, method=plan.resolved_method)
    if plan.external is None:
        listed = list_inputs(plan.src)
        _check_k_fits(plan.n_clusters, len(listed.paths), "image files", plan.src)  # before hours of embedding
        with _timed(timings, "embed"):
            emb = embed_images(listed, bb, cache_dir=plan.cache, batch_size=plan.batch_size or 64,
                               progress=plan.progress, engine=plan.engine or "local",
                               image_precision=plan.image_precision)
    else:
        with _timed(timings, "read_embeddings"):
            emb = _read_external(plan.external, bb, plan.backbone,
                                 (plan.estimator_params or {}).get("large_scale", "auto"))
    _check_usable(emb, plan.n_clusters, out, plan.run_key, plan.source, plan.src)
    check_same_input(out, plan.run_key, [path_to_text(p) for p in emb.paths], overwrite)
    u = emb.arrays["image"]
    joint = emb.arrays.get("joint", u)
    with _timed(timings, "noun_bank"):
        nouns = _noun_side(bb, plan.backbone, plan.vocabulary, plan.cache, plan.progress, joint,
                           plan.external is not None, joint is not u, plan.noun_bank, _device_used(plan.device),
                           plan.ranking_precision)
    return bb, emb, nouns


def _write_outputs(out: Path, plan: _RunPlan, est, bb, emb, nouns: _Nouns, named, dups: Duplicates,
                   fit_warnings: list[str], command: str | None, timings: dict[str, float], t_start: float) -> None:
    """The fitted run's 2-D map and run.json record, then every file of the run directory (timed as ``write``)."""
    tic = time.perf_counter()
    xy = map_coordinates(emb.arrays["image"], plan.seed)
    record = _run_record(plan, est, bb, emb, nouns, dups, fit_warnings)
    _write_run(out, est, bb, emb, named, xy, record, plan.run_key, command, timings, tic, t_start, dups.csv_bytes())


def _run_record(plan: _RunPlan, est, bb, emb, nouns: _Nouns, dups: Duplicates, fit_warnings: list[str]) -> dict:
    """What run.json records besides its timings and choices: settings, warnings, counts, duplicates, sources."""
    from tacluster.embed.reader import is_folder_left_out

    external, bank, device = plan.external, nouns.bank, plan.device
    # folders left out (a run or export folder inside INPUT, a loop) are listed in skipped.csv
    # with their reason, but they are not files: counted apart, so inputs = assigned + skipped
    n_folders = sum(is_folder_left_out(p, r) for p, r in emb.skipped)
    n_skipped_files = len(emb.skipped) - n_folders
    return {
        "settings": {**plan.settings, "device": device, "device_used": _device_used(device),
                     "threads": threads_in_use(),
                     **({"batch_size": plan.batch_size or 64, "engine": plan.engine or "local"}
                        if external is None else {}),
                     "cache_dir": path_to_text(str(plan.cache.resolve())), "backbone_fingerprint": bb.fingerprint,
                     "n_centres": getattr(est, "semantic_centres_", np.zeros((0,))).shape[0],
                     "kept_nouns": len(est.kept_nouns_), "noun_bank": nouns.mode,
                     **({"vocabulary_words": len(nouns.words), "vocabulary_usable": len(bank.words),
                         "vocabulary_unknown": nouns.unknown} if plan.vocabulary is not None else {})},
        **({"warnings": fit_warnings} if fit_warnings else {}),
        **({"backbone_choice": plan.backbone_choice.record()} if plan.backbone_choice is not None else {}),
        "counts": {"inputs": len(emb.paths) + n_skipped_files, "assigned": len(emb.paths),
                   "skipped": n_skipped_files, **({"folders_left_out": n_folders} if n_folders else {}),
                   "embedded_now": emb.stats.n_computed,
                   **({"image_precision": emb.precision.record()} if emb.precision is not None else {}),
                   "from_cache": emb.stats.n_cached, "duplicates": emb.stats.n_duplicates,
                   **({"noun_bank": nouns.counts(est)} if nouns.mode == "candidates" else {})},
        "duplicates": dups.summary(),
        **({"embeddings": {"image": external[0].describe(),
                           **({"joint": external[1].describe()} if external[1] is not None else {})}}
           if external is not None else {}),
    }


def _report_if_asked(out: Path, report: bool, progress: bool) -> Path | None:
    """The run's report.html, built when ``report`` is set; None otherwise."""
    if not report:
        return None
    from tacluster.report.html import build_report

    return build_report(out, progress=progress)


def _reissue_others(caught: list, kind: type[Warning]) -> list[str]:
    """The messages of the ``kind`` warnings among ``caught``; every other warning is shown as it would have been."""
    kept = []
    for w in caught:
        if issubclass(w.category, kind):
            kept.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return kept


class _timed:
    """``with _timed(timings, "stage"):`` records the block's wall time under ``"stage"``."""

    def __init__(self, timings: dict[str, float], key: str):
        self.timings, self.key = timings, key

    def __enter__(self) -> None:
        self.tic = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.key] = time.perf_counter() - self.tic


def _check_request(n_clusters, method, source, embeddings, joint_embeddings, embedding_column):
    """The arguments of :func:`cluster_images` that need no file: K (as a plain int or "auto") and method."""
    from tacluster.estimator import METHODS

    if method != "auto" and method not in METHODS:
        raise InputError(f"method={method!r} is not one of auto, {', '.join(METHODS)}")
    k = check_n_clusters(n_clusters, name="--k", allow_auto=True)  # np.int64(10) is a valid K; run.json needs an int
    _check_sources(source, embeddings, joint_embeddings, embedding_column, "cluster")
    return k


def _check_sources(source, embeddings, joint_embeddings, embedding_column, verb: str) -> None:
    """Exactly one of INPUT (images) and ``--embeddings``; the embedding options only with the latter."""
    if (source is None) == (embeddings is None):
        raise InputError("give either INPUT (images) or --embeddings (vectors made elsewhere), not both"
                         if source is not None else f"nothing to {verb}: give INPUT (images) or --embeddings")
    if embeddings is None and (joint_embeddings is not None or embedding_column is not None):
        raise InputError("--joint-embeddings and --embedding-column go with --embeddings, not with INPUT images")


def _refuse_embedding_options(embeddings, **options) -> None:
    """Options of the embedding stage (``batch_size=64``: ``--batch-size``) are refused with
    ``--embeddings``, where nothing is embedded; None means not given."""
    given = [name for name, value in options.items() if value is not None]
    if embeddings is not None and given:
        flags = " and ".join("--" + name.replace("_", "-") for name in given)
        raise InputError(f"{flags} set how images are embedded, but --embeddings vectors are read, not embedded; "
                         f"drop {flags}")


def _open_input(source, embeddings, joint_embeddings, embedding_column):
    """``(external, src)``: the opened ``--embeddings`` (and joint) sources, or None for images, and the input path."""
    if embeddings is None:
        src = Path(source)
        if not src.exists() and not glob.has_magic(str(source)):  # a quoted pattern is listed by the reader
            raise InputError(f"input {str(source)!r} does not exist; give a folder of images or a .csv/.txt list")
        return None, src
    from tacluster.embed.external import open_embeddings

    external = (open_embeddings(embeddings, column=embedding_column),
                None if joint_embeddings is None
                else open_embeddings(joint_embeddings, column=embedding_column, what="--joint-embeddings"))
    return external, Path(embeddings)


def _run_settings(src, external, n_clusters, backbone, method, resolved_method, seed, vocabulary,
                  estimator_params, joint_embeddings, embedding_column) -> dict:
    """What defines the run (its ``run_key`` is their hash): a rerun with the same settings may resume."""
    settings = {
        "input": path_to_text(str(src.resolve())) if external is None else None,
        "n_clusters": n_clusters, "backbone": backbone,
        "method": method, "resolved_method": resolved_method, "seed": seed,
        "vocabulary": vocabulary or "wordnet", "estimator_params": estimator_params or {},
    }
    if external is not None:
        settings["embeddings"] = path_to_text(str(src.resolve()))
        if joint_embeddings is not None:
            settings["joint_embeddings"] = path_to_text(str(Path(joint_embeddings).resolve()))
        if embedding_column is not None:
            settings["embedding_column"] = embedding_column
    return settings


def _check_usable(emb, n_clusters, out: Path, run_key: str, source, src: Path) -> None:
    """No usable image (the reasons are kept in ``out/skipped.csv``), or K above their number: one clear error."""
    n_usable = len(emb.paths)
    if n_usable == 0:
        from tacluster.embed.reader import SUPPORTED_NOTE

        listed = record_failed_run(out, run_key, emb.skipped, "no usable images")
        where = f"; every skipped file is listed in {str(listed)!r}" if listed else ""
        if emb.skipped:
            raise InputError(
                f"no usable images in {str(source)!r} ({len(emb.skipped)} file(s) skipped): "
                f"{top_reasons(emb.skipped)}{where}"
            )
        raise InputError(
            f"no usable images in {str(source)!r} (no image files found); " + SUPPORTED_NOTE
        )
    _check_k_fits(n_clusters, n_usable, "usable images", src)


#: ``--k auto`` searches K from 2 to at most 4/5 of the images: it needs 3.
MIN_IMAGES_AUTO_K = 3


def _check_k_fits(n_clusters, n: int, what: str, src) -> None:
    """K against ``n`` images (the files listed before embedding, the usable ones after): one clear error."""
    where = f" in {str(src)!r}" if src is not None else ""
    if n == 1 and what == "image files":
        return  # decoding it is cheap, and then the error can say whether it is usable at all
    if n == 1:
        raise InputError(f"only 1 {what[:-1]}{where}: clustering needs at least 2 images (K is at least 2)")
    if n_clusters == "auto" and 0 < n < MIN_IMAGES_AUTO_K:
        raise InputError(f"--k auto needs at least {MIN_IMAGES_AUTO_K} images and found {n} {what}{where}; "
                         f"give --k 2")
    if n_clusters != "auto" and n_clusters > n > 0:
        raise InputError(f"--k {n_clusters} is larger than the {n} {what} found{where}; use --k {n} or fewer")


@dataclass
class _Nouns:
    """The noun side of a run: the vocabulary, its bank (``mode="candidates"``: the
    one-template ranking bank, with ``exact`` giving the exact vectors of its rows)."""

    words: list[str]
    bank: object  # NounBank
    unknown: list[str]
    mode: str  # what ran: "full" or "candidates"
    exact: object = None  # callable rows -> exact vectors, or None
    store: object = None  # the ExactNounStore behind ``exact``
    precision: object = None  # the RankingPrecision the ranking bank was built in

    def naming_bank(self, est) -> np.ndarray:
        """The bank cluster names are scored on: exact vectors wherever they were computed."""
        pool = getattr(est, "noun_pool_", None)
        if pool is None:
            return self.bank.embeddings
        from tacluster.nouns.exact import with_exact_rows

        return with_exact_rows(self.bank.embeddings, pool.pool, pool.pool_embeddings)

    def counts(self, est) -> dict:
        """run.json's record of the candidate path: prompts of the ranking bank, the pool, what was embedded."""
        pool = getattr(est, "noun_pool_", None)
        n_t = len(self.store.backbone.prompt_templates)
        n_pool = 0 if pool is None else len(pool.pool)
        return {"ranking_templates": 1, "ranking_prompts": len(self.bank.words), "pool_nouns": n_pool,
                "noun_pool_per_centre": est.noun_pool if pool is not None else None,
                "pool_prompts": n_pool * n_t, "full_bank_prompts": len(self.bank.words) * n_t,
                "exact_embedded_now": self.store.embedded, "exact_from_cache": self.store.from_cache,
                "ranking_precision": self.precision.record()}


def _noun_side(bb, backbone: str, vocabulary, cache: Path, progress: bool, joint, external: bool, own_joint: bool,
               noun_bank: str = "auto", device: str = "cpu", ranking_precision: str = "auto") -> _Nouns:
    """The vocabulary, its cached noun bank (full or candidates, :func:`~tacluster.nouns.exact.resolve_noun_bank`)
    and the words the backbone cannot embed."""
    from tacluster.nouns.bank import NounBank, cached_noun_bank
    from tacluster.nouns.exact import candidate_banks, resolve_noun_bank
    from tacluster.nouns.vocabulary import load_vocabulary

    if isinstance(bb, UnloadedBackbone):  # no model here: no noun side (an image-only method, no names)
        return _Nouns([], NounBank([], np.zeros((0, joint.shape[1]), np.float32)), [], "none")
    words = load_vocabulary(vocabulary)
    mode = resolve_noun_bank(noun_bank, bb, words, cache, device)
    exact = store = precision = None
    if mode == "candidates":
        bank, exact, store, precision = candidate_banks(bb, words, cache_dir=cache, progress=progress,
                                                        ranking_precision=ranking_precision, device=device)
    else:
        if ranking_precision != "auto":
            raise InputError(f"--ranking-precision {ranking_precision} sets the ranking bank of --noun-bank "
                             "candidates, and --noun-bank auto uses the full bank here (it is cached, or this "
                             "is a GPU); add --noun-bank candidates, or drop --ranking-precision")
        n_t = len(bb.prompt_templates or ())
        note = (f"--noun-bank candidates would embed {len(words):,} prompts (one template) plus each collection's "
                "candidate pool" if n_t > 1 else "")
        bank = cached_noun_bank(bb, words, cache_dir=cache, progress=progress, note=note)
    if external and len(bank.words) and bank.embeddings.shape[1] != joint.shape[1]:
        raise InputError(
            f"{'joint ' if own_joint else ''}embeddings have {joint.shape[1]} dims but backbone {backbone!r} "
            f"embeds nouns in {bank.embeddings.shape[1]}; pass the backbone that made them with --backbone"
        )
    if len(bank.words) == 0:
        raise InputError(
            f"none of the {len(words)} words of the vocabulary {str(vocabulary)!r} is known to backbone "
            f"{backbone!r} (e.g. {', '.join(repr(w) for w in words[:3])}); use nouns it knows "
            "(WordNet nouns for lite), or no --vocabulary"
        )
    known = set(bank.words)
    unknown = [w for w in words if w not in known] if vocabulary is not None else []
    return _Nouns(words, bank, unknown, mode, exact, store, precision)


def _make_estimator(bb, n_clusters, resolved_method, seed, device, progress, estimator_params):
    """The estimator a run fits: the backbone's retrieval tau (``bb`` None: none), the user's settings."""
    from tacluster.estimator import TextAidedClustering

    # TAC's retrieval temperature in the backbone's own similarity scale (0.005 for CLIP, as in
    # the paper; HFTwoTowerBackbone.retrieval_tau); the image-only methods retrieve nothing.
    tau = getattr(bb, "retrieval_tau", None)
    given = {"tau": tau} if tau is not None and resolved_method in TEXT_METHODS else {}
    params = {"random_state": seed, "device": device, "verbose": progress, **given, **(estimator_params or {})}
    return TextAidedClustering(n_clusters, resolved_method, **params)


def _write_run(out: Path, est, bb, emb, named, xy, record: dict, run_key: str, command, timings: dict,
               tic: float, t_start: float, duplicates_csv: bytes) -> None:
    """Model, tables and run.json staged whole, then moved into ``out``; on any error the previous outputs stay."""
    labels, conf, k = est.labels_, est.confidence_, est.n_clusters_
    settings = record["settings"]
    stage = begin_writing(out)
    try:
        outlier = outlier_mask(labels, conf, k)
        est.save(stage / "model", metadata={
            "backbone": settings["backbone"], "backbone_fingerprint": bb.fingerprint, "cluster_names": named.names,
            "vocabulary": settings["vocabulary"], "outlier_below": outlier_thresholds(labels, conf, k),
            **({"image_precision": emb.precision.precision} if emb.precision is not None else {}),
        })
        write_run_tables(stage, emb.paths, emb.skipped, labels, conf, outlier, named.names, named.top_nouns, xy,
                         digests=emb.keys)
        atomic_write_bytes(stage / DUPLICATES_FILE, duplicates_csv)
        timings["write"] = time.perf_counter() - tic
        timings["total"] = time.perf_counter() - t_start
        run = {
            "status": "complete",
            "tacluster_version": versions()["tacluster"],
            "command": command or "tacluster.cluster_images(...)",
            "run_key": run_key,
            "settings": settings,
            "timings_s": {key: round(v, 3) for key, v in timings.items()},
            "counts": record["counts"],
            "versions": versions(),
            "duplicates": record["duplicates"],
            **({"embeddings": record["embeddings"]} if "embeddings" in record else {}),
            **({"warnings": record["warnings"]} if "warnings" in record else {}),
            **({"backbone_choice": record["backbone_choice"]} if "backbone_choice" in record else {}),
            **_choices(est, settings),
        }
        atomic_write_bytes(stage / RUN_FILE, json.dumps(run, indent=2).encode())
        commit_outputs(out, stage, run_key)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # frees the space; the previous outputs stay
        raise


def _choices(est, settings: dict) -> dict:
    """run.json's record of what the fit chose without labels: the method (``auto``) and K (``--k auto``)."""
    out = {}
    choice = getattr(est, "choice_", None)
    if choice is not None:
        settings["method_chosen"] = choice.method
        settings["method_scores"] = {m: round(float(v), 4) for m, v in choice.scores.items()}
        settings["method_reason"] = choice.reason
        out["method_choice"] = {"chosen": choice.method, "params": choice.params,
                                "scores": {m: float(v) for m, v in choice.scores.items()},
                                "criterion": choice.criterion, "reason": choice.reason}
    if est.auto_k_ is not None:
        out["auto_k"] = {"candidates": [int(k) for k in est.auto_k_.candidates],
                         "scores": [float(v) for v in est.auto_k_.scores], "chosen": int(est.auto_k_.k),
                         "criterion": est.auto_k_.details.get("criterion", "tacluster.choices.choose_k"),
                         # how sure and which end of the plateau (choose_k, issue 30)
                         **{key: est.auto_k_.details[key] for key in _AUTO_K_KEYS if key in est.auto_k_.details}}
    return out


#: The search details run.json's ``auto_k`` keeps beside the curve.
_AUTO_K_KEYS = ("plateau", "tolerance", "eigengap", "eigengap_threshold", "plateau_end")


def cluster_embeddings(
    embeddings: str | os.PathLike,
    out_dir: str | os.PathLike,
    n_clusters: int | str,
    *,
    backbone: str,
    joint_embeddings: str | os.PathLike | None = None,
    embedding_column: str | None = None,
    **kwargs,
) -> ClusterRun:
    """Cluster vectors made elsewhere ("bring your own embeddings"); same outputs as :func:`cluster_images`.

    Parameters
    ----------
    embeddings : clip-retrieval's output folder (``img_emb/img_emb_N.npy`` beside
        ``metadata/metadata_N.parquet``), a ``.npy`` (N, d) with an optional
        ``<name>.paths.txt`` / ``<name>.paths.csv`` list, or a ``.parquet`` with a
        vector column and a path column (layouts: :mod:`tacluster.embed.external`)
    out_dir, n_clusters : as for :func:`cluster_images`
    backbone : the model that made the vectors. It is loaded for its noun side
        (noun bank) and fingerprint only; no image is read. The image vectors
        must have the width of its image output.
    joint_embeddings : the images in the backbone's noun space, read like
        ``embeddings``; needed (only) by backbones whose noun space differs from
        their image features (the offline ``lite``: 1280-d visual features, the
        1000-d ``joint`` output). For a CLIP-like backbone the image vectors are
        the joint vectors.
    embedding_column : the Parquet vector column (default: ``embedding``,
        ``emb`` or ``vector``)
    **kwargs : any other keyword of :func:`cluster_images` (``method``, ``seed``,
        ``vocabulary``, ``cache_dir``, ``overwrite``, ``report``, ...)

    Rows are L2-normalised on reading; a row with NaN/inf or all zeros, a width
    that does not match the backbone, or joint vectors missing where the
    backbone needs them raise :class:`~tacluster.errors.InputError`. The
    assignments list the paths (or URLs) as given, or ``row-000000``... where
    the source has none; the report shows thumbnails of paths that are readable
    local image files and a placeholder for the others.
    """
    return cluster_images(None, out_dir, n_clusters, backbone=backbone, embeddings=embeddings,
                          joint_embeddings=joint_embeddings, embedding_column=embedding_column, **kwargs)


def _read_external(external, bb, backbone_name: str, large_scale: bool | str = "auto", *, needs_joint: bool = True):
    """The vectors of ``--embeddings`` (and ``--joint-embeddings``) as an EmbeddingResult,
    after checking their widths against what the backbone makes; read as the estimator's
    ``large_scale`` path will read them. ``needs_joint=False``: a model that assigns from the
    image vectors alone (every method but ``"no-train"``) takes them without joint vectors."""
    from tacluster.embed.external import backbone_widths, match_joint

    image, joint = external
    if isinstance(bb, UnloadedBackbone):  # its widths cannot be asked: the estimator checks them against the model
        return _external_result(image, joint, large_scale)
    one_space = tuple(bb.outputs) == ("image",)
    widths = backbone_widths(bb)
    fix = "pass the backbone that made them with --backbone"
    if one_space:
        if joint is not None:
            raise InputError(
                f"backbone {backbone_name!r} embeds images and nouns in one space, so the --embeddings vectors "
                "are already its joint vectors; drop --joint-embeddings"
            )
        if image.dim != widths["joint"]:
            raise InputError(
                f"embeddings have {image.dim} dims but backbone {backbone_name!r} embeds nouns in "
                f"{widths['joint']}; {fix}"
            )
    else:
        if image.dim != widths["image"]:
            raise InputError(
                f"embeddings have {image.dim} dims but backbone {backbone_name!r} makes {widths['image']}-dim "
                f"image features; {fix}"
            )
        if joint is None and needs_joint:
            raise InputError(
                f"backbone {backbone_name!r} needs the images' joint (noun-space, {widths['joint']}-dim) vectors "
                "besides its image features: pass them with --joint-embeddings"
            )
        if joint is not None and joint.dim != widths["joint"]:
            raise InputError(
                f"joint embeddings have {joint.dim} dims but backbone {backbone_name!r} embeds nouns in "
                f"{widths['joint']}; {fix}"
            )
        if joint is not None:
            match_joint(image, joint)
    return _external_result(image, joint, large_scale)


def _external_result(image, joint, large_scale: bool | str):
    """The opened ``--embeddings`` (and joint) sources read as an EmbeddingResult."""
    from tacluster.embed import EmbeddingResult
    from tacluster.estimator import use_large_scale

    # Large collections: the image vectors are read through a normalising view of
    # the source (memory map, or float16 as stored), as the estimator's large-N
    # path reads them by sampled rows and blocks (1.28 M x 1280: 6.6 GB of float32 not held).
    arrays = {"image": image.rows() if use_large_scale(image.n_rows, large_scale) else image.load()}
    if joint is not None:
        # Read in blocks (naming; fitting reads it only for text-side methods, as an array):
        # a .npy stays memory-mapped instead of a second float32 (N, d) copy.
        arrays["joint"] = joint.rows("--joint-embeddings")
    return EmbeddingResult(list(image.paths), arrays)


def _device_used(device: str) -> str:
    """``"auto"`` resolved to the device the models ran on (``"cpu"`` or ``"cuda"``)."""
    from tacluster._device import resolve_device

    return resolve_device(device).split(":")[0]


@dataclass
class Prediction:
    paths: list[str]
    labels: np.ndarray
    confidence: np.ndarray
    names: list[str]
    skipped: list[tuple[str, str]]
    outlier: np.ndarray | None = None


def predict_images(
    model_dir: str | os.PathLike,
    source: str | os.PathLike | None,
    out_csv: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    batch_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    offline: bool | None = None,
    embeddings: str | os.PathLike | None = None,
    joint_embeddings: str | os.PathLike | None = None,
    embedding_column: str | None = None,
) -> Prediction:
    """Assign new images with a saved model (no refitting); optionally write a CSV.

    ``source``: images (folder or list), or None with ``embeddings``: vectors
    made elsewhere by the model's backbone, read as by
    :func:`cluster_embeddings` (same layouts, same width checks and errors).
    ``offline``: never download the model's backbone (read the caches only).
    Memory beyond the vectors is O(rows): no (N, K) probability matrix.
    ``batch_size`` (images per forward pass, default 64) is refused with ``embeddings``.
    """
    from tacluster.embed import embed_images
    from tacluster.nouns.bank import default_cache_dir

    _refuse_embedding_options(embeddings, batch_size=batch_size)
    out_path = None if out_csv is None else _check_prediction_out(Path(out_csv))
    est, cmap, name = load_run_model(model_dir)
    _check_sources(source, embeddings, joint_embeddings, embedding_column, "predict")
    external, _ = _open_input(source, embeddings, joint_embeddings, embedding_column)
    # vectors made elsewhere need no model: its stored nouns give the counterparts, the estimator checks the widths
    bb = backbone_or_stand_in(lambda: model_backbone(est, name, model_dir, device, offline, progress), name,
                              from_embeddings=external is not None, text_method=False, method=est.method)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if external is None:
        emb = embed_images(source, bb, cache_dir=cache, batch_size=batch_size or 64, progress=progress)
    else:
        # only a "no-train" model assigns from the joint vectors too (predict's own rule)
        emb = _read_external(external, bb, name, est.large_scale, needs_joint=est.method == "no-train")
    labels, conf, outlier = assign_with_outliers(est, cmap, emb)
    _apply_corrections(model_dir, emb, labels, conf, outlier)
    names = [cmap.names[c] for c in labels]
    if out_path is not None and out_path.suffix.lower() == ".parquet":
        skipped = text_rows(emb.skipped)
        atomic_write_bytes(out_path, parquet_bytes({
            "path": [path_to_text(p) for p in emb.paths] + [p for p, _ in skipped],
            "cluster": [int(c) for c in labels] + [None] * len(skipped),
            "confidence": [float(c) for c in conf] + [None] * len(skipped),
            "cluster_name": names + [f"skipped: {r}" for _, r in skipped],
            "outlier": [bool(o) for o in outlier] + [None] * len(skipped),
        }))
    elif out_path is not None:
        rows = [(path_to_text(p), int(c), f"{float(s):.4f}", n, "true" if o else "false")
                for p, c, s, n, o in zip(emb.paths, labels, conf, names, outlier)]
        rows += [(p, "", "", f"skipped: {r}", "") for p, r in text_rows(emb.skipped)]
        atomic_write_bytes(out_path, csv_bytes(["path", "cluster", "confidence", "cluster_name", "outlier"], rows))
    if not emb.paths:  # as `cluster`: nothing assigned is an error (exit 2), with the reasons kept
        from tacluster.embed.reader import SUPPORTED_NOTE

        where = f"; each is listed with its reason in {str(out_path)!r}" if out_path is not None else ""
        if emb.skipped:
            raise InputError(f"no usable images in {str(source)!r} ({len(emb.skipped)} file(s) skipped): "
                             f"{top_reasons(emb.skipped)}{where}")
        raise InputError(f"no images to assign in {str(source or embeddings)!r} (no image files found); "
                         + SUPPORTED_NOTE)
    return Prediction(emb.paths, labels, conf, names, emb.skipped, outlier)


def _apply_corrections(model_dir, emb, labels: np.ndarray, conf: np.ndarray, outlier: np.ndarray) -> int:
    """A person's corrections win over the model: an image ``tacluster move`` put somewhere (a
    ``moved`` row of the run) is assigned to that row's cluster now, with confidence 1 and no
    outlier mark. Matched by path, else by content digest where the run holds that content in one
    cluster only (an unmoved identical copy elsewhere keeps its own cluster, as in the run). Only
    for a model inside its run directory and images embedded here (vectors from elsewhere carry no
    digest). Returns how many were corrected."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tacluster._runfiles import ASSIGNMENTS_FILE, DIGEST_COLUMN, MOVED_COLUMN

    table_path = _model_path(model_dir).parent / ASSIGNMENTS_FILE
    if not emb.keys or not table_path.is_file():
        return 0
    try:
        if not {DIGEST_COLUMN, MOVED_COLUMN} <= set(pq.read_schema(table_path).names):
            return 0  # a run from before `move`, or before digests were recorded
        t = pq.read_table(table_path, columns=["path", DIGEST_COLUMN, "cluster", MOVED_COLUMN]).to_pydict()
    except (OSError, pa.ArrowException):  # a damaged table: the model alone assigns
        return 0
    if not any(t[MOVED_COLUMN]):
        return 0
    by_path = {p: int(c) for p, c, m in zip(t["path"], t["cluster"], t[MOVED_COLUMN]) if m}
    clusters_of: dict[str, set[int]] = {}
    for d, c in zip(t[DIGEST_COLUMN], t["cluster"]):
        if d:
            clusters_of.setdefault(d, set()).add(int(c))
    by_digest = {d: next(iter(clusters_of[d])) for d, m in zip(t[DIGEST_COLUMN], t[MOVED_COLUMN])
                 if m and d and len(clusters_of[d]) == 1}
    n = 0
    for i, (p, k) in enumerate(zip(emb.paths, emb.keys)):
        c = by_path.get(path_to_text(p), by_digest.get(k))
        if c is not None:
            labels[i], conf[i], outlier[i] = c, 1.0, False
            n += 1
    return n


def _model_path(model_dir: str | os.PathLike) -> Path:
    """The model folder given as such or as its run directory (``RUN/model``)."""
    path = Path(model_dir)
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        return path / "model"
    return path


def load_run_model(model_dir: str | os.PathLike):
    """``(model, cluster map, backbone name)`` of a run's ``model/`` (or the run directory),
    after finishing an interrupted edit of the run; :class:`ModelFileError` when unusable."""
    from tacluster.estimator import TextAidedClustering

    model_path = _model_path(model_dir)
    if model_path.parent.is_dir():
        recover_pending(model_path.parent)
    est = TextAidedClustering.load(model_path)
    cmap = read_cluster_map(est, model_path)  # merges and splits: model clusters -> run clusters
    name = est.metadata_.get("backbone")
    if not name:
        raise ModelFileError(f"model {str(model_dir)!r} does not say which backbone made it (metadata.backbone)")
    return est, cmap, name


def model_backbone(est, name: str, model_dir, device: str, offline: bool | None, progress: bool):
    """The backbone that made a saved model, refused when its fingerprint differs from the model's."""
    bb = _load_backbone_quietly(name, device, offline, progress)
    fingerprint = est.metadata_.get("backbone_fingerprint")
    if fingerprint and fingerprint != bb.fingerprint:
        raise ModelFileError(
            f"model {str(model_dir)!r} was made with a different version of backbone {name!r} "
            "(fingerprints differ); re-run `tacluster cluster` with this backbone"
        )
    return _in_recorded_precision(bb, est.metadata_.get("image_precision", "float32"), model_dir, progress)


def _in_recorded_precision(bb, recorded: str, model_dir, progress: bool):
    """``bb`` in the image precision the model's images were embedded in (its int8 copy for
    ``"int8"``), so that new images get the same kind of vectors and the run's cache entries; where
    int8 cannot run here (a GPU), ``bb`` in float32, with a note."""
    from tacluster.embed.precision import check_image_precision, int8_image_backbone

    if recorded == "float32":
        return bb
    try:
        check_image_precision(bb, recorded)
    except InputError as err:
        if progress:
            print(f"note: model {str(model_dir)!r} embedded its images in {recorded}, which cannot run here "
                  f"({err}); images are embedded in float32 instead (close to, not the same as, the run's vectors)",
                  file=sys.stderr)
        return bb
    return int8_image_backbone(bb)


def assign_with_outliers(est, cmap, emb) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(run clusters, confidence, outlier)`` of embedded images, as ``predict`` gives them: the
    model's clusters after merges and splits (:func:`tacluster.run.cluster_map.assign_run_clusters`),
    an outlier where the confidence lies below its cluster's threshold from the fit."""
    if not emb.paths:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=bool)
    labels, conf = assign_run_clusters(est, cmap, emb.arrays["image"], emb.arrays.get("joint"))
    limit = np.array([-np.inf if b is None else float(b) for b in cmap.outlier_below])
    return labels, conf, conf < limit[labels]


def _check_prediction_out(out: Path) -> Path:
    """The predictions file: a .csv or .parquet path that is not a folder."""
    if out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; give the file to write, e.g. {str(out / 'preds.csv')!r}")
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out {str(out)!r}: predictions are written as .csv or .parquet; end the name with either")
    return out


def folder_duplicates(
    source: str | os.PathLike,
    out_csv: str | os.PathLike | None = None,
    *,
    threshold: float | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    num_workers: int = 2,
) -> Duplicates:
    """Find the duplicates of a folder (or ``.csv``/``.txt`` list) of images, without clustering.

    No model runs: the images' grey thumbnails (:mod:`tacluster.embed.look`,
    cached by content, so a second call decodes nothing) are grouped by
    :func:`~tacluster.run.duplicates.find_duplicates`, the same rule every
    ``cluster`` run applies. ``threshold``: the aligned similarity from which
    two images are near duplicates (default
    :data:`~tacluster.run.duplicates.LOOK_THRESHOLD`). With ``out_csv`` the
    groups are written as ``duplicates.csv`` rows (see that module),
    atomically. Nothing is written when an argument or the input is unusable
    (:class:`InputError`).
    """
    from tacluster.embed.look import collection_looks
    from tacluster.embed.reader import list_inputs
    from tacluster.embed.runner import key_files
    from tacluster.nouns.bank import default_cache_dir
    from tacluster.run.duplicates import check_threshold, look_duplicates

    if threshold is not None:
        check_threshold(threshold)
    out = None if out_csv is None else Path(out_csv)
    if out is not None and out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; give the CSV file to write, e.g. "
                         f"{str(out / DUPLICATES_FILE)!r}")
    if not Path(source).exists():
        raise InputError(f"input {str(source)!r} does not exist; give a folder of images or a .csv/.txt list")
    inputs = list_inputs(source)
    skipped = list(inputs.skipped)
    paths, keys = key_files(inputs.paths, num_workers, skipped)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    looks = collection_looks(paths, keys, cache, num_workers=num_workers, progress=progress)
    skipped += looks.skipped
    if not looks.paths:
        why = f"{len(skipped)} file(s) skipped: {top_reasons(skipped)}" if skipped else "no image files found"
        raise InputError(f"no usable images in {str(source)!r} ({why})")
    found = look_duplicates(looks, threshold)
    found.skipped = skipped
    if out is not None:
        atomic_write_bytes(out, found.csv_bytes())
    return found


def evaluate_assignments(
    assignments: str | os.PathLike, labels: str, *, confusion_png: str | os.PathLike | None = None
) -> dict:
    """ACC / NMI / ARI (percent) of an assignments file against labels; optional confusion PNG."""
    from tacluster.evaluate.metrics import confusion, evaluate_clustering

    src = Path(assignments)
    recover_pending(src if src.is_dir() else src.parent)
    paths, clusters, cnames = read_assignments(assignments)
    if not paths:
        raise InputError(f"{str(assignments)!r} has no assigned images to evaluate")
    truth = read_labels(labels, paths)
    result = evaluate_clustering(truth, clusters)
    classes_seen = sorted({str(t) for t in truth})
    if len(classes_seen) == 1:
        how = (" (the paths have no class folders above them: a run of --embeddings?)" if labels == "parent-dir"
               else "")
        result["warnings"] = [f"every image has the same label {classes_seen[0]!r}{how}: ACC and NMI against "
                              "one class say nothing about the clustering; give --labels FILE.csv"]
    if confusion_png is not None:
        from tacluster.report.html import save_confusion_png

        m, cl, classes = confusion(truth, clusters)
        name_of = {}
        for c, n in zip(clusters, cnames):
            name_of.setdefault(int(c), n)
        row_names = [f"{int(c)}: {name_of.get(int(c), '')}" for c in cl]
        save_confusion_png(m, row_names, [str(c) for c in classes], confusion_png)
        result["confusion_png"] = path_to_text(str(Path(confusion_png).resolve()))  # absolute, as every output path
    return result
