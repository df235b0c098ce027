"""Build the bundled example examples/cifar10-mini/ from the shared CIFAR-10 tarball.

    python scripts/make_example.py ../shared/data/cifar10-train.tar.gz

Takes the last ``--per-class`` files of each class (sorted by name) so the
example does not overlap the first files that tests and benchmarks take.
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tarball")
    ap.add_argument("--out", default="examples/cifar10-mini")
    ap.add_argument("--per-class", type=int, default=30)
    a = ap.parse_args()
    out = Path(a.out)
    with tarfile.open(a.tarball) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        by_class: dict[str, list] = {}
        for m in members:
            by_class.setdefault(Path(m.name).parent.name, []).append(m)
        for cls, ms in sorted(by_class.items()):
            (out / cls).mkdir(parents=True, exist_ok=True)
            for m in ms[-a.per_class:]:
                data = tar.extractfile(m).read()
                (out / cls / Path(m.name).name).write_bytes(data)
    print(f"wrote {sum(1 for _ in out.rglob('*.jpg'))} images to {out}")


if __name__ == "__main__":
    main()
