"""The report's figures (map, auto-K curve) and ``tacluster evaluate``'s
confusion matrix, drawn on bare matplotlib Figures (no pyplot state)."""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tacluster._atomic import atomic_write_bytes
from tacluster.errors import InputError
from tacluster.report.reading import Assignments


#: Above this many images the map shows a random subsample: a scatter of more
#: points is no more readable, only slower to draw and heavier to load.
MAP_MAX_POINTS = 50_000
#: The map names at most this many clusters (the largest): more labels cover
#: the picture, and spreading them apart costs O(labels^2) per round (at
#: K = 1000 hours, not seconds).
MAP_LABELS_MAX = 40



def _quiet_glyphs(draw: Callable) -> Callable:
    """``draw`` without matplotlib's warning per glyph its font lacks: a cluster name with an
    emoji is drawn with a box there, and the warning came again on every rebuild of the
    report (every later edit)."""

    @functools.wraps(draw)
    def quiet(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
            return draw(*args, **kwargs)

    return quiet


@_quiet_glyphs
def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # A bare Figure on an Agg canvas: no pyplot global state, no GUI backend.
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    atomic_write_bytes(path, buf.getvalue())



def cluster_colors(ids: Sequence[int]) -> dict[int, tuple[float, float, float]]:
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



def hex_color(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)



@_quiet_glyphs
def draw_map(a: Assignments, clusters: list[dict[str, Any]],
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
    ids, counts = np.unique(a.cluster[finite], return_counts=True)
    named = ids[np.lexsort((ids, -counts))[:MAP_LABELS_MAX]]  # the largest clusters, ties by id
    for cid in np.sort(named):
        m = finite & (a.cluster == cid)
        # The median resists the pull of a few far-away members.
        cx, cy = float(np.median(a.x[m])), float(np.median(a.y[m]))
        labels.append(ax.annotate(
            names.get(int(cid), str(cid)), (cx, cy), xytext=(0, 0), textcoords="offset points",
            ha="center", va="center", fontsize=label_size, fontweight="bold", color="#1f2430",
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": hex_color(colors[int(cid)]),
                  "alpha": 0.85, "lw": 1.2},
            arrowprops={"arrowstyle": "-", "color": hex_color(colors[int(cid)]), "lw": 1.0, "shrinkA": 0, "shrinkB": 0},
        ))
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("map x")
    ax.set_ylabel("map y")
    shown = len(idx)
    title = f"{n_total:,} images" if shown == n_total else f"{shown:,} of {n_total:,} images (random sample)"
    if len(named) < len(ids):
        title += f"; names of the {len(named)} largest of {len(ids):,} clusters"
    ax.set_title(title, fontsize=10, color="#4a5160")
    boxes = spread_labels(fig, labels)
    save_figure(fig, dst)
    return {"shown": shown, "total": n_total, "label_boxes": boxes}



def spread_labels(fig: Any, labels: list[Any], max_rounds: int = 300) -> list[tuple[float, float, float, float]]:
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



def draw_auto_k(auto_k: Any, dst: Path, source: Path) -> dict[str, Any]:
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
    save_figure(fig, dst)
    plateau = auto_k.get("plateau")
    if isinstance(plateau, (list, tuple)) and len(plateau) == 2 and all(isinstance(v, int) for v in plateau):
        plateau = [int(plateau[0]), int(plateau[1])]
    else:
        plateau = None
    tol = auto_k.get("tolerance")
    tolerance = float(tol) if isinstance(tol, (int, float)) and not isinstance(tol, bool) else None
    return {"candidates": cand, "scores": scores, "chosen": chosen, "plateau": plateau, "tolerance": tolerance}



def matched_row_order(m: np.ndarray) -> np.ndarray:
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
    order = matched_row_order(m) if match else np.arange(rows)
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
    save_figure(fig, path, dpi=120)
    return path
