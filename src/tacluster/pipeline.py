"""From a folder of images to a finished run directory (what ``tacluster cluster`` does).

Stages: list + embed (cached) -> noun bank (cached) -> fit -> name clusters ->
2-D map -> write outputs (each file atomically) -> report. The estimator does
the clustering; this module only wires stages and files together.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tacluster._atomic import atomic_write_bytes, commit_staged
from tacluster._paths import path_to_text, text_to_path
from tacluster.errors import InputError, ModelFileError
from tacluster.rundir import RUN_FILE, STAGING, read_assignments_table

#: What a run writes, relative to ``--out``, in the order they are moved in
#: (``run.json`` goes last, see :func:`_commit_outputs`).
STAGED_FILES = ["model/arrays.safetensors", "model/config.json", "assignments.parquet",
                "assignments.csv", "skipped.csv", "clusters.json"]
OUR_FILES = (
    "assignments.parquet", "assignments.csv", "clusters.json", "skipped.csv", RUN_FILE,
    "report.html", "map.png", "auto_k.png", "model", "thumbs", "clusters",
)


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


def recommended_params(backbone_name: str) -> dict:
    """The estimator settings ``--method auto`` resolves to for a backbone.

    CLIP-like backbones: the paper's TAC. The offline ``lite`` backbone: its
    text side is too weak for TAC (held-out ACC, 10 seeds: 15-Scene TAC
    no-train 43.1 vs k-means 77.6; docs/tuning.md), so the image side is
    clustered and the nouns only name the clusters. Which image-side method
    is chosen per collection without labels (``method="auto"``,
    :mod:`tacluster.choose_method`: k-means, spectral clustering, or spectral
    clustering of power-normalised features, whichever partition best follows
    the collection's neighbour graph); measured on nine domains with a
    leave-one-domain-out check in docs/tuning.md (issue 19).
    """
    if backbone_name.split(":")[0] == "lite":
        return {"method": "auto"}
    return {"method": "tac"}


def _load_backbone_quietly(name: str, device: str, offline: bool | None, progress: bool):
    """load_backbone, with the Hub's download bars only when progress is shown."""
    from tacluster.backbones import load_backbone
    from tacluster.backbones.hub import hub_progress

    with hub_progress(progress):
        return load_backbone(name, device=device, offline=offline)


def recommended_method(backbone_name: str) -> str:
    """The method part of :func:`recommended_params`."""
    return recommended_params(backbone_name)["method"]


def _begin_writing(out: Path) -> Path:
    """Prepare ``out`` for a run's outputs and return the empty staging folder.

    Every output is first written whole into ``out/.tacluster-staging`` (each
    through a temp file and a rename); only when all are there does
    :func:`_commit_outputs` move them in. So an error while the bytes are
    written (disk full, a bad path, a kill) leaves the previous outputs in
    ``out`` untouched, ``run.json`` included. Leftovers of a killed writer
    (temp files, an old staging folder) are removed first: one run writes a
    directory at a time.
    """
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "model", out / "thumbs"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
    stage = out / STAGING
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "model").mkdir(parents=True)
    return stage


def _commit_outputs(out: Path, stage: Path, run_key: str) -> None:
    """Move the staged outputs into ``out``, marking it as being written meanwhile.

    The mark (``run.json`` with ``"status": "incomplete"``) is the only byte
    written in ``out`` before the renames; it tells readers the directory is
    not a finished run while files are swapped, and lets the same command
    resume there after a kill (:func:`check_out_dir`). The staged ``run.json``
    (``"status": "complete"``) moves in last.
    """
    atomic_write_bytes(out / RUN_FILE, json.dumps({"run_key": run_key, "status": "incomplete"}).encode())
    _clear_previous_outputs(out)
    commit_staged(stage, out, STAGED_FILES, RUN_FILE)


#: Files other commands write into a run directory (``tacluster evaluate``).
_DERIVED_FILES = ("evaluation.json", "confusion.png")


def _holds_run(out: Path) -> bool:
    try:
        info = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "run_key" in info


def _clear_previous_outputs(out: Path) -> None:
    """Remove what a previous run (and commands run on it) left in ``out``,
    once the new outputs are staged: evaluations, figures, thumbnails and
    cluster pages of the old labels must not survive next to the new ones.
    Only names tacluster writes are removed (whole folders: ``thumbs``,
    ``model``, ``clusters``), so a user's own files in ``out`` (even INPUT
    itself) are never touched."""
    for name in OUR_FILES + _DERIVED_FILES:
        entry = out / name
        if name == RUN_FILE or not (entry.exists() or entry.is_symlink()):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for tmp in out.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


#: An outlier's confidence lies this many robust standard deviations (1.4826 MAD) below its
#: cluster's median, and at least :data:`OUTLIER_MIN_GAP` below it.
OUTLIER_ROBUST_Z = 3.0
OUTLIER_MIN_GAP = 0.1
#: Outliers listed per cluster in clusters.json (the lowest first); assignments flag every one.
OUTLIERS_LISTED = 20


def outlier_mask(labels: np.ndarray, confidence: np.ndarray, n_clusters: int) -> np.ndarray:
    """Which images are outliers of their cluster: confidence far below the cluster's typical one.

    Typical is the median confidence of the cluster; "far below" is more than
    :data:`OUTLIER_ROBUST_Z` robust standard deviations (1.4826 x the median
    absolute deviation) and at least :data:`OUTLIER_MIN_GAP` (probability)
    below it. A cluster whose members are all confident has none; the rule
    never just takes the lowest few.
    """
    labels = np.asarray(labels)
    conf = np.asarray(confidence, dtype=np.float64)
    below = outlier_thresholds(labels, conf, n_clusters)
    limit = np.array([-np.inf if b is None else b for b in below])
    return conf < limit[labels] if labels.size else np.zeros(0, dtype=bool)


def outlier_thresholds(labels: np.ndarray, confidence: np.ndarray, n_clusters: int) -> list[float | None]:
    """Per cluster, the confidence below which a member is an outlier (see
    :func:`outlier_mask`); None for a cluster of fewer than 3 images. Saved
    with the model so ``predict`` flags new images by the same rule."""
    labels = np.asarray(labels)
    conf = np.asarray(confidence, dtype=np.float64)
    out: list[float | None] = []
    for c in range(n_clusters):
        member = conf[labels == c]
        if member.size < 3:
            out.append(None)
            continue
        med = float(np.median(member))
        spread = 1.4826 * float(np.median(np.abs(member - med)))
        out.append(med - max(OUTLIER_ROBUST_Z * spread, OUTLIER_MIN_GAP))
    return out


def _text_rows(pairs) -> list[tuple[str, str]]:
    """``(path, reason)`` pairs with the path written by the outputs' rule (tacluster._paths)."""
    return [(path_to_text(p), r) for p, r in pairs]


def _csv_bytes(header: Sequence[str], rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    # Paths come through path_to_text (valid UTF-8); a reason quoting an odd file
    # name shows its bytes as \xNN: the file itself is named by the path column.
    return buf.getvalue().encode("utf-8", "backslashreplace")


def _parquet_bytes(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def top_reasons(skipped: Sequence[tuple[str, str]], n: int = 3) -> str:
    """The commonest skip reasons with their counts, e.g. ``"2 missing, 1 not an image"``."""
    from collections import Counter

    counts = Counter(reason.split(" (")[0] for _, reason in skipped)
    top = [f"{c} {r}" for r, c in counts.most_common(n)]
    rest = len(counts) - len(top)
    return ", ".join(top) + (f" and {rest} other reason(s)" if rest > 0 else "")


def _record_failed_run(out: Path, run_key: str, skipped, why: str) -> Path | None:
    """Write ``skipped.csv`` and a ``run.json`` saying ``"status": "failed"`` into
    ``out`` when a run cannot start (no usable image), so the reasons are kept.
    A directory that holds a finished run is left alone. Returns the CSV's path."""
    if _holds_run(out) and not _failed_run(out):
        return None
    if out.exists() and any(not p.name.startswith(".") and p.name not in (RUN_FILE, "skipped.csv")
                            for p in out.iterdir()):
        return None  # someone's files (written into with --overwrite): add nothing
    atomic_write_bytes(out / "skipped.csv", _csv_bytes(["path", "reason"], _text_rows(skipped)))
    atomic_write_bytes(out / RUN_FILE, json.dumps({"run_key": run_key, "status": "failed", "reason": why}).encode())
    return out / "skipped.csv"


def _recover_pending(run_dir: Path) -> None:
    """Finish (or drop) an interrupted rename/merge before the run is read or replaced."""
    from tacluster.edit import EDIT_STAGING, JOURNAL

    if (run_dir / JOURNAL).exists() or (run_dir / EDIT_STAGING).exists():
        from tacluster.edit import recover

        recover(run_dir)


def _failed_run(out: Path) -> bool:
    try:
        return json.loads((out / RUN_FILE).read_text()).get("status") == "failed"
    except (OSError, ValueError, AttributeError):
        return False


def check_out_dir(out_dir: Path, run_key: str, overwrite: bool) -> None:
    """Refuse to write into a directory that holds something else, unless ``overwrite``."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"--out {str(out_dir)!r} exists and is not a directory; choose another path")
    _recover_pending(out_dir)
    entries = [p for p in out_dir.iterdir() if not p.name.startswith(".")]
    if not entries or overwrite or _failed_run(out_dir):
        return  # a failed run holds only its skipped.csv: any run may replace it
    run_file = out_dir / RUN_FILE
    if run_file.is_file():
        try:
            previous = json.loads(run_file.read_text()).get("run_key")
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous == run_key:
            return  # the same run again (e.g. after an interruption): safe to redo
        raise InputError(
            f"{str(out_dir)!r} already holds a different tacluster run; "
            "pass --overwrite to replace it, or choose another --out"
        )
    raise InputError(
        f"{str(out_dir)!r} is not empty and holds no tacluster run; "
        "choose an empty or new --out directory (or pass --overwrite)"
    )


def versions() -> dict[str, str]:
    import faiss
    import numpy
    import torch

    from tacluster import __version__

    return {
        "tacluster": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
        "torch": torch.__version__, "faiss": getattr(faiss, "__version__", "?"),
    }


def cluster_images(
    source: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    n_clusters: int | str,
    *,
    backbone: str = "lite",
    method: str = "auto",
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    vocabulary: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
    estimator_params: dict | None = None,
    command: str | None = None,
    engine: str = "local",
    offline: bool | None = None,
    embeddings: str | os.PathLike | None = None,
    joint_embeddings: str | os.PathLike | None = None,
    embedding_column: str | None = None,
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
    backbone : backbone name (``"lite"``, ``"hf:/path"``, ``"openclip:ARCH//path.pt"``)
    method : ``"auto"`` (per backbone, :func:`recommended_method`: with ``lite``
        the label-free choice of :mod:`tacluster.choose_method`, recorded in
        run.json as ``method_choice``), ``"tac"``, ``"no-train"``, ``"kmeans"``
        or ``"spectral"``
    cache_dir : embedding / noun-bank cache root (default: ``~/.cache/tacluster``)
    vocabulary : a file with one noun per line (default: WordNet nouns)
    offline : never download a named model (``HF_HUB_OFFLINE=1`` does the same);
        by default a model such as ``"clip"`` is fetched on first use
    """
    from tacluster.embedding import embed_images
    from tacluster.estimator import METHODS, TextAidedClustering
    from tacluster.naming import name_clusters
    from tacluster.nounbank import cached_noun_bank, default_cache_dir
    from tacluster.vocabulary import load_vocabulary

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out_dir)
    if method != "auto" and method not in METHODS:
        raise InputError(f"method={method!r} is not one of auto, {', '.join(METHODS)}")
    if n_clusters != "auto" and (isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer))
                                 or n_clusters < 2):
        raise InputError(f"--k {n_clusters!r}: the number of clusters must be an integer >= 2, or 'auto'")
    if n_clusters != "auto":
        n_clusters = int(n_clusters)  # np.int64(10) is a valid K; run.json needs a plain int
    if (source is None) == (embeddings is None):
        raise InputError("give either INPUT (images) or --embeddings (vectors made elsewhere), not both"
                         if source is not None else "nothing to cluster: give INPUT (images) or --embeddings")
    if embeddings is None and (joint_embeddings is not None or embedding_column is not None):
        raise InputError("--joint-embeddings and --embedding-column go with --embeddings, not with INPUT images")
    external = None
    if embeddings is not None:
        from tacluster.embedding.external import open_embeddings

        external = (open_embeddings(embeddings, column=embedding_column),
                    None if joint_embeddings is None
                    else open_embeddings(joint_embeddings, column=embedding_column, what="--joint-embeddings"))
        src = Path(embeddings)
    else:
        src = Path(source)
        if not src.exists():
            raise InputError(f"input {str(source)!r} does not exist; give a folder of images or a .csv/.txt list")
    resolved_method = recommended_method(backbone) if method == "auto" else method
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
    run_key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    check_out_dir(out, run_key, overwrite)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    tic = time.perf_counter()
    bb = _load_backbone_quietly(backbone, device, offline, progress)
    timings["load_backbone"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if external is None:
        emb = embed_images(src, bb, cache_dir=cache, batch_size=batch_size, progress=progress, engine=engine)
        timings["embed"] = time.perf_counter() - tic
    else:
        emb = _read_external(external, bb, backbone)
        timings["read_embeddings"] = time.perf_counter() - tic
    n_usable = len(emb.paths)
    if n_usable == 0:
        listed = _record_failed_run(out, run_key, emb.skipped, "no usable images")
        where = f"; every skipped file is listed in {str(listed)!r}" if listed else ""
        if emb.skipped:
            raise InputError(
                f"no usable images in {str(source)!r} ({len(emb.skipped)} file(s) skipped): "
                f"{top_reasons(emb.skipped)}{where}"
            )
        raise InputError(
            f"no usable images in {str(source)!r} (no image files found); "
            "supported: jpg, jpeg, png, bmp, gif, webp, tif, tiff"
        )
    if n_clusters != "auto" and n_clusters > n_usable:
        raise InputError(
            f"--k {n_clusters} is larger than the {n_usable} usable images found in {str(src)!r}; "
            f"use --k {n_usable} or fewer"
        )
    u = emb.arrays["image"]
    joint = emb.arrays.get("joint", u)

    tic = time.perf_counter()
    words = load_vocabulary(vocabulary)
    bank = cached_noun_bank(bb, words, cache_dir=cache, progress=progress)
    timings["noun_bank"] = time.perf_counter() - tic
    if external is not None and len(bank.words) and bank.embeddings.shape[1] != joint.shape[1]:
        raise InputError(
            f"{'joint ' if joint is not u else ''}embeddings have {joint.shape[1]} dims but backbone {backbone!r} "
            f"embeds nouns in {bank.embeddings.shape[1]}; pass the backbone that made them with --backbone"
        )
    known = set(bank.words)
    unknown = [w for w in words if w not in known] if vocabulary is not None else []
    if len(bank.words) == 0:
        raise InputError(
            f"none of the {len(words)} words of the vocabulary {str(vocabulary)!r} is known to backbone "
            f"{backbone!r} (e.g. {', '.join(repr(w) for w in words[:3])}); use nouns it knows "
            "(WordNet nouns for lite), or no --vocabulary"
        )

    auto = {k: v for k, v in recommended_params(backbone).items() if k != "method"} if method == "auto" else {}
    # TAC's retrieval temperature in the backbone's own similarity scale
    # (0.005 for CLIP, as in the paper; HFTwoTowerBackbone.retrieval_tau).
    tau = {"tau": bb.retrieval_tau} if getattr(bb, "retrieval_tau", None) is not None else {}
    params = {"random_state": seed, "device": device, "verbose": progress, **tau, **auto, **(estimator_params or {})}
    est = TextAidedClustering(n_clusters, resolved_method, **params)
    tic = time.perf_counter()
    est.fit(u, bank.embeddings, bank.words, joint_embeddings=None if joint is u else joint)
    timings["fit"] = time.perf_counter() - tic
    timings.update({f"fit.{k}": v for k, v in est.timings_.items()})
    n_clusters = est.n_clusters_

    tic = time.perf_counter()
    named = name_clusters(joint, est.labels_, n_clusters, bank.embeddings, bank.words, class_probs=emb.arrays.get("probs"))
    timings["naming"] = time.perf_counter() - tic

    tic = time.perf_counter()
    xy = _map_2d(u, seed)
    labels, conf = est.labels_, est.confidence_
    names = named.names
    stage = _begin_writing(out)
    try:
        outlier = outlier_mask(labels, conf, n_clusters)
        est.save(stage / "model", metadata={
            "backbone": backbone, "backbone_fingerprint": bb.fingerprint, "cluster_names": names,
            "vocabulary": settings["vocabulary"],
            "outlier_below": outlier_thresholds(labels, conf, n_clusters),
        })
        _write_tables(stage, emb.paths, emb.skipped, labels, conf, outlier, names, named.top_nouns, xy)
        timings["write"] = time.perf_counter() - tic
        timings["total"] = time.perf_counter() - t_start
        run = {
            "status": "complete",
            "tacluster_version": versions()["tacluster"],
            "command": command or "tacluster.cluster_images(...)",
            "run_key": run_key,
            "settings": {**settings, "device": device, "device_used": _device_used(device), "batch_size": batch_size, "cache_dir": path_to_text(str(cache.resolve())),
                         "backbone_fingerprint": bb.fingerprint, "n_centres": getattr(est, "semantic_centres_", np.zeros((0,))).shape[0],
                         "kept_nouns": len(est.kept_nouns_),
                         **({"vocabulary_words": len(words), "vocabulary_usable": len(bank.words),
                             "vocabulary_unknown": unknown} if vocabulary is not None else {})},
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "counts": {"inputs": n_usable + len(emb.skipped), "assigned": n_usable, "skipped": len(emb.skipped),
                       "embedded_now": emb.stats.n_computed, "from_cache": emb.stats.n_cached,
                       "duplicates": emb.stats.n_duplicates},
            "versions": versions(),
        }
        if external is not None:
            run["embeddings"] = {"image": external[0].describe(),
                                 **({"joint": external[1].describe()} if external[1] is not None else {})}
        choice = getattr(est, "choice_", None)
        if choice is not None:
            run["settings"]["method_chosen"] = choice.method
            run["settings"]["method_scores"] = {m: round(float(v), 4) for m, v in choice.scores.items()}
            run["method_choice"] = {"chosen": choice.method, "params": choice.params,
                                    "scores": {m: float(v) for m, v in choice.scores.items()},
                                    "criterion": choice.criterion, "reason": choice.reason}
        if est.auto_k_ is not None:
            run["auto_k"] = {"candidates": [int(k) for k in est.auto_k_.candidates],
                             "scores": [float(v) for v in est.auto_k_.scores], "chosen": int(est.auto_k_.k),
                             "criterion": "seed stability minus that of a structureless reference (tacluster.autok)"}
        atomic_write_bytes(stage / RUN_FILE, json.dumps(run, indent=2).encode())
        _commit_outputs(out, stage, run_key)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # frees the space; the previous outputs stay
        raise
    report_path = None
    if report:
        from tacluster.report import build_report

        report_path = build_report(out, progress=progress)
    return ClusterRun(out, emb.paths, labels, conf, names, emb.skipped, report_path, timings,
                      duplicates=emb.stats.n_duplicates,
                      vocabulary_use=(len(bank.words), len(words), unknown) if vocabulary is not None else None)


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
        vector column and a path column (layouts: :mod:`tacluster.embedding.external`)
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


def _read_external(external, bb, backbone_name: str):
    """The vectors of ``--embeddings`` (and ``--joint-embeddings``) as an EmbeddingResult,
    after checking their widths against what the backbone makes."""
    from tacluster.embedding import EmbeddingResult
    from tacluster.embedding.external import backbone_widths, match_joint

    image, joint = external
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
        if joint is None:
            raise InputError(
                f"backbone {backbone_name!r} needs the images' joint (noun-space, {widths['joint']}-dim) vectors "
                "besides its image features: pass them with --joint-embeddings"
            )
        if joint.dim != widths["joint"]:
            raise InputError(
                f"joint embeddings have {joint.dim} dims but backbone {backbone_name!r} embeds nouns in "
                f"{widths['joint']}; {fix}"
            )
        match_joint(image, joint)
    arrays = {"image": image.load()}
    if joint is not None:
        arrays["joint"] = joint.load("--joint-embeddings")
    return EmbeddingResult(list(image.paths), arrays)


def _device_used(device: str) -> str:
    """``"auto"`` resolved to the device the models ran on (``"cpu"`` or ``"cuda"``)."""
    from tacluster._device import resolve_device

    return resolve_device(device).split(":")[0]


#: Images the map's t-SNE is fitted on; the others are placed at the mean position of
#: their nearest fitted images (docs/map.md: trustworthiness and time at 1k and 100k).
MAP_FIT_MAX = 1000
MAP_PLACE_NEIGHBOURS = 5


def _map_2d(x: np.ndarray, seed: int) -> np.ndarray:
    """2-D coordinates for the report's map, shape (n, 2): t-SNE, which keeps
    neighbourhoods (trustworthiness 0.97-0.98 against PCA's 0.85-0.88 on the
    synthetic worlds of benchmarks/map_projection.py), fitted on at most
    :data:`MAP_FIT_MAX` images; every other image sits at the mean position of
    its :data:`MAP_PLACE_NEIGHBOURS` most similar fitted images."""
    from sklearn.manifold import TSNE

    n = x.shape[0]
    if n < 3:
        return np.zeros((n, 2))
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, MAP_FIT_MAX, replace=False)) if n > MAP_FIT_MAX else np.arange(n)
    sample = np.ascontiguousarray(x[fit_idx], dtype=np.float32)
    perplexity = float(min(30.0, max(2.0, (len(fit_idx) - 1) / 3)))
    fitted = TSNE(2, init="pca", perplexity=perplexity, random_state=seed, max_iter=500).fit_transform(sample)
    if len(fit_idx) == n:
        return fitted.astype(np.float64)
    xy = np.empty((n, 2))
    k = min(MAP_PLACE_NEIGHBOURS, len(fit_idx))
    for start in range(0, n, 8192):
        block = np.asarray(x[start:start + 8192], dtype=np.float32)
        sims = block @ sample.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        xy[start:start + len(block)] = fitted[nearest].mean(axis=1)
    xy[fit_idx] = fitted
    return xy


@dataclass
class Prediction:
    paths: list[str]
    labels: np.ndarray
    confidence: np.ndarray
    names: list[str]
    skipped: list[tuple[str, str]]
    outlier: np.ndarray | None = None


def _write_tables(stage: Path, paths, skipped, labels, conf, outlier, names, top_nouns, xy) -> None:
    """assignments.parquet / .csv, skipped.csv and clusters.json of a run, into its staging folder."""
    n_clusters = len(names)
    name_col = [names[c] for c in labels]
    atomic_write_bytes(stage / "assignments.parquet", _parquet_bytes({
        "path": [path_to_text(p) for p in paths], "cluster": labels.astype(np.int64),
        "confidence": conf.astype(np.float64), "cluster_name": name_col, "outlier": outlier,
        "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64),
    }))
    atomic_write_bytes(stage / "assignments.csv", _csv_bytes(
        ["path", "cluster", "confidence", "cluster_name", "outlier"],
        ((path_to_text(p), int(c), f"{float(s):.4f}", n, "true" if o else "false")
         for p, c, s, n, o in zip(paths, labels, conf, name_col, outlier)),
    ))
    atomic_write_bytes(stage / "skipped.csv", _csv_bytes(["path", "reason"], _text_rows(skipped)))
    clusters = []
    for c in range(n_clusters):
        idx = np.flatnonzero(labels == c)
        order = idx[np.argsort(-conf[idx], kind="stable")]
        clusters.append({
            "id": c, "size": int(idx.size), "name": names[c],
            "top_nouns": [{"noun": w, "score": round(s, 4)} for w, s in top_nouns[c]],
            "mean_confidence": float(conf[idx].mean()) if idx.size else 0.0,
            "representatives": [path_to_text(paths[i]) for i in order[:8]],
            "n_outliers": int(outlier[idx].sum()),
            "outliers": [path_to_text(paths[i]) for i in order[::-1] if outlier[i]][:OUTLIERS_LISTED],
        })
    atomic_write_bytes(stage / "clusters.json", json.dumps(
        {"n_clusters": n_clusters, "clusters": clusters}, indent=2, ensure_ascii=False
    ).encode("utf-8"))


def predict_images(
    model_dir: str | os.PathLike,
    source: str | os.PathLike,
    out_csv: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    offline: bool | None = None,
) -> Prediction:
    """Assign new images with a saved model (no refitting); optionally write a CSV.

    ``offline``: never download the model's backbone (read the caches only).
    """
    from tacluster.embedding import embed_images
    from tacluster.estimator import TextAidedClustering
    from tacluster.nounbank import default_cache_dir

    out_path = None if out_csv is None else _check_prediction_out(Path(out_csv))
    model_path = Path(model_dir)
    if not (model_path / "config.json").is_file() and (model_path / "model" / "config.json").is_file():
        model_path = model_path / "model"  # a run directory: its model
    if model_path.parent.is_dir():
        _recover_pending(model_path.parent)
    est = TextAidedClustering.load(model_path)
    meta = est.metadata_
    if not isinstance(meta, dict):
        raise ModelFileError(f"model {str(model_dir)!r}: metadata in config.json is not an object; the model is corrupted")
    label_map = meta.get("label_map")  # after `tacluster merge`: model cluster -> run cluster
    if label_map is not None and (not isinstance(label_map, list) or len(label_map) != est.n_clusters_
                                  or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                             for c in label_map)):
        raise ModelFileError(f"model {str(model_dir)!r}: metadata.label_map is malformed; the model is corrupted")
    k_out = max(label_map) + 1 if label_map else est.n_clusters_
    names_all = meta.get("cluster_names")
    if names_all is None:
        names_all = [str(i) for i in range(k_out)]
    if (not isinstance(names_all, list) or len(names_all) != k_out
            or not all(isinstance(n, str) for n in names_all)):
        raise ModelFileError(
            f"model {str(model_dir)!r}: metadata.cluster_names must list {k_out} names; "
            "the model is corrupted, re-run `tacluster cluster`"
        )
    below = meta.get("outlier_below")
    if not (isinstance(below, list) and len(below) == k_out
            and all(b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in below)):
        below = [None] * k_out
    name = meta.get("backbone")
    if not name:
        raise ModelFileError(f"model {str(model_dir)!r} does not say which backbone made it (metadata.backbone)")
    if not Path(source).exists():
        raise InputError(f"input {str(source)!r} does not exist; give a folder of images or a .csv/.txt list")
    bb = _load_backbone_quietly(name, device, offline, progress)
    if meta.get("backbone_fingerprint") and meta["backbone_fingerprint"] != bb.fingerprint:
        raise ModelFileError(
            f"model {str(model_dir)!r} was made with a different version of backbone {name!r} "
            "(fingerprints differ); re-run `tacluster cluster` with this backbone"
        )
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    emb = embed_images(source, bb, cache_dir=cache, batch_size=batch_size, progress=progress)
    if emb.paths:
        u = emb.arrays["image"]
        proba = est.predict_proba(u, joint_embeddings=emb.arrays.get("joint"))
        labels, conf = proba.argmax(1), proba.max(1)
        if label_map:  # after `tacluster merge`: the run's id of each model cluster, as in assignments
            labels = np.asarray(label_map, dtype=np.int64)[labels]
    else:
        labels, conf = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    names = [names_all[c] for c in labels]
    limit = np.array([-np.inf if b is None else float(b) for b in below])
    outlier = conf < limit[labels] if len(labels) else np.zeros(0, dtype=bool)
    if out_path is not None and out_path.suffix.lower() == ".parquet":
        skipped = _text_rows(emb.skipped)
        atomic_write_bytes(out_path, _parquet_bytes({
            "path": [path_to_text(p) for p in emb.paths] + [p for p, _ in skipped],
            "cluster": [int(c) for c in labels] + [None] * len(skipped),
            "confidence": [float(c) for c in conf] + [None] * len(skipped),
            "cluster_name": names + [f"skipped: {r}" for _, r in skipped],
            "outlier": [bool(o) for o in outlier] + [None] * len(skipped),
        }))
    elif out_path is not None:
        rows = [(path_to_text(p), int(c), f"{float(s):.4f}", n, "true" if o else "false")
                for p, c, s, n, o in zip(emb.paths, labels, conf, names, outlier)]
        rows += [(p, "", "", f"skipped: {r}", "") for p, r in _text_rows(emb.skipped)]
        atomic_write_bytes(out_path, _csv_bytes(["path", "cluster", "confidence", "cluster_name", "outlier"], rows))
    return Prediction(emb.paths, labels, conf, names, emb.skipped, outlier)


def _check_prediction_out(out: Path) -> Path:
    """The predictions file: a .csv or .parquet path that is not a folder."""
    if out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; give the file to write, e.g. {str(out / 'preds.csv')!r}")
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out {str(out)!r}: predictions are written as .csv or .parquet; end the name with either")
    return out


def read_assignments(path: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, clusters, cluster names) from an assignments/predictions .csv or .parquet, or a run dir."""
    p = Path(path)
    if p.is_dir():
        p = p / "assignments.parquet"
    if not p.is_file():
        raise InputError(f"assignments file {str(p)!r} does not exist")
    try:
        if p.suffix == ".parquet":
            t = read_assignments_table(p).to_pydict()
            rows = list(zip(t["path"], t["cluster"], t.get("cluster_name", [""] * len(t["path"]))))
        else:
            with open(p, newline="", encoding="utf-8", errors="surrogateescape") as fh:
                rows = [(r["path"], r["cluster"], r.get("cluster_name", "")) for r in csv.DictReader(fh)]
    except (KeyError, OSError, ValueError) as exc:
        raise InputError(f"{str(p)!r} is not an assignments file with path and cluster columns ({exc})") from None
    rows = [r for r in rows if r[1] is not None and str(r[1]).strip() != ""]  # skipped files have no cluster
    paths = [text_to_path(str(r[0])) for r in rows]
    try:
        clusters = np.array([int(r[1]) for r in rows], dtype=np.int64)
    except ValueError as exc:
        raise InputError(f"{str(p)!r}: cluster column must hold integers ({exc})") from None
    return paths, clusters, [str(r[2]) for r in rows]


def read_labels(labels: str, paths: Sequence[str]) -> list[str]:
    """Ground-truth labels for ``paths``: ``"parent-dir"`` or a CSV with path,label columns."""
    if labels == "parent-dir":
        return [Path(p).parent.name for p in paths]
    lp = Path(labels)
    if not lp.is_file():
        raise InputError(f"--labels {labels!r}: use 'parent-dir' or an existing CSV file with path,label columns")
    with open(lp, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "label" not in reader.fieldnames or "path" not in reader.fieldnames:
            raise InputError(f"{labels!r} must have a header with 'path' and 'label' columns")
        table = {}
        for r in reader:
            table[r["path"]] = r["label"]
            table[str(Path(r["path"]).resolve())] = r["label"]
    missing = [p for p in paths if p not in table and str(Path(p).resolve()) not in table]
    if missing:
        raise InputError(f"{len(missing)} assigned path(s) have no label in {labels!r} (first: {missing[0]!r})")
    return [table.get(p, table.get(str(Path(p).resolve()))) for p in paths]


def evaluate_assignments(
    assignments: str | os.PathLike, labels: str, *, confusion_png: str | os.PathLike | None = None
) -> dict:
    """ACC / NMI / ARI (percent) of an assignments file against labels; optional confusion PNG."""
    from tacluster.evaluate import confusion, evaluate_clustering

    src = Path(assignments)
    _recover_pending(src if src.is_dir() else src.parent)
    paths, clusters, cnames = read_assignments(assignments)
    if not paths:
        raise InputError(f"{str(assignments)!r} has no assigned images to evaluate")
    truth = read_labels(labels, paths)
    result = evaluate_clustering(truth, clusters)
    if confusion_png is not None:
        from tacluster.report import save_confusion_png

        m, cl, classes = confusion(truth, clusters)
        name_of = {}
        for c, n in zip(clusters, cnames):
            name_of.setdefault(int(c), n)
        row_names = [f"{int(c)}: {name_of.get(int(c), '')}" for c in cl]
        save_confusion_png(m, row_names, [str(c) for c in classes], confusion_png)
        result["confusion_png"] = str(confusion_png)
    return result
