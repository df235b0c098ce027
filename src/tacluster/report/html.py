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

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from tacluster._atomic import atomic_write_bytes
from tacluster._paths import text_to_path
from tacluster.errors import InputError
from tacluster.run.rundir import (
    ASSIGNMENTS_FILE, AUTO_K_FILE, CLUSTER_PAGES_DIR, CLUSTERS_FILE, MAP_FILE, REPORT_FILE, RUN_FILE,
    SKIPPED_FILE, THUMBS_DIR, read_assignments_table,
)

__all__ = ["build_report", "save_confusion_png"]

_ASSIGNMENT_COLUMNS = ("path", "cluster", "confidence", "cluster_name", "x", "y")
#: Above this many images the map shows a random subsample: a scatter of more
#: points is no more readable, only slower to draw and heavier to load.
MAP_MAX_POINTS = 50_000
#: The page lists this many skipped files and counts the rest.
SKIPPED_SHOWN = 200
#: Outliers shown per cluster; they are the least typical members, a few suffice.
OUTLIERS_SHOWN = 6
_KNOWN_RUN_KEYS = ("tacluster_version", "command", "settings", "timings_s", "counts", "auto_k", "method_choice")


# --------------------------------------------------------------------------- reading


@dataclass
class _Assignments:
    """Columns of ``assignments.parquet`` as arrays, each of shape (n_images,)."""

    path: list[str]
    cluster: np.ndarray
    confidence: np.ndarray
    x: np.ndarray
    y: np.ndarray
    outlier: np.ndarray | None = None  # optional column (runs before it have none)


@dataclass
class _RunDir:
    assignments: _Assignments
    clusters: list[dict[str, Any]]
    run: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)
    run_found: bool = True


def _read_assignments(path: Path) -> _Assignments:
    import pyarrow as pa

    table = read_assignments_table(path, _ASSIGNMENT_COLUMNS)
    for name in ("path", "cluster", "confidence", "x", "y"):
        if table.column(name).null_count:
            raise InputError(f"{path}: column {name!r} has missing values")
    try:
        paths = [text_to_path(str(p)) for p in table.column("path").to_pylist()]
        cluster = np.asarray(table.column("cluster").to_numpy(), dtype=np.int64)
        confidence = np.asarray(table.column("confidence").to_numpy(), dtype=np.float64)
        x = np.asarray(table.column("x").to_numpy(), dtype=np.float64)
        y = np.asarray(table.column("y").to_numpy(), dtype=np.float64)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{path}: a column has the wrong type ({exc})") from exc
    outlier = None
    if "outlier" in table.column_names and not table.column("outlier").null_count:
        outlier = np.asarray(table.column("outlier").to_numpy(zero_copy_only=False), dtype=bool)
    return _Assignments(paths, cluster, confidence, x, y, outlier)


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); re-run tacluster") from exc


def _read_clusters(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path} not found: the run directory is incomplete; re-run tacluster")
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("clusters"), list):
        raise InputError(f'{path} must hold an object with a "clusters" list')
    clusters = []
    for i, entry in enumerate(data["clusters"]):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: clusters[{i}] is not an object")
        try:
            cid, size = int(entry["id"]), int(entry["size"])
            name = str(entry.get("name", f"cluster {cid}"))
            nouns = [
                {"noun": str(n["noun"]), "score": float(n.get("score", math.nan))}
                for n in entry.get("top_nouns") or []
            ]
            mean_conf = entry.get("mean_confidence")
            mean_conf = None if mean_conf is None else float(mean_conf)
            reps = [text_to_path(str(p)) for p in entry.get("representatives") or []]
            outliers = [text_to_path(str(p)) for p in entry.get("outliers") or []]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{path}: clusters[{i}] is malformed ({type(exc).__name__}: {exc}); "
                'each needs "id" and "size", "top_nouns" entries need "noun"'
            ) from exc
        clusters.append(
            {"id": cid, "size": size, "name": name, "top_nouns": nouns,
             "mean_confidence": mean_conf, "representatives": reps, "outliers": outliers}
        )
    ids = [c["id"] for c in clusters]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: cluster ids are not unique: {sorted(ids)}")
    return clusters


def _read_run(path: Path) -> dict[str, Any]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    for key in ("settings", "timings_s", "counts"):
        if key in data and not isinstance(data[key], dict):
            raise InputError(f"{path}: {key!r} must be an object, got {type(data[key]).__name__}")
    return data


def _read_skipped(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        # skipped.csv holds file names byte for byte; one that is not UTF-8 is
        # shown with its odd bytes escaped, not refused.
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:  # empty file: nothing was skipped
                return []
            if "path" not in reader.fieldnames:
                raise InputError(
                    f"{path} has columns {reader.fieldnames}; expected 'path' and 'reason'"
                )
            return [{"path": text_to_path(r.get("path") or ""), "reason": r.get("reason") or ""} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a readable CSV file ({exc})") from exc


def _read_run_dir(out_dir: Path) -> _RunDir:
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a directory; pass the output directory of a tacluster run")
    assignments = _read_assignments(out_dir / ASSIGNMENTS_FILE)
    clusters = _read_clusters(out_dir / CLUSTERS_FILE)
    unknown = sorted(set(np.unique(assignments.cluster).tolist()) - {c["id"] for c in clusters})
    if unknown:
        raise InputError(
            f"{out_dir / ASSIGNMENTS_FILE} uses cluster id(s) {unknown[:10]} that "
            f"{out_dir / CLUSTERS_FILE} does not describe; the two files come from different runs"
        )
    run_path = out_dir / RUN_FILE
    run_found = run_path.is_file()
    run = _read_run(run_path) if run_found else {}
    return _RunDir(assignments, clusters, run, _read_skipped(out_dir / SKIPPED_FILE), run_found)


# --------------------------------------------------------------------------- writing


def _save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # A bare Figure on an Agg canvas: no pyplot global state, no GUI backend.
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    atomic_write_bytes(path, buf.getvalue())


def _cluster_colors(ids: Sequence[int]) -> dict[int, tuple[float, float, float]]:
    """One colour per cluster id, shared by the map and the page."""
    import matplotlib

    ids = sorted(ids)
    n = len(ids)
    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {cid: cmap(i)[:3] for i, cid in enumerate(ids)}
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return {cid: cmap(i)[:3] for i, cid in enumerate(ids)}
    cmap = matplotlib.colormaps["turbo"]
    # Interleave positions along the colour map so neighbouring ids differ.
    order = np.argsort((np.arange(n) * 0.618033988749895) % 1.0)
    pos = np.empty(n)
    pos[order] = np.linspace(0.05, 0.95, n)
    return {cid: cmap(pos[i])[:3] for i, cid in enumerate(ids)}


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


# ---- thumbnails


def _thumb_name(path: str, size: int) -> str:
    # The path string as given, hashed: photos/a/1.jpg and photos/b/1.jpg differ.
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f"{digest}_{size}.jpg"


def _make_thumb(src: Path, dst: Path, size: int) -> bool:
    """Write a JPEG thumbnail of ``src`` to ``dst``; return False if ``src`` cannot be decoded."""
    from PIL import Image, ImageOps

    try:
        with Image.open(src) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
            im = ImageOps.exif_transpose(im)
            if im.mode not in ("RGB", "L"):
                # Flatten transparency onto white rather than onto black.
                rgba = im.convert("RGBA")
                im = Image.new("RGB", rgba.size, "white")
                im.paste(rgba, mask=rgba.getchannel("A"))
            im = im.convert("RGB")
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85, optimize=True)
    # Decoders of arbitrary user files raise many exception types (OSError,
    # SyntaxError, struct.error, DecompressionBombError, ...); one bad file must
    # cost a placeholder, never the report.
    except Exception:  # noqa: BLE001
        return False
    atomic_write_bytes(dst, buf.getvalue())
    return True


def _placeholder(thumbs_dir: Path, size: int) -> str:
    from PIL import Image, ImageDraw

    name = f"_unreadable_{size}.png"
    dst = thumbs_dir / name
    if not dst.is_file():
        im = Image.new("RGB", (size, size), "#eceff3")
        draw = ImageDraw.Draw(im)
        m = size // 4
        draw.line((m, m, size - m, size - m), fill="#b3bac5", width=max(2, size // 32))
        draw.line((m, size - m, size - m, m), fill="#b3bac5", width=max(2, size // 32))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        atomic_write_bytes(dst, buf.getvalue())
    return f"{THUMBS_DIR}/{name}"


def _short_file(path: str, limit: int = 22) -> str:
    """The file name, shortened in the middle when long, so its end (the number) stays readable."""
    name = os.path.basename(path) or path
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2 - 2
    return name[:head] + "…" + name[-(limit - 1 - head):]


def _short_name(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 and parts[-2] != os.sep else path


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _is_url(path: str) -> bool:
    """A URL (``https://...``, ``s3://...``) rather than a local path: the
    ``--embeddings`` inputs may list those. No thumbnail is made for it."""
    return bool(_URL.match(path))


def _file_uri(path: str) -> str:
    """``file:`` URI of an image path (percent-encodes every unsafe character); a URL as it is."""
    if _is_url(path):
        return path
    return Path(os.path.abspath(path)).as_uri()


# ---- figures


def _draw_map(a: _Assignments, clusters: list[dict[str, Any]],
              colors: dict[int, tuple[float, float, float]], dst: Path) -> dict[str, int]:
    from matplotlib.figure import Figure

    finite = np.isfinite(a.x) & np.isfinite(a.y)
    idx = np.flatnonzero(finite)
    n_total = int(idx.size)
    if idx.size > MAP_MAX_POINTS:
        # Fixed seed: the same run gives the same picture.
        idx = np.sort(np.random.default_rng(0).choice(idx, MAP_MAX_POINTS, replace=False))
    x, y, c = a.x[idx], a.y[idx], a.cluster[idx]
    rgb = np.array([colors[int(k)] for k in c]).reshape(-1, 3)

    fig = Figure(figsize=(9, 7))
    ax = fig.add_subplot()
    # Smaller, more transparent points as the count grows keep dense areas readable.
    s = float(np.clip(4000 / max(len(idx), 1), 1.5, 28))
    alpha = float(np.clip(300 / math.sqrt(max(len(idx), 1)), 0.25, 0.85))
    ax.scatter(x, y, c=rgb, s=s, alpha=alpha, linewidths=0, rasterized=True)
    names = {cl["id"]: cl["name"] for cl in clusters}
    label_size = 9 if len(clusters) <= 20 else 7  # many labels overlap less when smaller
    labels = []
    for cid in np.unique(a.cluster[finite]):
        m = finite & (a.cluster == cid)
        # The median resists the pull of a few far-away members.
        cx, cy = float(np.median(a.x[m])), float(np.median(a.y[m]))
        labels.append(ax.annotate(
            names.get(int(cid), str(cid)), (cx, cy), xytext=(0, 0), textcoords="offset points",
            ha="center", va="center", fontsize=label_size, fontweight="bold", color="#1f2430",
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": _hex(colors[int(cid)]),
                  "alpha": 0.85, "lw": 1.2},
            arrowprops={"arrowstyle": "-", "color": _hex(colors[int(cid)]), "lw": 1.0, "shrinkA": 0, "shrinkB": 0},
        ))
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("map x")
    ax.set_ylabel("map y")
    shown = len(idx)
    title = f"{n_total:,} images" if shown == n_total else f"{shown:,} of {n_total:,} images (random sample)"
    ax.set_title(title, fontsize=10, color="#4a5160")
    boxes = _spread_labels(fig, labels)
    _save_figure(fig, dst)
    return {"shown": shown, "total": n_total, "label_boxes": boxes}


def _spread_labels(fig: Any, labels: list[Any], max_rounds: int = 300) -> list[tuple[float, float, float, float]]:
    """Move overlapping map labels apart (a thin line joins each moved label to
    its cluster's centre); returns the final label boxes in pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not labels:
        return []
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # settles the axes limits (autoscale) the label positions depend on
    renderer = canvas.get_renderer()
    to_points = 72.0 / fig.dpi
    offsets = np.zeros((len(labels), 2))  # points

    def boxes() -> np.ndarray:
        from matplotlib.text import Text

        out = []
        for ann in labels:
            b = Text.get_window_extent(ann, renderer)  # the text itself, not the leader line
            pad = 0.35 * ann.get_fontsize() * fig.dpi / 72  # the rounded box around it
            out.append((b.x0 - pad, b.y0 - pad, b.x1 + pad, b.y1 + pad))
        return np.asarray(out)

    rng = np.random.default_rng(0)
    for _ in range(max_rounds):
        b = boxes()
        moved = False
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                ox = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
                oy = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
                if ox <= 0 or oy <= 0:
                    continue
                moved = True
                ci, cj = (b[i, :2] + b[i, 2:]) / 2, (b[j, :2] + b[j, 2:]) / 2
                d = ci - cj
                if not d.any():
                    d = rng.normal(size=2)
                # push along the axis that needs the shorter move, half each, plus 2 px
                if oy <= ox:
                    step = np.array([0.0, np.sign(d[1]) or 1.0]) * (oy / 2 + 2)
                else:
                    step = np.array([np.sign(d[0]) or 1.0, 0.0]) * (ox / 2 + 2)
                offsets[i] += step * to_points
                offsets[j] -= step * to_points
                labels[i].xyann = tuple(offsets[i])
                labels[j].xyann = tuple(offsets[j])
                b = boxes()
        if not moved:
            break
    return [tuple(map(float, row)) for row in boxes()]


def _draw_auto_k(auto_k: Any, dst: Path, source: Path) -> dict[str, Any]:
    from matplotlib.figure import Figure

    try:
        cand = [int(k) for k in auto_k["candidates"]]
        scores = [float(s) for s in auto_k["scores"]]
        chosen = auto_k.get("chosen")
        chosen = None if chosen is None else int(chosen)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            f'{source}: "auto_k" must be {{"candidates": [k...], "scores": [...], "chosen": k}} ({exc})'
        ) from exc
    if len(cand) != len(scores) or not cand:
        raise InputError(
            f'{source}: "auto_k" has {len(cand)} candidates but {len(scores)} scores; they must pair up'
        )
    order = np.argsort(cand)
    k, s = np.asarray(cand)[order], np.asarray(scores)[order]
    fig = Figure(figsize=(4.6, 3.4))
    ax = fig.add_subplot()
    ax.plot(k, s, marker="o", color="#3b6fd4", lw=1.8, ms=5)
    if chosen is not None and chosen in cand:
        ax.scatter([chosen], [scores[cand.index(chosen)]], s=140, facecolors="none",
                   edgecolors="#d43b3b", linewidths=2, zorder=3, label=f"chosen k = {chosen}")
        ax.legend(frameon=False, fontsize=9)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # k is a count
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    _save_figure(fig, dst)
    return {"candidates": cand, "scores": scores, "chosen": chosen}


# ---- page helpers


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
    "fit": "cluster", "naming": "name the clusters", "write": "write the outputs",
}
_COUNT_WORDS = {
    "embedded_now": "images embedded now", "from_cache": "images from the cache",
    "duplicates": "paths listed twice (used once)",
}

_METHOD_WORDS = {
    "tac": "TAC: text counterparts + trained cluster heads",
    "no-train": "TAC without training: k-means on images and their text counterparts",
    "kmeans": "k-means on the image features",
    "spectral": "spectral clustering of the image neighbour graph",
    "auto": "the best of k-means and spectral clustering for this collection, chosen without labels",
}


def _settings_view(settings: dict[str, Any], versions: Any) -> list[tuple[str, str]]:
    """``run.json``'s settings as (label, value in words) rows: what was used.

    Values that do not apply (zero counts of a stage that did not run, empty
    parameter sets) are left out; unknown keys are shown as they are."""
    s = dict(settings)
    rows: list[tuple[str, str]] = []

    def take(key: str) -> Any:
        return s.pop(key, None)

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
    chosen, scores = take("method_chosen"), take("method_scores")
    if chosen is not None:
        text = str(chosen)
        if isinstance(scores, dict) and scores:
            text += " (modularity on the image neighbour graph: " + ", ".join(
                f"{a} {_fmt_value(b)}" for a, b in scores.items()) + ")"
        rows.append(("method chosen", text))
    params = take("estimator_params")
    if params:
        rows.append(("method options", ", ".join(f"{a} = {_fmt_value(b)}" for a, b in dict(params).items())
                     if isinstance(params, dict) else _fmt_value(params)))
    if (v := take("seed")) is not None:
        rows.append(("seed", str(v)))
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
    device, device_used = take("device"), take("device_used")
    if device_used or device:
        rows.append(("device", str(device_used or device)))
    if (v := take("batch_size")) is not None:
        rows.append(("batch size", str(v)))
    if (v := take("cache_dir")) is not None:
        rows.append(("embedding cache", str(v)))
    if (v := take("backbone_fingerprint")) is not None:
        rows.append(("backbone fingerprint", str(v)))
    for key, value in sorted(s.items()):
        if value in (None, {}, [], ""):
            continue
        rows.append((key, _fmt_value(value)))
    if isinstance(versions, dict) and versions:
        names = {"python": "Python"}
        rows.append(("software", ", ".join(f"{names.get(a, a)} {b}" for a, b in versions.items())))
    return rows


def _iter_progress(items: list[Any], progress: bool, desc: str) -> Iterator[Any]:
    if not progress:
        return iter(items)
    from tqdm.auto import tqdm

    return iter(tqdm(items, desc=desc, unit="img"))


def _template_env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
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
    rd = _read_run_dir(out_dir)
    a = rd.assignments
    run = rd.run

    env = _template_env()
    colors = _cluster_colors([c["id"] for c in rd.clusters])
    map_info = _draw_map(a, rd.clusters, colors, out_dir / MAP_FILE)
    auto_k = None
    if run.get("auto_k") is not None:
        auto_k = _draw_auto_k(run["auto_k"], out_dir / AUTO_K_FILE, out_dir / RUN_FILE)
        auto_k["image"] = AUTO_K_FILE

    conf_of = dict(zip(a.path, a.confidence.tolist()))
    # One sort for all clusters: by cluster, then highest confidence, then path
    # (so ties, and hence the page, are reproducible).
    order = np.lexsort((np.asarray(a.path, dtype=str), -a.confidence, a.cluster))
    sorted_ids = a.cluster[order]
    # Per cluster: the most confident members, then the outliers from clusters.json.
    picks: dict[int, tuple[list[str], list[str]]] = {}
    for cl in rd.clusters:
        lo, hi = np.searchsorted(sorted_ids, [cl["id"], cl["id"] + 1])
        top = [a.path[i] for i in order[lo:min(hi, lo + thumbs_per_cluster)]]
        if not top:  # no rows for it in assignments: fall back to clusters.json
            top = cl["representatives"][:thumbs_per_cluster]
        shown = set(top)
        outliers = [p for p in cl["outliers"] if p not in shown][:OUTLIERS_SHOWN]
        picks[cl["id"]] = (top, outliers)

    thumbs_dir = out_dir / THUMBS_DIR
    thumbs_dir.mkdir(exist_ok=True)
    needed = sorted({p for top, out in picks.values() for p in top + out})
    thumb_of: dict[str, str | None] = {}
    for p in _iter_progress(needed, progress, "thumbnails"):
        name = _thumb_name(p, thumb_size)
        ok = not _is_url(p) and ((thumbs_dir / name).is_file() or _make_thumb(Path(p), thumbs_dir / name, thumb_size))
        thumb_of[p] = f"{THUMBS_DIR}/{name}" if ok else None
    placeholder = _placeholder(thumbs_dir, thumb_size) if None in thumb_of.values() else ""

    def tile(p: str, outlier: bool) -> dict[str, Any]:
        conf = conf_of.get(p)
        return {
            "path": p,
            # Folder + file name: a/001.jpg and b/001.jpg must read differently.
            "name": _short_name(p),
            "folder": os.path.basename(os.path.dirname(p)),
            "file": _short_file(p),
            "src": thumb_of[p] or placeholder,
            "readable": thumb_of[p] is not None,
            "remote": _is_url(p),
            "uri": _file_uri(p),
            "confidence": conf,
            "outlier": outlier,
        }

    # One page per cluster listing every member, so none is hidden behind the strip.
    pages_dir = out_dir / CLUSTER_PAGES_DIR
    pages_dir.mkdir(exist_ok=True)
    outlier_paths = {p for cl in rd.clusters for p in cl["outliers"]}
    page_template = env.get_template("cluster.html.j2")
    written = set()
    for cl in rd.clusters:
        lo, hi = np.searchsorted(sorted_ids, [cl["id"], cl["id"] + 1])
        rows = []
        for i in order[lo:hi]:
            p = a.path[i]
            flagged = bool(a.outlier[i]) if a.outlier is not None else p in outlier_paths
            rows.append({"path": p, "uri": _file_uri(p), "confidence": float(a.confidence[i]), "outlier": flagged})
        name = f"cluster-{cl['id']}.html"
        html_page = page_template.render(name=cl["name"], id=cl["id"], rows=rows, report=REPORT_FILE)
        atomic_write_bytes(pages_dir / name, html_page.encode("utf-8", "backslashreplace"))
        written.add(name)
    for old_page in pages_dir.glob("cluster-*.html"):
        if old_page.name not in written:  # clusters that no longer exist (merged, renumbered)
            old_page.unlink(missing_ok=True)

    clusters_view = []
    for cl in sorted(rd.clusters, key=lambda c: (-c["size"], c["id"])):
        top, outliers = picks[cl["id"]]
        mean_conf = cl["mean_confidence"]
        if mean_conf is None:
            m = a.cluster == cl["id"]
            mean_conf = float(a.confidence[m].mean()) if m.any() else None
        clusters_view.append({
            **cl,
            "mean_confidence": mean_conf,
            "color": _hex(colors[cl["id"]]),
            "share": cl["size"] / max(len(a.path), 1),
            "tiles": [tile(p, False) for p in top],
            "n_shown": len(top),
            "page": f"{CLUSTER_PAGES_DIR}/cluster-{cl['id']}.html",
            "outlier_tiles": [tile(p, True) for p in outliers],
        })

    counts = run.get("counts") if isinstance(run.get("counts"), dict) else {}
    n_inputs = counts.get("inputs", len(a.path) + len(rd.skipped))
    n_skipped = counts.get("skipped", len(rd.skipped))
    summary = [
        ("Images", n_inputs),
        ("Assigned", counts.get("assigned", len(a.path))),
        ("Skipped", n_skipped),
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

    html = env.get_template("report.html.j2").render(
        title=f"tacluster report: {out_dir.resolve().name}",
        run_found=rd.run_found,
        version=run.get("tacluster_version"),
        command=run.get("command"),
        generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(),
        summary=summary,
        mean_confidence=float(a.confidence.mean()) if len(a.path) else None,
        settings=_settings_view(run.get("settings") or {}, run.get("versions")),
        timings={_STAGE_WORDS.get(k, k): v for k, v in timings.items()},
        total_time=total_time,
        extra={**extra, **{_COUNT_WORDS.get(k, f"counts.{k}"): v for k, v in extra_counts.items()}},
        clusters=clusters_view,
        map_image=MAP_FILE,
        map_info=map_info,
        auto_k=auto_k,
        skipped=rd.skipped[:SKIPPED_SHOWN],
        skipped_total=len(rd.skipped),
        thumb_size=thumb_size,
    )
    dst = out_dir / REPORT_FILE
    atomic_write_bytes(dst, html.encode("utf-8", "backslashreplace"))  # non-UTF-8 file names
    return dst


def _matched_row_order(m: np.ndarray) -> np.ndarray:
    """Row order putting each class's Hungarian-matched cluster on the diagonal.

    Parameters
    ----------
    m : ndarray of shape (n_clusters, n_classes)

    Returns
    -------
    ndarray of shape (n_clusters,)
        Matched clusters in class order, then unmatched ones, largest first.
    """
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(m, maximize=True)
    matched = r[np.argsort(c)]
    rest = sorted(set(range(m.shape[0])) - set(matched.tolist()), key=lambda i: (-m[i].sum(), i))
    return np.concatenate([matched, np.asarray(rest, dtype=int)]).astype(int)


def save_confusion_png(
    matrix: np.ndarray,
    cluster_names: Sequence[str],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    match: bool = True,
) -> Path:
    """Draw a cluster x class confusion matrix as an annotated heat map.

    Parameters
    ----------
    matrix : array-like of shape (n_clusters, n_classes)
        ``matrix[i, j]`` = number of images of class ``j`` put in cluster ``i``.
    cluster_names : sequence of str of length n_clusters
        Row labels (e.g. the cluster names from ``clusters.json``).
    class_names : sequence of str of length n_classes
        Column labels (the ground-truth classes).
    path : path-like
        Where to write the PNG (atomically).
    match : bool, default=True
        Reorder the rows by the Hungarian matching of clusters to classes
        (:func:`scipy.optimize.linear_sum_assignment`), so that a good
        clustering shows as a bright diagonal; unmatched clusters follow,
        largest first.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        If the shapes or labels do not agree or counts are negative.
    """
    from matplotlib.figure import Figure

    m = np.asarray(matrix)
    if m.ndim != 2 or m.size == 0:
        raise InputError(f"matrix must be a non-empty 2-D array (clusters x classes), got shape {m.shape}")
    if not np.issubdtype(m.dtype, np.number) or not np.all(np.isfinite(m)) or (m < 0).any():
        raise InputError("matrix must hold finite, non-negative counts")
    rows, cols = m.shape
    if len(cluster_names) != rows or len(class_names) != cols:
        raise InputError(
            f"matrix has shape {m.shape} but got {len(cluster_names)} cluster names and "
            f"{len(class_names)} class names; pass one name per row and per column"
        )
    order = _matched_row_order(m) if match else np.arange(rows)
    m = m[order]
    ylabels = [str(cluster_names[i]) for i in order]

    cell = 0.55 if max(rows, cols) <= 30 else 0.25
    fig = Figure(figsize=(max(4.5, 2.2 + cell * cols), max(3.5, 1.6 + cell * rows)))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="images")
    ax.set_xticks(range(cols), [str(s) for s in class_names], rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(rows), ylabels)
    ax.set_xlabel("true class")
    ax.set_ylabel("cluster")
    # Cell numbers stay legible only up to a few hundred cells.
    if rows * cols <= 900:
        vmax = float(m.max()) or 1.0
        fs = 8 if max(rows, cols) <= 15 else 6
        for (i, j), v in np.ndenumerate(m):
            if v:
                txt = f"{int(v)}" if float(v).is_integer() else f"{v:.2g}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=fs,
                        color="white" if v > 0.55 * vmax else "#1f2430")
    path = Path(path)
    _save_figure(fig, path, dpi=120)
    return path
