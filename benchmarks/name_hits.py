"""Name hit rate of the default clustering on the nine domains (issue 19's definition).

    python benchmarks/name_hits.py --seeds 3
    python benchmarks/name_hits.py --seeds 3 --naming conse

``--naming hierarchy`` (default) names clusters as ``tacluster cluster``
does (the ``lite`` hierarchy noun side: 3,253 nouns with an ImageNet class
below them; z-score names, top nouns with two broader nouns from the class
probabilities). ``--naming hierarchy-z`` leaves the broader nouns out (the
z-score lists alone). ``--naming conse`` keeps the same clusters but names them in the
MiniLM (ConSE) space of ``lite:lite0/conse``, which embeds every WordNet noun:
an image is the probability-weighted mean of the MiniLM embeddings of its top
5 ImageNet class names (computed from the cached ``probs``, no re-embedding),
a noun is MiniLM of ``"a photo of a {noun}."``; same z-score naming. Needs
``pip install -e ".[conse]"``; the 117,798-noun bank takes ~8 min once on 2
cores, then is cached.

A cluster *hits* when its majority class covers >= 50 % of it and its name,
or one of its next three nouns, is that class's WordNet synset (a synonym),
a hyponym of it (any depth), or a hypernym of it within two steps. The hit
rate of a set is hits / K, averaged over seeds. Clusters: ``--method auto``
with ``lite`` fitted on each set's fit part (``benchmarks/domains.py``'s
split and data), named by :func:`tacluster.evaluate.naming.name_clusters` exactly as
``tacluster cluster`` names them.

Class -> synset: ``CLASS_NOUNS`` below, by hand, the first (most frequent)
WordNet 3.0 noun sense of the lemma unless ``lemma#k`` says sense k (each
checked against its gloss); a class may list several lemmas (any of them
counts). The name side is lenient: any
noun sense of the name counts. UIUC textures are numbered in the archive;
their names follow the database's published order (T01-T03 bark, T04-T06
wood, T07 water, ...; check against the source before relying on them).
WordNet 3.0 has no Galanthus: its only "snowdrop" is the wood anemone.
WordNet's relations come from the Debian ``wordnet-base`` files
(``/usr/share/wordnet``, or ``--wordnet``); the script stops with a message
when they are absent.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import markdown_table, write_json  # noqa: E402
from domains import SETS, SHARED, load_domain  # noqa: E402
from quality import default_estimator  # noqa: E402

from tacluster.errors import InputError  # noqa: E402

_T = ["bark", "bark", "bark", "wood", "wood", "wood", "water", "granite", "marble", "floor", "floor", "pebble",
      "wall", "brick", "brick", "glass", "glass", "carpet", "carpet", "upholstery", "wallpaper", "fur",
      "knit", "corduroy", "plaid"]
_FLOWERS = ["daffodil", "snowdrop", "lily of the valley", "bluebell", "crocus", "iris", "tiger lily",
            "tulip", "fritillary", "sunflower", "daisy", "coltsfoot#2", "dandelion", "cowslip", "buttercup",
            "windflower", "pansy"]
#: set -> class folder -> WordNet lemmas (``lemma#k`` = sense k; default sense 1)
CLASS_NOUNS: dict[str, dict[str, list[str]]] = {
    "cifar10-train": {"airplane": ["airplane"], "automobile": ["car"], "bird": ["bird"], "cat": ["cat"],
                      "deer": ["deer"], "dog": ["dog"], "frog": ["frog"], "horse": ["horse"], "ship": ["ship"],
                      "truck": ["truck"]},
    "scene15-train": {"bedroom": ["bedroom"], "coast": ["coast"], "forest": ["forest"], "highway": ["highway"],
                      "industrial": ["industrial park"], "insidecity": ["city"], "kitchen": ["kitchen"],
                      "livingroom": ["living room"], "mountain": ["mountain"], "office": ["office"],
                      "opencountry": ["countryside", "open"], "store": ["store"], "street": ["street"],
                      "suburb": ["suburb"], "tallbuilding": ["skyscraper"]},
    "uiuc-texture": {f"T{i + 1:02d}": [w] for i, w in enumerate(_T)},
    "flowers17": {f"c{i + 1}": [w] for i, w in enumerate(_FLOWERS)},
    "rsscn7-aerial": {"field": ["field"], "forest": ["forest"], "grass": ["grass"], "industry": ["industrial park"],
                      "parking": ["parking lot"], "resident": ["residential district"],
                      "riverlake": ["river", "lake"]},
    "pacs-sketch": {"dog": ["dog"], "elephant": ["elephant"], "giraffe": ["giraffe"], "guitar": ["guitar"],
                    "horse": ["horse"], "house": ["house"], "person": ["person"]},
    "pbc-bloodcells": {"basophil": ["basophil"], "eosinophil": ["eosinophil"], "erythroblast": ["erythroblast"],
                       "ig": ["granulocyte"], "lymphocyte": ["lymphocyte"], "monocyte": ["monocyte"],
                       "neutrophil": ["neutrophil"], "platelet": ["platelet"]},
    "signdigits": {str(d): [w] for d, w in enumerate(
        ["zero#2", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])},
    "clothing": {"dress": ["dress"], "hat": ["hat"], "longsleeve": ["shirt"], "outwear": ["outerwear"],
                 "pants": ["trouser"], "shirt": ["shirt"], "shoes": ["shoe"], "shorts": ["short pants"],
                 "skirt": ["skirt"], "t-shirt": ["t-shirt"]},
}
PHOTO_SETS = ("scene15-train", "flowers17", "rsscn7-aerial", "clothing")


class WordNet:
    """Noun synsets, their hypernym / hyponym links and the lemma index (WordNet 3.0 files)."""

    def __init__(self, folder: Path):
        data, index = folder / "data.noun", folder / "index.noun"
        if not data.is_file() or not index.is_file():
            raise InputError(f"no WordNet noun files in {str(folder)!r} (apt-get install wordnet-base)")
        self.up: dict[int, list[int]] = {}
        self.down: dict[int, list[int]] = {}
        for line in data.read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            f = line.split(" | ")[0].split()
            off, n_words = int(f[0]), int(f[3], 16)
            i = 4 + 2 * n_words
            n_ptr = int(f[i])
            for j in range(n_ptr):
                sym, target, pos = f[i + 1 + 4 * j], int(f[i + 2 + 4 * j]), f[i + 3 + 4 * j]
                if pos != "n":
                    continue
                if sym in ("@", "@i"):
                    self.up.setdefault(off, []).append(target)
                elif sym in ("~", "~i"):
                    self.down.setdefault(off, []).append(target)
        self.senses: dict[str, list[int]] = {}
        for line in index.read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            f = line.split()
            n_ptr = int(f[3])
            self.senses[f[0]] = [int(x) for x in f[6 + n_ptr:]]

    def synsets(self, word: str) -> list[int]:
        return self.senses.get(word.strip().lower().replace(" ", "_"), [])

    def synset(self, spec: str) -> int:
        lemma, _, k = spec.partition("#")
        senses = self.synsets(lemma)
        if not senses:
            raise InputError(f"{lemma!r} is not a WordNet noun")
        return senses[int(k) - 1 if k else 0]

    def related(self, cls: int) -> set[int]:
        """The class synset, all its hyponyms, and its hypernyms within two steps."""
        out, todo = {cls}, [cls]
        while todo:
            for child in self.down.get(todo.pop(), []):
                if child not in out:
                    out.add(child)
                    todo.append(child)
        level = [cls]
        for _ in range(2):
            level = [p for s in level for p in self.up.get(s, [])]
            out.update(level)
        return out


def conse_joint(probs: np.ndarray, class_text: np.ndarray, top_k: int = 5) -> np.ndarray:
    """ConSE vectors from class probabilities (what ``lite:lite0/conse`` computes as ``joint``)."""
    p = np.asarray(probs, dtype=np.float64)
    top = np.argsort(-p, axis=1)[:, :top_k]
    w = np.take_along_axis(p, top, axis=1)
    x = np.einsum("nk,nkd->nd", w, class_text[top])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def hit_rate(wn: WordNet, spec: dict[str, list[str]], classes: list[str], y: np.ndarray, labels: np.ndarray,
             names: list[str], top_nouns: list[list[tuple[str, float]]]) -> tuple[float, list[dict]]:
    related = {c: set().union(*(wn.related(wn.synset(s)) for s in spec[c])) for c in classes}
    rows, hits = [], 0
    for c in range(len(names)):
        members = y[labels == c]
        if members.size == 0:
            continue
        counts = np.bincount(members, minlength=len(classes))
        major = int(counts.argmax())
        share = counts[major] / members.size
        words = [names[c]] + [w for w, _ in top_nouns[c] if w != names[c]][:3]
        hit = share >= 0.5 and any(set(wn.synsets(w)) & related[classes[major]] for w in words)
        hits += hit
        rows.append({"cluster": c, "class": classes[major], "share": round(float(share), 3), "words": words,
                     "hit": bool(hit)})
    return hits / len(names), rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sets", default=",".join(s for s, _ in SETS))
    ap.add_argument("--naming", default="hierarchy", choices=["hierarchy", "hierarchy-z", "conse"],
                    help="noun side used to name the (default) clusters")
    ap.add_argument("--wordnet", default="/usr/share/wordnet", help="folder of WordNet 3.0's data.noun / index.noun")
    ap.add_argument("--shared", default=str(SHARED))
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "tacluster" / "datasets"))
    ap.add_argument("--out", default="benchmarks/results/name_hits")
    args = ap.parse_args(argv)

    from tacluster.embed.backbones import load_backbone
    from tacluster.evaluate.naming import name_clusters
    from tacluster.nouns.bank import cached_noun_bank, default_cache_dir
    from tacluster.nouns.vocabulary import load_vocabulary

    wn = WordNet(Path(args.wordnet))
    cache = default_cache_dir()
    bb = load_backbone("lite", device="cpu")
    if args.naming == "conse":
        cbb = load_backbone("lite:lite0/conse", device="cpu")
        bank = cached_noun_bank(cbb, load_vocabulary(None), cache_dir=cache, progress=False)
        class_text = cbb._class_embeddings().double().numpy()
    else:
        bank = cached_noun_bank(bb, load_vocabulary(None), cache_dir=cache, progress=False)
    limits = dict(SETS)
    results, table_rows = {}, []
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        data = load_domain(name, limits[name], bb, cache, Path(args.work).expanduser(), Path(args.shared))
        classes = sorted(CLASS_NOUNS[name])
        rates, details = [], []
        for seed in range(args.seeds):
            est = default_estimator("lite", data["k"], seed, "cpu").fit(data["u_fit"])
            joint = data["j_fit"] if args.naming != "conse" else conse_joint(data["p_fit"], class_text)
            probs = data["p_fit"] if args.naming == "hierarchy" else None  # hierarchy-z: no broader nouns
            named = name_clusters(joint, est.labels_, data["k"], bank.embeddings, bank.words, class_probs=probs)
            rate, rows = hit_rate(wn, CLASS_NOUNS[name], classes, data["y_fit"], est.labels_, named.names,
                                  named.top_nouns)
            rates.append(rate)
            details.append(rows)
        results[name] = {"hit_rate": statistics.fmean(rates), "per_seed": rates, "clusters": details}
        example = ", ".join(f"{r['class']} → {r['words'][0]}" for r in details[0][:4])
        table_rows.append([name, data["k"], f"{100 * statistics.fmean(rates):.0f} %", example])
        print(f"{name:15s} hit rate {100 * statistics.fmean(rates):.0f} %", flush=True)
    photo = [results[s]["hit_rate"] for s in PHOTO_SETS if s in results]
    table_rows.append(["**photo sets (scene, flowers, aerial, clothing)**", "",
                       f"{100 * statistics.fmean(photo):.0f} %" if photo else "", ""])
    md = (f"### Name hit rate of `--method auto` clusters (fit parts, {args.seeds} seeds), "
          f"names from the {args.naming} noun side\n\n"
          + markdown_table(["set", "K", "hit rate", "seed 0: majority class → name (first 4 clusters)"], table_rows)
          + "\n")
    print("\n" + md)
    payload = {"settings": vars(args), "results": results, "markdown": md}
    out = Path(args.out)
    write_json(out / "name_hits.json", payload)
    (out / "name_hits.md").write_text(md)
    return payload


if __name__ == "__main__":
    main()
