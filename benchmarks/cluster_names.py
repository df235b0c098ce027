"""Are the cluster names recognisably the classes? (tacluster's naming on labelled images)

    python benchmarks/cluster_names.py --data ../shared/data/cifar10-train.tar.gz --k 10 --limit-per-class 300

Runs ``tacluster cluster`` (the pipeline, default settings) on an ImageFolder
directory or tarball and prints, per cluster: size, name, the next nouns, and
the majority class with its share. Writes the table (markdown) and JSON.
Embeddings come from the same cache as ``benchmarks/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import markdown_table, write_json  # noqa: E402
from quality import dataset_root, list_labelled  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ImageFolder directory or .tar.gz of one")
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--limit-per-class", type=int, default=None)
    ap.add_argument("--backbone", default="lite")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "tacluster" / "datasets"))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="benchmarks/results/cluster_names.json")
    args = ap.parse_args(argv)

    from tacluster.run.workflows import cluster_images

    root = dataset_root(Path(args.data), Path(args.work).expanduser())
    paths, labels = list_labelled(root, args.limit_per_class)
    label_of = dict(zip(paths, labels))
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "images.txt"
        listing.write_text("\n".join(paths))
        run = cluster_images(listing, Path(tmp) / "run", args.k, backbone=args.backbone, seed=args.seed,
                             cache_dir=args.cache_dir, progress=False, report=False)
        clusters = json.loads((Path(tmp) / "run" / "clusters.json").read_text())["clusters"]
    rows = []
    for c in sorted(clusters, key=lambda c: -c["size"]):
        members = [label_of[p] for p, lab in zip(run.paths, run.labels) if lab == c["id"]]
        cls, count = Counter(members).most_common(1)[0] if members else ("-", 0)
        rows.append([c["name"], ", ".join(n["noun"] for n in c["top_nouns"][1:4]), cls,
                     f"{100 * count / max(len(members), 1):.0f} %", c["size"]])
    table = markdown_table(["cluster name", "next nouns", "majority class", "share", "size"], rows)
    print(table)
    payload = {"args": vars(args), "rows": rows, "table": table}
    print(f"wrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
