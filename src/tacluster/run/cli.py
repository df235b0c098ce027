"""``tacluster`` command line: cluster, predict, evaluate, report.

The CLI is thin: every command is a call of :mod:`tacluster.run.workflows` or
:mod:`tacluster.report.html`. Errors tacluster raises on purpose are printed as one
line (exit code 2); anything unexpected prints a one-line summary and the
traceback only with ``--debug`` (exit code 1).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the commands import the workflows only when they run
    from tacluster.run.workflows import ClusterRun

EPILOG = """examples:
  tacluster cluster examples/cifar10-mini --k 10 --out runs/example
  tacluster cluster --embeddings clip_out/ --backbone clip --k 50 --out runs/byo
  tacluster predict runs/example/model new_photos/ --out preds.csv
  tacluster evaluate runs/example --labels parent-dir
  tacluster report runs/example
  tacluster split runs/example 3 --k 2      # after clustering: split, move, add
  tacluster move runs/example a.jpg b.jpg --to 5
  tacluster add runs/example more_photos/
  tacluster duplicates photos/ --out dups.csv   # byte-identical and near-identical images
  tacluster serve runs/example        # review and fix the clusters in the browser
  tacluster backbones fetch clip      # pre-fetch a model for offline use
"""


def _positive(text: str) -> int:
    """argparse type for --threads and --batch-size: a whole number >= 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return n


def _seed(text: str) -> int:
    """argparse type for --seed: an integer 0..2**32-1 (what numpy and torch accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range: the seed must be 0 to 4294967295")
    return value


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tacluster",
        description="Cluster image collections with external guidance (Text-Aided Clustering).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from tacluster import __version__

    ap.add_argument("--version", action="version", version=f"tacluster {__version__}")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    _add_cluster(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_backbones(sub)
    _add_report(sub)
    _add_edits(sub)
    _add_duplicates(sub)
    _add_serve(sub)
    _add_selfcheck(sub)
    for command in sub.choices.values():  # --debug also after the subcommand, where errors suggest it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
    return ap



def _common(p, *, cache=True) -> None:
    """Options shared by the commands that load a backbone."""
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"],
                   help="where the models run (default: auto = cuda if available)")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="images per forward pass (default 64; not with --embeddings, which embeds nothing)")
    p.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="CPU threads for the models and k-means (default: $OMP_NUM_THREADS, else torch's "
                        "default, lowered to the cores CPU affinity or a container quota grants)")
    if cache:
        p.add_argument("--cache-dir", default=None,
                       help="embedding cache (default: $TACLUSTER_CACHE or ~/.cache/tacluster)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    p.add_argument("--offline", action="store_true",
                   help="never download a model: read the caches only (as HF_HUB_OFFLINE=1)")


def _add_cluster(sub) -> None:
    """``tacluster cluster``."""
    c = sub.add_parser("cluster", help="cluster a folder (or list) of images",
                       description="Cluster every image of INPUT into K clusters and write DIR: "
                                   "assignments.parquet/.csv, clusters.json, model/, skipped.csv, run.json, report.html.")
    c.add_argument("input", nargs="*", default=None,
                   help="folder of images (recursive), a .csv/.txt list of paths, or a quoted pattern such as "
                        "'photos/*.jpg' (or give --embeddings)")
    # The range is choose_k.search_range's (tests/test_cli.py checks the examples against it); spelled out
    # here so that building the parser does not import the clustering stack.
    c.add_argument("--k", type=_k_value, required=True, metavar="K",
                   help="number of clusters, or 'auto' to estimate it (searched in 2..max(2, min(30, n // 10)) "
                        "for n images: 2..2 for 25, 2..15 for 150, 2..30 for 1000)")
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--backbone", default="auto",
                   help="auto (default: the paper's CLIP when cached or downloadable, else lite) | lite (offline, "
                        "built in) | "
                        "clip | clip-l | siglip | siglip2 | hf:<Hub id or dir> | "
                        "openclip:<arch>/<tag or //path.pt>; named models are downloaded on first use "
                        "(`tacluster backbones` lists them)")
    c.add_argument("--method", default="auto", choices=["auto", "tac", "no-train", "kmeans", "spectral"],
                   help="auto = the measured best for the backbone (see README)")
    c.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 4294967295 (default 0)")
    c.add_argument("--consensus", type=int, default=0, metavar="N",
                   help="kmeans / no-train / auto (its k-means candidate): cluster the consensus of N "
                        "single-restart k-means runs (steadier across seeds; default 0 = best of 10 "
                        "restarts); refused with tac and spectral")
    c.add_argument("--vocabulary", default=None, help="file with one noun per line (default: WordNet nouns)")
    c.add_argument("--noun-bank", default="auto", choices=["auto", "full", "candidates"],
                   help="full = every noun with all 7 prompt templates (the paper); candidates = rank every noun "
                        "with one template, embed all 7 only for each semantic centre's candidates (cached per "
                        "noun); auto (default) = candidates on a CPU unless the full bank is cached, full on a GPU")
    c.add_argument("--ranking-precision", default="auto", choices=["auto", "float32", "int8"],
                   help="the candidates' one-template ranking bank: int8 (CPU: the text tower's Linear layers "
                        "quantised; the candidates' exact vectors stay float32), float32, or auto (default) = "
                        "int8 where a probe on this machine measures it >= 1.2x faster at min cosine >= 0.99")
    c.add_argument("--image-precision", default="auto", choices=["auto", "float32", "int8"],
                   help="the image tower: int8 (CPU with the local engine: its Linear layers quantised; vectors "
                        "cached apart from float32 ones), float32, or auto (default) = int8 on a CPU where the "
                        "images are cached in int8, or a probe of 8 of them on this machine measures int8 >= "
                        "1.2x faster at min cosine >= 0.999 (remembered per machine; float32 below 256 images to "
                        "embed); run.json counts.image_precision says which ran; refused with --embeddings")
    c.add_argument("--overwrite", action="store_true", help="replace a different run already in --out")
    c.add_argument("--no-report", action="store_true", help="skip report.html")
    c.add_argument("--embeddings", default=None, metavar="DIR_OR_FILE",
                   help="cluster vectors made elsewhere instead of INPUT: clip-retrieval's output folder "
                        "(img_emb/ + metadata/), a .npy (paths in <name>.paths.txt/.csv beside it) or a "
                        ".parquet (vector + path columns); --backbone names the model that made them")
    c.add_argument("--joint-embeddings", default=None, metavar="DIR_OR_FILE",
                   help="with --embeddings and a backbone whose noun space differs from its image "
                        "features (lite): the images' joint (noun-space) vectors, same layout")
    c.add_argument("--embedding-column", default=None, metavar="NAME",
                   help="with a .parquet: the vector column (default: embedding, emb or vector)")
    c.add_argument("--engine", choices=["local", "ray"], default=None,
                   help="embed in this process (default), or on Ray actors (pip install 'tacluster[ray]'; "
                        "RAY_ADDRESS selects the cluster); not with --embeddings")
    _common(c)


def _add_predict(sub) -> None:
    """``tacluster predict``."""
    p = sub.add_parser("predict", help="assign new images with a saved model",
                       description="Assign the images of INPUT to the clusters of a saved model (no refitting).")
    p.add_argument("model", help="the model/ directory of a run (or the run directory)")
    p.add_argument("input", nargs="*", default=None,
                   help="folder of images, one image, a .csv/.txt list of paths, or a quoted pattern such as "
                        "'new/*.jpg' (or use --embeddings)")
    p.add_argument("--out", required=True,
                   help="file to write (.csv or .parquet): path, cluster, confidence, cluster_name")
    p.add_argument("--embeddings", default=None, metavar="DIR_OR_FILE",
                   help="vectors made elsewhere by the model's backbone, instead of INPUT images "
                        "(the layouts of `cluster --embeddings`)")
    p.add_argument("--joint-embeddings", default=None, metavar="DIR_OR_FILE",
                   help="with --embeddings and the lite backbone: the images' joint (noun-space) vectors")
    p.add_argument("--embedding-column", default=None, metavar="NAME", help="the Parquet vector column")
    _common(p)


def _add_evaluate(sub) -> None:
    """``tacluster evaluate``."""
    e = sub.add_parser("evaluate", help="ACC / NMI / ARI of assignments against labels",
                       description="Score an assignments file (or a run directory) against ground truth.")
    e.add_argument("assignments", help="assignments.parquet/.csv, predictions CSV, or a run directory")
    e.add_argument("--labels", required=True, help="'parent-dir' (class = folder name) or a CSV with path,label")
    e.add_argument("--json", default=None, help="write the metrics here (default: next to the assignments)")
    e.add_argument("--confusion", default=None, help="confusion-matrix PNG (default: next to the assignments)")


def _add_backbones(sub) -> None:
    """``tacluster backbones [fetch NAME]``."""
    b = sub.add_parser(
        "backbones", help="list the backbones (short names, cached models) or pre-fetch one",
        description="Without arguments: list the short names and every image-text model in the "
                    "Hugging Face cache, with embedding width, size and whether the weights are present. "
                    "`backbones fetch NAME` downloads NAME into the cache and prints where it is: fetch "
                    "once, then copy the cache (HF_HUB_CACHE, default ~/.cache/huggingface/hub) to an "
                    "offline machine.",
    )
    b.add_argument("action", nargs="?", choices=["list", "fetch"], default="list", help="list (default) or fetch")
    b.add_argument("name", nargs="?", help="with fetch: clip, clip-l, siglip, siglip2, hf:<id>, openclip:<arch>/<tag>")
    b.add_argument("--cache-dir", default=None, help="Hugging Face cache to use (default: the standard one)")


def _add_report(sub) -> None:
    """``tacluster report``."""
    r = sub.add_parser("report", help="(re)build report.html of a run directory",
                       description="Rebuild DIR/report.html (thumbnails, 2-D map, settings) from the files "
                                   "of a finished run, e.g. one whose report was deleted. To change a cluster's "
                                   "name use `tacluster rename` (it updates the assignments, clusters.json and "
                                   "the model together; an edit of clusters.json alone would not reach them).")
    r.add_argument("dir", help="run directory")


def _add_edits(sub) -> None:
    """``tacluster export / rename / merge``."""
    x = sub.add_parser("export", help="one folder per cluster, for photo managers and file browsers; "
                                      "or the run's vectors (--embeddings)",
                       description="Make one folder per cluster under DIR (named by the cluster's name, made "
                                   "safe for file systems) holding a link to, or a copy of, each of its images; "
                                   "or, with --embeddings, write the run's own vectors as Parquet.")
    x.add_argument("run", help="run directory")
    where = x.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="DIR", help="new or empty folder to fill")
    where.add_argument("--embeddings", metavar="FILE.parquet",
                       help="instead: write the run's own vectors (path, cluster, cluster_name, embedding) as "
                            "Parquet, which `tacluster cluster --embeddings` reads back; lite runs also get "
                            "FILE.joint.parquet for --joint-embeddings")
    how = x.add_mutually_exclusive_group()
    how.add_argument("--link", dest="mode", action="store_const", const="link",
                     help="symbolic links to the original files (default)")
    how.add_argument("--copy", dest="mode", action="store_const", const="copy", help="copies of the files")
    x.set_defaults(mode="link")
    x.add_argument("--skip-duplicates", action="store_true",
                   help="of each group in the run's duplicates.csv export only the largest file")
    _run_model_options(x)  # --embeddings reads the vectors back through the run's backbone and cache

    n = sub.add_parser("rename", help="rename a cluster everywhere (assignments, model, report)",
                       description="Rename cluster CLUSTER (an id or its current name) to NAME in the assignments, "
                                   "clusters.json, the model (so predict uses it), run.json's history and the "
                                   "report, all at once.")
    n.add_argument("run", help="run directory")
    n.add_argument("cluster", help="cluster id or current name")
    n.add_argument("name", help="the new name")

    m = sub.add_parser("merge", help="merge clusters into the first one given",
                       description="Merge clusters B... into A (ids or names): assignments, clusters.json, the "
                                   "model (so predict assigns the merged cluster), run.json's history and the "
                                   "report are updated at once; later clusters are renumbered to keep ids 0..K-1.")
    m.add_argument("run", help="run directory")
    m.add_argument("clusters", nargs="+", metavar="CLUSTER", help="A B [...]: ids or names; merged into A")
    m.add_argument("--name", default=None, help="name of the merged cluster (default: A's name)")
    _add_lifecycle(sub)


def _add_lifecycle(sub) -> None:
    """``tacluster split / move / add``."""
    s = _edit_parser(sub, "split", "split a cluster into parts (the inverse of merge)",
                     "Re-cluster the members of CLUSTER (an id or its name) on the features the run "
                     "used and replace it by the parts, named from the nouns: assignments, "
                     "clusters.json, the model (predict then assigns the parts), run.json's history "
                     "and the report are updated at once. The largest part keeps the id; the others "
                     "get the next free ids.")
    s.add_argument("cluster", help="cluster id or current name")
    s.add_argument("--k", type=_k_value, default=2, metavar="N",
                   help="number of parts (default 2), or 'auto' to estimate it")

    v = _edit_parser(sub, "move", "move images into another cluster (a correction)",
                     "Put FILE... (paths as the run lists them) into cluster --to. Moved images are "
                     "marked (column 'moved'), shown in the report, and stay where they were put "
                     "through later rename, merge and add (a split of their cluster keeps them in one "
                     "of its parts).")
    v.add_argument("files", nargs="*", metavar="FILE", help="images of the run to move")
    v.add_argument("--to", required=True, metavar="CLUSTER", help="the cluster (id or name) they belong to")
    v.add_argument("--from-list", default=None, metavar="FILE",
                   help="also move the images listed in FILE (one path per line, or a .csv with a path column)")
    v.add_argument("--refit-centres", action="store_true",
                   help="centroid models: recompute each cluster's centre from its corrected members and "
                        "reassign the images nobody moved, so predict follows the correction")

    a = _edit_parser(sub, "add", "add new photos to a run without re-clustering",
                     "Embed PHOTOS (cached; files already in the run, by content, are skipped), "
                     "assign them with the run's model exactly as predict does, and append them to "
                     "the assignments, clusters.json and the report. Images that fit no cluster "
                     "well (far less similar to their cluster's centre than its members from the fit) "
                     "are marked new and listed; when many are, the command that re-fits is printed.")
    a.add_argument("input", nargs="?", default=None, metavar="PHOTOS",
                   help="folder of images or a .csv/.txt list of paths (or use --embeddings)")
    a.add_argument("--embeddings", default=None, metavar="DIR_OR_FILE",
                   help="vectors made elsewhere by the run's backbone (the layouts of `cluster --embeddings`)")
    a.add_argument("--joint-embeddings", default=None, metavar="DIR_OR_FILE",
                   help="with --embeddings and the lite backbone: the images' joint (noun-space) vectors")
    a.add_argument("--embedding-column", default=None, metavar="NAME", help="the Parquet vector column")
    a.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default 64)")


def _edit_parser(sub, name: str, summary: str, description: str):
    """The parser of an edit of a finished run, with its RUN argument and the backbone options."""
    p = sub.add_parser(name, help=summary, description=description)
    p.add_argument("run", help="run directory")
    _run_model_options(p)
    return p


def _run_model_options(p) -> None:
    """Options of the edits that load the run's backbone (split, move, add)."""
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"],
                   help="where the backbone runs (default: auto = cuda if available)")
    p.add_argument("--cache-dir", default=None,
                   help="embedding cache (default: the one the run used, recorded in run.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    p.add_argument("--offline", action="store_true", help="never download a model: read the caches only")


def _add_duplicates(sub) -> None:
    """``tacluster duplicates``."""
    from tacluster.run.duplicates import LOOK_THRESHOLD

    d = sub.add_parser(
        "duplicates", help="find byte-identical and near-identical images in a folder",
        description="Find the duplicates among the images of INPUT without clustering them: byte-identical "
                    "files (same content) and near-identical images (re-encoded, resized, slightly cropped "
                    "or recoloured copies of one photo: their grey thumbnails correlate >= the threshold once "
                    "a crop is undone). No model runs; the thumbnails are cached by content. Writes a CSV "
                    "with one row per image of each group (group, path, digest, size_bytes, kind, similarity; "
                    "largest file first) and prints a one-line summary. Every `cluster` run writes the same "
                    "file as DIR/duplicates.csv.")
    d.add_argument("input", help="folder of images (recursive) or a .csv/.txt list of paths")
    d.add_argument("--out", default="duplicates.csv", metavar="FILE",
                   help="CSV to write (default: duplicates.csv in the current folder)")
    d.add_argument("--threshold", default=None, metavar="T",
                   help="similarity in (0, 1] from which two images are near duplicates "
                        f"(default {LOOK_THRESHOLD}, measured on planted copies; docs/duplicates.md)")
    d.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="CPU threads for comparing the thumbnails (default: as for `cluster`)")
    d.add_argument("--cache-dir", default=None,
                   help="thumbnail cache (default: $TACLUSTER_CACHE or ~/.cache/tacluster)")
    d.add_argument("--quiet", action="store_true", help="no progress or summary")


def _add_serve(sub) -> None:
    """``tacluster serve``."""
    s = sub.add_parser("serve", help="review and fix a run in the browser (rename, merge, split, move, outliers, undo, export)",
                       description="Serve RUN on 127.0.0.1 for review: clusters by size with names, thumbnails, "
                                   "confidence, outliers and the map, with actions (rename, merge selected, split, "
                                   "move selected images, mark outliers, undo the last edit, export) that run the same journaled edits as "
                                   "the commands. Only the printed link (it holds a random token) opens it.")
    s.add_argument("run", help="run directory")
    s.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: any free port)")
    s.add_argument("--no-browser", dest="browser", action="store_false",
                   help="only print the link; do not open a browser")


def _add_selfcheck(sub) -> None:
    """``tacluster selfcheck``."""
    s = sub.add_parser("selfcheck", help="check that a real vision-language backbone works here",
                       description="Embed the 300 bundled CIFAR-10 images (or --images), check zero-shot accuracy "
                                   "with the class names (CLIP ViT-B/32: about 85-89 %%; below --min-zero-shot "
                                   "fails) and that TAC beats k-means on them. Prints pass/fail; exit 0 / 1.")
    s.add_argument("--backbone", default="clip", help="the model to check (default clip; any --backbone name)")
    s.add_argument("--images", default=None, metavar="DIR",
                   help="a folder <class>/<image> (default: examples/cifar10-mini)")
    s.add_argument("--min-zero-shot", type=float, default=70.0, metavar="PCT",
                   help="zero-shot accuracy in percent below which the check fails (default 70)")
    s.add_argument("--vocabulary", default=None, help="TAC's nouns, one per line (default: WordNet nouns)")
    s.add_argument("--noun-bank", default="auto", choices=["auto", "full", "candidates"],
                   help="as for `tacluster cluster`")
    s.add_argument("--seed", type=_seed, default=0, help="random seed of TAC and k-means (default 0)")
    _common(s)


def _cmd_selfcheck(a) -> int:
    from tacluster.run.selfcheck import selfcheck

    result = selfcheck(a.backbone, images=a.images, device=a.device, batch_size=a.batch_size or 64,
                       cache_dir=a.cache_dir, offline=a.offline or None, vocabulary=a.vocabulary,
                       noun_bank=a.noun_bank, min_zero_shot=a.min_zero_shot, seed=a.seed, progress=not a.quiet)
    print("\n".join(result.lines()))
    return 0 if result.passed else 1


def _k_value(text: str):
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an integer nor 'auto'") from None


def _one_input(given: list[str] | None) -> str | None:
    """INPUT is one folder, list, image or quoted pattern; many words are what a shell makes of
    an unquoted pattern."""
    from tacluster.errors import InputError

    if not given:
        return None
    if len(given) > 1:
        raise InputError(f"got {len(given)} inputs ({given[0]!r}, {given[1]!r}, ...): give one folder or list "
                         "file, or quote a pattern so the shell does not expand it, e.g. 'photos/*.jpg'")
    return given[0]


def _cmd_cluster(a) -> int:
    from tacluster.run.workflows import cluster_images

    from tacluster.errors import InputError

    a.input = _one_input(a.input)
    if a.method == "tac" and a.backbone.strip().lower() == "lite" and not a.quiet:
        print("note: with the lite backbone --method tac scores far below the default (15-Scene: 49 vs 86 ACC); "
              "TAC is for a vision-language backbone such as --backbone clip", file=sys.stderr)
    if (a.input is None) == (a.embeddings is None):
        raise InputError("give INPUT (a folder or list of images) or --embeddings DIR_OR_FILE, not both"
                         if a.input is not None else
                         "nothing to cluster: give INPUT (a folder or list of images) or --embeddings DIR_OR_FILE")
    run = cluster_images(
        a.input, a.out, a.k, backbone=a.backbone, method=a.method, seed=a.seed, device=a.device,
        embeddings=a.embeddings, joint_embeddings=a.joint_embeddings, embedding_column=a.embedding_column,
        batch_size=a.batch_size, cache_dir=a.cache_dir, vocabulary=a.vocabulary, overwrite=a.overwrite,
        noun_bank=a.noun_bank, ranking_precision=a.ranking_precision, image_precision=a.image_precision,
        progress=not a.quiet,
        report=not a.no_report, engine=a.engine, offline=a.offline or None,
        estimator_params={"consensus": a.consensus} if a.consensus else None,
        command="tacluster " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
    )
    for message in run.warnings:  # shown even with --quiet, as errors are: the result is not what was asked
        print(f"tacluster: warning: {message}", file=sys.stderr)
    if not a.quiet:
        _print_cluster_summary(a, run)
    return 0


def _print_cluster_summary(a: argparse.Namespace, run: ClusterRun) -> None:
    """What ``tacluster cluster`` says of a finished run: counts, skips, vocabulary, duplicates,
    every cluster by size with its name, and where the outputs are."""
    k = len(run.names)
    sizes = {i: int((run.labels == i).sum()) for i in range(k)}
    notes = _cluster_notes(a, run, k)
    print(f"clustered {len(run.paths)} {'rows' if a.embeddings else 'images'} into {k} clusters in {run.timings_s.get('total', 0):.1f} s"
          + (f" ({'; '.join(notes)})" if notes else ""))
    if run.skipped:
        from tacluster.run.workflows import top_reasons

        print(f"skipped: {top_reasons(run.skipped)} (each listed in {Path(a.out) / 'skipped.csv'})")
    if run.vocabulary_use is not None and run.vocabulary_use[2]:
        usable, total, unknown = run.vocabulary_use
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        print(f"{usable} of {total} vocabulary words usable with backbone {a.backbone!r}; "
              f"not known to it: {shown} (all listed in run.json)")
    if run.duplicates:
        print(f"{run.duplicates} duplicate entr{'y' if run.duplicates == 1 else 'ies'} in the input list "
              "(a file listed again) clustered once")
    for i in sorted(sizes, key=lambda i: -sizes[i]):
        print(f"  {i:>3}  {sizes[i]:>6}  {run.names[i]}")
    if run.report:
        print(f"report: {run.report}")
    print(f"outputs: {Path(a.out)}")


def _cluster_notes(a: argparse.Namespace, run: ClusterRun, k: int) -> list[str]:
    """The summary line's notes: how K was chosen (``--k auto``, from run.json), what was skipped or left out."""
    notes = []
    if a.k == "auto":
        try:
            auto = json.loads((Path(a.out) / "run.json").read_text())["auto_k"]
            cand = auto["candidates"]
            notes.append(f"K chosen automatically from {min(cand)}..{max(cand)}")
            lo, hi = auto.get("plateau") or (k, k)
            if lo != hi:  # how sure: the ks scoring about as well, and which end was taken (issue 30)
                end = {"near": "; the smallest taken (strong eigengap)", "far": "; the largest taken"}
                notes.append(f"k = {lo}..{hi} score within {100 * auto.get('tolerance', 0.02):g} % of the best"
                             + end.get(auto.get("plateau_end"), ""))
        except (OSError, ValueError, KeyError, TypeError):
            notes.append("K chosen automatically")
    if run.skipped:
        from tacluster.embed.reader import is_folder_left_out

        folders = sum(is_folder_left_out(p, r) for p, r in run.skipped)
        notes += [f"{n} {what}" for n, what in ((len(run.skipped) - folders, "skipped"),
                                                (folders, "folder(s) left out")) if n]
    return notes


def _cmd_predict(a) -> int:
    from tacluster.run.workflows import predict_images

    a.input = _one_input(a.input)
    pred = predict_images(a.model, a.input, a.out, device=a.device, batch_size=a.batch_size,
                          cache_dir=a.cache_dir, progress=not a.quiet, offline=a.offline or None,
                          embeddings=a.embeddings, joint_embeddings=a.joint_embeddings,
                          embedding_column=a.embedding_column)
    if not a.quiet:
        print(f"assigned {len(pred.paths)} {'rows' if a.embeddings else 'images'} ({len(pred.skipped)} skipped) -> {a.out}")
        if pred.skipped:
            from tacluster.run.workflows import top_reasons

            print(f"skipped: {top_reasons(pred.skipped)} (each listed in {a.out} with cluster_name "
                  "'skipped: <reason>' and no cluster)")
        sizes: dict[int, int] = {}
        name_of: dict[int, str] = {}
        for c, n in zip(pred.labels.tolist(), pred.names):
            sizes[c] = sizes.get(c, 0) + 1
            name_of[c] = n
        for i in sorted(sizes, key=lambda i: (-sizes[i], i)):
            print(f"  {i:>3}  {sizes[i]:>6}  {name_of[i]}")
    return 0


def _cmd_evaluate(a) -> int:
    from tacluster.run.workflows import evaluate_assignments

    src = Path(a.assignments)
    base = src if src.is_dir() else src.parent
    confusion = a.confusion or str(base / "confusion.png")
    result = evaluate_assignments(a.assignments, a.labels, confusion_png=confusion)
    json_path = Path(a.json) if a.json else base / "evaluation.json"
    json_path.write_text(json.dumps(result, indent=2))
    for line in result.get("warnings", []):
        print(f"tacluster: warning: {line}", file=sys.stderr)
    print(f"{'metric':<8}{'value':>8}")
    for k in ("acc", "nmi", "ari"):
        print(f"{k.upper():<8}{result[k]:>8.2f}")
    print(f"images  {result['n']:>8}")
    print(f"metrics: {json_path}\nconfusion matrix: {confusion}")
    return 0


def _cmd_backbones(a) -> int:
    from tacluster.embed.backbones.listing import fetch_backbone, list_backbones
    from tacluster.errors import InputError

    cache = Path(a.cache_dir) if a.cache_dir else None
    if a.action == "fetch":
        if not a.name:
            raise InputError("backbones fetch needs a NAME, e.g. `tacluster backbones fetch clip`")
        if a.name.strip().lower() == "lite":
            print("lite: ships inside the tacluster package; nothing to fetch")
            return 0
        where = fetch_backbone(a.name, cache_dir=cache)
        print(f"{a.name}: fetched into {where}")
        return 0
    if a.name:
        raise InputError(f"unexpected argument {a.name!r}: use `tacluster backbones` or `tacluster backbones fetch NAME`")
    rows = list_backbones(cache)
    wn = max(len(r.name) for r in rows)
    wl = max(len("licence"), *(len(r.licence) for r in rows))
    print(f"{'name':<{wn}} {'dim':>5} {'size':>9}  {'weights':<11} {'licence':<{wl}} model")
    for r in rows:
        size = f"{r.size_mb:,.0f} MB" if r.size_mb is not None else "?"
        state = "present" if r.present else "not fetched"
        print(f"{r.name:<{wn}} {r.dim or '?':>5} {size:>9}  {state:<11} {r.licence:<{wl}} {r.model}")
    print("fetch one with `tacluster backbones fetch NAME`; `--backbone NAME` fetches on first use")
    return 0


def _cmd_report(a) -> int:
    from tacluster.run.rundir import recover_pending
    from tacluster.report.html import build_report

    if Path(a.dir).is_dir():
        recover_pending(Path(a.dir))  # an interrupted rename/merge is finished first
    print(f"report: {build_report(a.dir)}")
    return 0


def _cmd_export(a) -> int:
    from tacluster.errors import InputError
    from tacluster.run.edit import export_run

    if a.embeddings:
        from tacluster.run.features import export_embeddings

        if a.skip_duplicates or a.mode != "link":
            raise InputError("--skip-duplicates and --copy are for --to (folders of images); "
                             "--embeddings writes every row of the run")
        files = export_embeddings(a.run, a.embeddings, device=a.device, cache_dir=a.cache_dir, offline=a.offline,
                                  progress=not a.quiet)
        if not a.quiet:
            print(f"wrote {len(files)} file(s): " + ", ".join(str(f) for f in files))
            joint = f" --joint-embeddings {files[1]}" if len(files) > 1 else ""
            print(f"re-cluster them with: tacluster cluster --embeddings {files[0]}{joint} --k K --out DIR")
        return 0
    if a.device != "auto" or a.cache_dir is not None or a.offline:
        raise InputError("--device, --cache-dir and --offline are for --embeddings (reading the run's vectors); "
                         "--to only links or copies the image files")
    done = export_run(a.run, a.to, mode=a.mode, skip_duplicates=a.skip_duplicates)
    if a.quiet:
        return 0
    print(f"exported {sum(done.counts.values())} images into {len(done.counts)} folders under {a.to} "
          f"({'links' if a.mode == 'link' else 'copies'}"
          + ("; of each group in duplicates.csv only the largest file" if a.skip_duplicates else "") + ")")
    for folder, n in done.counts.items():
        print(f"  {n:>6}  {folder}")
    if done.missing:
        shown = ", ".join(repr(p) for p in done.missing[:3]) + (" ..." if len(done.missing) > 3 else "")
        print(f"not exported: {len(done.missing)} image(s) of the run are not files here: {shown}")
    return 0


def _cmd_rename(a) -> int:
    from tacluster.run.edit import rename_cluster

    cid, old, new = rename_cluster(a.run, a.cluster, a.name)
    print(f"cluster {cid}: {old!r} -> {new!r} (assignments, clusters.json, model, report updated)")
    return 0


def _cmd_merge(a) -> int:
    from tacluster.run.edit import merge_clusters

    new_id, ids = merge_clusters(a.run, a.clusters, name=a.name)
    print(f"merged clusters {', '.join(map(str, ids))} into cluster {new_id} "
          "(assignments, clusters.json, model, report updated; later ids renumbered)")
    return 0


def _cmd_split(a) -> int:
    from tacluster.run.split import split_cluster

    res = split_cluster(a.run, a.cluster, a.k, device=a.device, cache_dir=a.cache_dir,
                        offline=a.offline or None, progress=not a.quiet)
    if a.quiet:
        return 0
    print(f"split cluster {res.cluster} into {len(res.ids)} (assignments, clusters.json, model, report updated):")
    for cid, name, size in zip(res.ids, res.names, res.sizes):
        print(f"  {cid:>3}  {size:>6}  {name}")
    return 0


def _cmd_move(a) -> int:
    from tacluster.run.move import move_images, read_file_list

    from tacluster.errors import InputError

    if not a.refit_centres and (a.device != "auto" or a.cache_dir is not None or a.offline):
        raise InputError("--device, --cache-dir and --offline load the backbone for --refit-centres; "
                         "a plain move needs none of them")
    files = list(a.files) + (read_file_list(a.from_list) if a.from_list else [])
    res = move_images(a.run, files, a.to, refit_centres=a.refit_centres, device=a.device, cache_dir=a.cache_dir,
                      offline=a.offline or None, progress=not a.quiet)
    if a.quiet:
        return 0
    print(f"moved {res.moved} image(s) into cluster {res.cluster}"
          + (f" ({res.already_there} were there already)" if res.already_there else "")
          + (f"; new centres reassigned {res.reassigned} other image(s)" if a.refit_centres else ""))
    return 0


def _cmd_add(a) -> int:
    from tacluster.errors import InputError
    from tacluster.run.add import add_images

    if a.input is None and a.embeddings is None:
        raise InputError("nothing to add: give PHOTOS (a folder or list of images) or --embeddings DIR_OR_FILE")
    if a.embeddings is not None and a.batch_size is not None:
        raise InputError("--batch-size sets how many images are embedded at once; --embeddings reads vectors "
                         "made elsewhere, so drop it")
    res = add_images(a.run, a.input, embeddings=a.embeddings, joint_embeddings=a.joint_embeddings,
                     embedding_column=a.embedding_column, device=a.device, batch_size=a.batch_size or 64,
                     cache_dir=a.cache_dir, offline=a.offline or None, progress=not a.quiet)
    if a.quiet:
        return 0
    n_new = int(res.new.sum())
    print(f"added {len(res.paths)} image(s) to {a.run}; {res.already_in_run} already in the run, "
          f"{len(res.skipped)} skipped; {n_new} fit no cluster well (marked new)")
    sizes: dict[int, int] = {}
    for c in res.labels.tolist():
        sizes[c] = sizes.get(c, 0) + 1
    for c in sorted(sizes, key=lambda c: (-sizes[c], c)):
        print(f"  {c:>3}  {sizes[c]:>6}  {res.names[res.labels.tolist().index(c)]}")
    shown = [p for p, w in zip(res.paths, res.new) if w]
    for p in shown[:20]:
        print(f"  new: {p}")
    if len(shown) > 20:
        print(f"  ... and {len(shown) - 20} more (new=true in assignments.csv)")
    if res.refit_command:
        print(f"{n_new} of the {len(res.paths)} added images fit no cluster well; to re-cluster everything:\n"
              f"  {res.refit_command}")
    return 0


def _cmd_duplicates(a) -> int:
    from tacluster.run.workflows import folder_duplicates

    found = folder_duplicates(a.input, a.out, threshold=a.threshold, cache_dir=a.cache_dir, progress=not a.quiet)
    if not a.quiet:
        s = found.summary()
        print(f"{s['groups']} duplicate group(s) holding {s['images']} of {len(found.paths)} images "
              f"({s['identical_images']} of them byte-identical to another), similarity >= {found.threshold:g} -> {a.out}"
              + (f"; {len(found.skipped)} file(s) skipped" if found.skipped else ""))
    return 0


def _cmd_serve(a) -> int:
    from tacluster.serve import serve_run

    serve_run(a.run, a.port, open_browser=a.browser)
    return 0


def _rows_cached() -> int:
    """Embeddings this process has cached so far (0 before the cache was ever used)."""
    cache_mod = sys.modules.get("tacluster.embed.cache")
    return cache_mod.rows_written_this_process() if cache_mod is not None else 0


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if not args.command:
        ap.print_help()
        return 2
    from tacluster._threads import configure_process
    from tacluster.errors import TaclusterError

    configure_process(getattr(args, "threads", None))  # before torch or faiss load
    handler = {"cluster": _cmd_cluster, "predict": _cmd_predict,
               "evaluate": _cmd_evaluate, "report": _cmd_report,
               "backbones": _cmd_backbones, "export": _cmd_export, "rename": _cmd_rename, "merge": _cmd_merge,
               "split": _cmd_split, "move": _cmd_move, "add": _cmd_add,
               "duplicates": _cmd_duplicates, "serve": _cmd_serve,
               "selfcheck": _cmd_selfcheck}[args.command]
    cached_before = _rows_cached()
    try:
        return handler(args)
    except TaclusterError as exc:
        if args.debug:
            raise
        print(f"tacluster: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        n = _rows_cached() - cached_before
        if n:
            print(f"tacluster: interrupted; the {n} images embedded so far are cached and a rerun resumes "
                  "from there", file=sys.stderr)
        else:
            print("tacluster: interrupted; nothing was cached by this run", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader closed the pipe (`tacluster evaluate ... | head -1`): stop quietly, as Unix tools do
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except OSError as exc:
        if args.debug:
            raise
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        hint = (" (free some disk space, or choose another --out or --cache-dir)"
                if exc.errno == errno.ENOSPC else "")
        print(f"tacluster: error: {exc.strerror or exc}{where}{hint}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a raw traceback
        if args.debug:
            raise
        print(f"tacluster: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
