"""HTML report of a finished run, built only from the run's output directory.

The CLI writes a run directory ``DIR``; :func:`build_report` reads it back and
never needs the model. Files read (the contract with the CLI):

``assignments.parquet``
    One row per image: ``path`` (str, see tacluster._paths), ``cluster``
    (int64), ``confidence`` (float64 in [0, 1]), ``cluster_name`` (str), ``x``,
    ``y`` (float64, 2-D map coordinates), optionally ``outlier`` (bool).
``clusters.json``
    ``{"n_clusters": K, "clusters": [{"id", "size", "name", "top_nouns":
    [{"noun", "score"}], "mean_confidence", "representatives", "outliers"}]}``.
``run.json`` (optional)
    ``tacluster_version``, ``command``, ``settings``, ``timings_s``, ``counts``
    and optionally ``auto_k`` (``candidates``, ``scores``, ``chosen``); any
    other key is shown as data.
``skipped.csv`` (optional, may be empty)
    Columns ``path``, ``reason``.

Files written into ``DIR``: ``thumbs/`` (JPEG thumbnails named by a hash of the
path string), ``map.png``, ``auto_k.png`` (when ``run.json`` has ``auto_k``),
``clusters/cluster-<id>.html`` (every image of a cluster, linked) and
``report.html``. The page loads nothing from outside ``DIR``; only the links
to the original images leave it (``file:`` URIs).

:func:`save_confusion_png` draws the cluster x class confusion matrix for
``tacluster evaluate``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tacluster._atomic import atomic_write_bytes
from tacluster._paths import page_bytes
from tacluster._progress import iter_progress
from tacluster._runfiles import (
    ASSIGNMENTS_CSV, AUTO_K_FILE, CLUSTER_PAGES_DIR, DUPLICATES_FILE, MAP_FILE, REPORT_FILE, RUN_FILE, THUMBS_DIR,
)
from tacluster.errors import InputError
from tacluster.report.figures import cluster_colors, draw_auto_k, draw_map, hex_color, save_confusion_png
from tacluster.report.reading import Assignments, RunDir, members_by_cluster, read_duplicates, read_run_dir
from tacluster.report.thumbnails import (
    ensure_thumb,
    file_uri,
    is_url,
    placeholder,
    short_file,
    short_name,
)

__all__ = ["build_report", "save_confusion_png"]

#: The page lists this many skipped files and counts the rest.
SKIPPED_SHOWN = 200
#: Outliers shown per cluster; they are the least typical members, a few suffice.
OUTLIERS_SHOWN = 6
#: A cluster's page lists its most confident members up to this many and says
#: where the rest are (assignments.csv): at 1.28 M images the full lists made
#: ~250 MB of HTML that no browser shows anyway.
PAGE_MEMBERS_MAX = 2_000
#: Members of a cluster page shown with a thumbnail (lazily loaded), most confident first.
PAGE_THUMBS = 200
#: Duplicate groups shown (with up to DUPLICATES_PER_GROUP thumbnails each); duplicates.csv lists all.
DUPLICATE_GROUPS_SHOWN = 30
DUPLICATES_PER_GROUP = 8
_KNOWN_RUN_KEYS = ("tacluster_version", "command", "settings", "timings_s", "counts", "auto_k", "method_choice",
                   "duplicates")


def _fmt_seconds(value: Any) -> str:
    try:
        sec = float(value)
    except (TypeError, ValueError):
        return str(value)
    if sec < 60:
        return f"{sec:.1f} s"
    minutes, sec = divmod(sec, 60)
    if minutes < 60:
        return f"{int(minutes)} min {sec:02.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def _fmt_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value, ensure_ascii=False, default=str)


_STAGE_WORDS = {
    "load_backbone": "load the backbone", "embed": "embed the images", "noun_bank": "embed the nouns",
    "fit": "cluster", "naming": "name the clusters", "duplicates": "find duplicates", "write": "write the outputs",
}
_COUNT_WORDS = {
    "embedded_now": "images embedded now", "from_cache": "images from the cache",
    "duplicates": "paths listed twice (used once)",
    "folders_left_out": "folders left out (tacluster's own outputs, loops; in skipped.csv)",
}

#: The candidates of ``method="auto"`` (tacluster.choices.choose_method) in words.
_CANDIDATE_WORDS = {
    "kmeans": "k-means",
    "spectral-fused": "spectral-fused: spectral clustering of the raw and power-normalised features side by side, "
                      "refined by k-means",
}
_METHOD_WORDS = {
    "tac": "TAC: text counterparts + trained cluster heads",
    "no-train": "TAC without training: k-means on images and their text counterparts",
    "kmeans": "k-means on the image features",
    "spectral": "spectral clustering of the image neighbour graph",
    "auto": "spectral clustering refined by k-means, or k-means where its partition follows the collection's "
            "neighbour graph better, chosen without labels",
}


def _settings_view(settings: dict[str, Any], versions: Any) -> list[tuple[str, str]]:
    """``run.json``'s settings as (label, value in words) rows: what was used.

    Values that do not apply (zero counts of a stage that did not run, empty
    parameter sets) are left out; unknown keys are shown as they are."""
    s = dict(settings)

    def take(key: str) -> Any:
        return s.pop(key, None)

    rows = _method_rows(take) + _noun_rows(take) + _machine_rows(take)
    for key, value in sorted(s.items()):
        if value in (None, {}, [], ""):
            continue
        rows.append((key, _fmt_value(value)))
    if isinstance(versions, dict) and versions:
        names = {"python": "Python"}
        rows.append(("software", ", ".join(f"{names.get(a, a)} {b}" for a, b in versions.items())))
    return rows


def _method_rows(take: Callable[[str], Any]) -> list[tuple[str, str]]:
    """The settings rows of what was clustered and how: input, K, backbone, method (and what
    ``auto`` chose), its options, seed. ``take`` pops a setting (None when absent)."""
    rows: list[tuple[str, str]] = []
    if (v := take("input")) is not None:
        rows.append(("input", str(v)))
    k = take("n_clusters")
    if k is not None:
        rows.append(("clusters", "chosen automatically" if k == "auto" else str(k)))
    if (v := take("backbone")) is not None:
        rows.append(("backbone", str(v)))
    method, resolved = take("method"), take("resolved_method")
    used = resolved or method
    if used is not None:
        words = _METHOD_WORDS.get(str(used), str(used))
        rows.append(("method", words + (" (chosen for the backbone)" if method == "auto" else "")))
    chosen, scores, reason = take("method_chosen"), take("method_scores"), take("method_reason")
    if chosen is not None:
        text = _CANDIDATE_WORDS.get(str(chosen), str(chosen))
        if isinstance(scores, dict) and scores:
            text += " (modularity on the image neighbour graph: " + ", ".join(
                f"{a} {_fmt_value(b)}" for a, b in scores.items()) + ")"
        if isinstance(reason, str) and reason:
            text += f"; why: {reason}"
        rows.append(("method chosen", text))
    params = take("estimator_params")
    if params:
        rows.append(("method options", ", ".join(f"{a} = {_fmt_value(b)}" for a, b in dict(params).items())
                     if isinstance(params, dict) else _fmt_value(params)))
    if (v := take("seed")) is not None:
        rows.append(("seed", str(v)))
    return rows


def _noun_rows(take: Callable[[str], Any]) -> list[tuple[str, str]]:
    """The settings rows of the text side: vocabulary (and its unusable words), nouns kept, semantic centres."""
    rows: list[tuple[str, str]] = []
    vocab = take("vocabulary")
    if vocab is not None:
        text = "WordNet nouns" if vocab == "wordnet" else str(vocab)
        usable, total = take("vocabulary_usable"), take("vocabulary_words")
        if usable is not None and total is not None:
            text += f" ({usable} of {total} words usable)"
        rows.append(("vocabulary", text))
    unknown = take("vocabulary_unknown")
    if unknown:
        rows.append(("words not usable", ", ".join(map(str, unknown))))
    kept = take("kept_nouns")
    if kept:
        rows.append(("nouns kept", f"{kept:,}" if isinstance(kept, int) else str(kept)))
    centres = take("n_centres")
    if centres:
        rows.append(("semantic centres", str(centres)))
    return rows


def _machine_rows(take: Callable[[str], Any]) -> list[tuple[str, str]]:
    """The settings rows of where it ran: device, batch size, embedding cache, backbone fingerprint."""
    rows: list[tuple[str, str]] = []
    device, device_used = take("device"), take("device_used")
    if device_used or device:
        rows.append(("device", str(device_used or device)))
    if (v := take("batch_size")) is not None:
        rows.append(("batch size", str(v)))
    if (v := take("cache_dir")) is not None:
        rows.append(("embedding cache", str(v)))
    if (v := take("backbone_fingerprint")) is not None:
        rows.append(("backbone fingerprint", str(v)))
    return rows


def template_env(folder: Path = Path(__file__).with_name("templates")) -> Any:
    """The Jinja environment of the report's pages (and ``tacluster serve``'s, from ``folder``)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        # Every path, noun and name in the page comes from user data: escape all of it.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = _fmt_seconds
    env.filters["value"] = _fmt_value
    return env


# --------------------------------------------------------------------------- public


def build_report(
    out_dir: str | os.PathLike[str],
    *,
    thumbs_per_cluster: int = 12,
    thumb_size: int = 128,
    progress: bool = False,
) -> Path:
    """Write ``report.html`` (plus thumbnails and figures) into a run directory.

    Parameters
    ----------
    out_dir : path-like
        Output directory of a tacluster run, holding ``assignments.parquet``,
        ``clusters.json`` and optionally ``run.json`` and ``skipped.csv``
        (see the module docstring for their layout).
    thumbs_per_cluster : int, default=12
        Number of most confident members shown per cluster. Up to
        ``OUTLIERS_SHOWN`` outliers from ``clusters.json`` are shown besides.
    thumb_size : int, default=128
        Longest side of a thumbnail in pixels. Thumbnails are cached in
        ``DIR/thumbs`` and made only when missing.
    progress : bool, default=False
        Show a tqdm bar while making thumbnails.

    Returns
    -------
    Path
        Path of the written ``report.html``.

    Raises
    ------
    InputError
        If a required file is missing or malformed (the message names it),
        or an argument is out of range.

    Notes
    -----
    Relative image paths are resolved against the current directory, as the
    run that wrote them did. Images that cannot be decoded get a placeholder
    thumbnail and are flagged on the page; so do URLs (listed by ``--embeddings``
    inputs), flagged "not a local file".
    """
    if isinstance(thumbs_per_cluster, bool) or not isinstance(thumbs_per_cluster, int) or thumbs_per_cluster < 0:
        raise InputError(f"thumbs_per_cluster={thumbs_per_cluster!r} must be an integer >= 0")
    if isinstance(thumb_size, bool) or not isinstance(thumb_size, int) or not 16 <= thumb_size <= 1024:
        raise InputError(f"thumb_size={thumb_size!r} must be an integer between 16 and 1024")
    out_dir = Path(out_dir)
    rd = read_run_dir(out_dir)
    a, run = rd.assignments, rd.run
    env = template_env()
    colors = cluster_colors([c["id"] for c in rd.clusters])
    map_info = draw_map(a, rd.clusters, colors, out_dir / MAP_FILE)
    auto_k = None
    if run.get("auto_k") is not None:
        auto_k = draw_auto_k(run["auto_k"], out_dir / AUTO_K_FILE, out_dir / RUN_FILE)
        auto_k["image"] = AUTO_K_FILE

    order, sorted_ids = members_by_cluster(a)
    picks = _pick_members(rd, order, sorted_ids, thumbs_per_cluster)
    dup_groups = _read_duplicate_groups(out_dir)
    dup_paths = [r["path"] for rows in dup_groups for r in rows]
    page_paths = _page_thumb_paths(rd, order, sorted_ids)
    thumbs = _thumbnails(out_dir, picks, thumb_size, progress, dup_paths + page_paths)
    tile = _tile_maker(a, thumbs)
    _write_cluster_pages(out_dir, env, rd, order, sorted_ids, thumbs)
    clusters_view = _clusters_view(rd, picks, colors, tile)
    html = env.get_template("report.html.j2").render(
        title=f"tacluster report: {out_dir.resolve().name}",
        run_found=rd.run_found,
        version=run.get("tacluster_version"),
        command=run.get("command"),
        generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(),
        mean_confidence=float(a.confidence.mean()) if len(a.path) else None,
        settings=_settings_view(run.get("settings") or {}, run.get("versions")),
        clusters=clusters_view,
        map_image=MAP_FILE,
        map_info=map_info,
        auto_k=auto_k,
        skipped=rd.skipped[:SKIPPED_SHOWN],
        skipped_total=len(rd.skipped),
        thumb_size=thumb_size,
        duplicates=_duplicates_view(run, dup_groups, tile, out_dir),
        **_run_summary(rd),
    )
    dst = out_dir / REPORT_FILE
    atomic_write_bytes(dst, page_bytes(html))  # non-UTF-8 file names
    return dst


def _clusters_view(rd: RunDir, picks: dict, colors: dict, tile: Callable[[str, bool], dict[str, Any]]) -> list[dict]:
    """The page's cluster cards, largest cluster first: clusters.json's entry with its colour, share,
    page link and the tiles of its picked members (:func:`_pick_members`)."""
    a = rd.assignments
    clusters_view = []
    for cl in sorted(rd.clusters, key=lambda c: (-c["size"], c["id"])):
        top, outliers, moved, new = picks[cl["id"]]
        mean_conf = cl["mean_confidence"]
        if mean_conf is None:
            m = a.cluster == cl["id"]
            mean_conf = float(a.confidence[m].mean()) if m.any() else None
        clusters_view.append({
            **cl,
            "mean_confidence": mean_conf,
            "color": hex_color(colors[cl["id"]]),
            "share": cl["size"] / max(len(a.path), 1),
            "tiles": [tile(p, False) for p in top],
            "n_shown": len(top),
            "page": f"{CLUSTER_PAGES_DIR}/cluster-{cl['id']}.html",
            "outlier_tiles": [tile(p, True) for p in outliers],
            "moved_tiles": [tile(p, False) for p in moved],
            "new_tiles": [tile(p, True) for p in new],
        })
    return clusters_view


def _pick_members(rd: RunDir, order: np.ndarray, sorted_ids: np.ndarray, per_cluster: int) -> dict:
    """Per cluster id: its ``per_cluster`` most confident members, then up to
    :data:`OUTLIERS_SHOWN` outliers, images moved there and added images marked new, from clusters.json."""
    a = rd.assignments
    picks: dict[int, tuple[list[str], list[str]]] = {}
    for cl in rd.clusters:
        lo, hi = np.searchsorted(sorted_ids, [cl["id"], cl["id"] + 1])
        top = [a.path[i] for i in order[lo:min(hi, lo + per_cluster)]]
        if not top:  # no rows for it in assignments: fall back to clusters.json
            top = cl["representatives"][:per_cluster]
        shown = set(top)
        outliers = [p for p in cl["outliers"] if p not in shown][:OUTLIERS_SHOWN]
        picks[cl["id"]] = (top, outliers, list(cl.get("moved", []))[:OUTLIERS_SHOWN],
                           list(cl.get("new", []))[:OUTLIERS_SHOWN])
    return picks


def _read_duplicate_groups(out_dir: Path) -> list[list[dict]]:
    """The first :data:`DUPLICATE_GROUPS_SHOWN` groups of ``duplicates.csv`` (none for a run
    made before it existed), each cut to :data:`DUPLICATES_PER_GROUP` rows."""
    path = out_dir / DUPLICATES_FILE
    if not path.is_file():
        return []
    groups = read_duplicates(path)
    return [groups[g][:DUPLICATES_PER_GROUP] for g in sorted(groups)[:DUPLICATE_GROUPS_SHOWN]]


def _duplicates_view(run: dict, groups: list[list[dict]], tile, out_dir: Path) -> dict | None:
    """What the page's duplicates section shows; None when the run recorded no detection."""
    info = run.get("duplicates")
    if not isinstance(info, dict) and not groups:
        return None
    info = info if isinstance(info, dict) else {}
    n_groups = info.get("groups")
    if n_groups is None:
        n_groups = len(read_duplicates(out_dir / DUPLICATES_FILE))
    shown = []
    for rows in groups:
        kinds = {r.get("kind") for r in rows}
        shown.append({"id": rows[0]["group"], "kind": "byte-identical" if kinds == {"identical"} else "near-identical",
                      "tiles": [tile(r["path"], False) for r in rows]})
    return {"groups": shown, "n_groups": n_groups, "n_images": info.get("images"),
            "threshold": info.get("threshold"), "compared": info.get("compared", "embeddings"), "file": DUPLICATES_FILE}


def _thumbnails(out_dir: Path, picks: dict, size: int, progress: bool, extra=()) -> dict[str, str]:
    """Thumbnail (relative path) of every picked image and of ``extra`` paths; a placeholder
    for those that cannot be shown."""
    thumbs_dir = out_dir / THUMBS_DIR
    thumbs_dir.mkdir(exist_ok=True)
    needed = sorted({p for lists in picks.values() for group in lists for p in group} | set(extra))
    thumb_of: dict[str, str | None] = {}
    for p in iter_progress(needed, len(needed), "thumbnails", "image", enabled=progress):
        name = ensure_thumb(thumbs_dir, p, size)
        thumb_of[p] = f"{THUMBS_DIR}/{name}" if name else None
    blank = placeholder(thumbs_dir, size) if None in thumb_of.values() else ""
    return {p: (src or blank, src is not None) for p, src in thumb_of.items()}


def _tile_maker(a: Assignments, thumbs: dict):
    """``tile(path, outlier)``: what the page template shows for one image (one of ``thumbs``)."""
    conf_of = {p: float(c) for p, c in zip(a.path, a.confidence) if p in thumbs}  # the shown ones only

    def tile(p: str, outlier: bool) -> dict[str, Any]:
        src, readable = thumbs[p]
        return {
            "path": p,
            # Folder + file name: a/001.jpg and b/001.jpg must read differently.
            "name": short_name(p),
            "folder": os.path.basename(os.path.dirname(p)),
            "file": short_file(p),
            "src": src,
            "readable": readable,
            "remote": is_url(p),
            "uri": file_uri(p),
            "confidence": conf_of.get(p),
            "outlier": outlier,
        }

    return tile


def _page_thumb_paths(rd: RunDir, order: np.ndarray, sorted_ids: np.ndarray) -> list[str]:
    """The images the cluster pages show as thumbnails: each cluster's
    :data:`PAGE_THUMBS` most confident members."""
    out: list[str] = []
    for cl in rd.clusters:
        lo, hi = np.searchsorted(sorted_ids, [cl["id"], cl["id"] + 1])
        out.extend(rd.assignments.path[i] for i in order[lo:min(hi, lo + PAGE_THUMBS)])
    return out


def _write_cluster_pages(out_dir: Path, env, rd: RunDir, order: np.ndarray, sorted_ids: np.ndarray,
                         thumbs: dict[str, tuple[str, bool]]) -> None:
    """One page per cluster listing its members, most confident first, up to
    :data:`PAGE_MEMBERS_MAX` (then a pointer to assignments.csv), so none is
    hidden behind the strip; pages of clusters that no longer exist (merged,
    renumbered) are removed."""
    a = rd.assignments
    pages_dir = out_dir / CLUSTER_PAGES_DIR
    pages_dir.mkdir(exist_ok=True)
    outlier_paths = {p for cl in rd.clusters for p in cl["outliers"]}
    page_template = env.get_template("cluster.html.j2")
    written = set()
    for cl in rd.clusters:
        lo, hi = np.searchsorted(sorted_ids, [cl["id"], cl["id"] + 1])
        rows = []
        for i in order[lo:min(hi, lo + PAGE_MEMBERS_MAX)]:
            p = a.path[i]
            flagged = bool(a.outlier[i]) if a.outlier is not None else p in outlier_paths
            shown = thumbs.get(p) if len(rows) < PAGE_THUMBS else None
            rows.append({"path": p, "uri": file_uri(p), "confidence": float(a.confidence[i]), "outlier": flagged,
                         "thumb": f"../{shown[0]}" if shown else None,
                         "moved": a.moved is not None and bool(a.moved[i]),
                         "new": a.new is not None and bool(a.new[i])})
        name = f"cluster-{cl['id']}.html"
        html_page = page_template.render(name=cl["name"], id=cl["id"], rows=rows, total=int(hi - lo),
                                         page_thumbs=PAGE_THUMBS,
                                         report=REPORT_FILE, assignments=ASSIGNMENTS_CSV)
        atomic_write_bytes(pages_dir / name, page_bytes(html_page))
        written.add(name)
    for old_page in pages_dir.glob("cluster-*.html"):
        if old_page.name not in written:
            old_page.unlink(missing_ok=True)


def _run_summary(rd: RunDir) -> dict[str, Any]:
    """The page's counts, stage timings and any run.json entries it has no place for."""
    a, run = rd.assignments, rd.run
    counts = run.get("counts") if isinstance(run.get("counts"), dict) else {}
    summary = [
        ("Images", counts.get("inputs", len(a.path) + len(rd.skipped))),
        ("Assigned", counts.get("assigned", len(a.path))),
        ("Skipped", counts.get("skipped", len(rd.skipped))),
        ("Clusters", len(rd.clusters)),
    ]
    recorded = run.get("timings_s") or {}
    # Top-level stages once: "fit.*" entries are parts of "fit", and "total"
    # is the run's own wall time (stages do not add up to it exactly).
    timings = {k: v for k, v in recorded.items() if "." not in k and k != "total"}
    try:
        total_time = float(recorded["total"]) if "total" in recorded else sum(float(v) for v in timings.values())
    except (TypeError, ValueError):
        total_time = None
    extra = {k: v for k, v in run.items() if k not in _KNOWN_RUN_KEYS + ("versions", "run_key", "status")}
    extra_counts = {k: v for k, v in counts.items() if k not in ("inputs", "assigned", "skipped")}
    return {
        "summary": summary,
        "timings": {_STAGE_WORDS.get(k, k): v for k, v in timings.items()},
        "total_time": total_time,
        "extra": {**extra, **{_COUNT_WORDS.get(k, f"counts.{k}"): v for k, v in extra_counts.items()}},
    }
