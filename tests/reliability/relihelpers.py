"""Shared helpers of the reliability suite: a cheap deterministic backbone, the
fuzz corpus (generated, never committed) and a CLI runner.

The backbone is registered as ``relitiny`` (and ``relinan``, a wrapper that
returns NaN for all-white images) through :func:`tacluster.embed.backbones.register_backbone`.
Subprocesses get the same registration through a ``sitecustomize.py`` written
by :func:`write_sitecustomize`, so the real ``python -m tacluster`` entry point
runs unmodified.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import io
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from tacluster.embed.backbones import register_backbone
from tacluster.embed.backbones.base import Backbone, NounBank

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLE = REPO / "examples" / "cifar10-mini"
SIDE = 16
D_IMAGE, D_JOINT = 12, 10

#: Changing this changes the tiny backbone's weights *and* fingerprint: the
#: "same backbone name, other version" case of a saved model.
WEIGHTS_VERSION = 1


class TinyProjBackbone(Backbone):
    """Deterministic test backbone: fixed random projections of a 16x16 RGB
    downsample (float64 maths, so a row does not depend on its batch).

    ``RELI_BATCH_SLEEP`` (seconds, env) makes each batch slow, so a test can
    kill a process in the middle of embedding; ``RELI_LOG`` (a file) records
    the size of every batch embedded.
    """

    outputs = ("image", "joint")

    def __init__(self, version: int = 1, name: str = "relitiny"):
        self.name = name
        self.version = version
        rng = np.random.default_rng(1000 + version)
        self.w_image = rng.standard_normal((3 * SIDE * SIDE, D_IMAGE))
        self.w_joint = rng.standard_normal((3 * SIDE * SIDE, D_JOINT))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"relitiny-v{self.version}".encode()).hexdigest()[:16]

    def preprocess(self, image):
        import torch

        small = image.resize((SIDE, SIDE), Image.BILINEAR)
        return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def encode_images(self, batch):
        delay = float(os.environ.get("RELI_BATCH_SLEEP", "0") or 0)
        if delay:
            time.sleep(delay)
        if os.environ.get("RELI_LOG"):  # images embedded, one line per batch (counts lost work)
            with open(os.environ["RELI_LOG"], "a") as fh:
                fh.write(f"{batch.shape[0]}\n")
        x = batch.detach().cpu().numpy().astype(np.float64).reshape(batch.shape[0], -1) - 0.5
        out = {}
        for name, w in (("image", self.w_image), ("joint", self.w_joint)):
            y = x @ w
            y /= np.linalg.norm(y, axis=1, keepdims=True) + 1e-12
            out[name] = y.astype(np.float32)
        return out

    def noun_bank(self, words, progress=True):
        rows = []
        for w in words:
            seed = int.from_bytes(hashlib.sha256(w.encode("utf-8", "surrogatepass")).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(D_JOINT)
            rows.append(v / np.linalg.norm(v))
        return NounBank(list(words), np.asarray(rows, dtype=np.float32).reshape(len(words), D_JOINT))


class NaNBackbone(TinyProjBackbone):
    """Wraps the tiny backbone; an all-white image gets a NaN row (a model that
    divides by a zero norm, overflows in fp16, ...)."""

    def __init__(self):
        super().__init__(name="relinan")

    @property
    def fingerprint(self) -> str:
        return "relinan" + super().fingerprint[:9]

    def encode_images(self, batch):
        out = super().encode_images(batch)
        white = (batch.flatten(1).min(dim=1).values >= 0.999).numpy()
        for name in out:
            out[name][white] = np.nan
        return out


class PickyBackbone(TinyProjBackbone):
    """Like the tiny backbone, but its noun space knows only :data:`PICKY_WORDS`
    (as the offline backbone knows only WordNet nouns with ImageNet classes below)."""

    def __init__(self):
        super().__init__(name="relipicky")

    def noun_bank(self, words, progress=True):
        bank = super().noun_bank(words)
        keep = [i for i, w in enumerate(bank.words) if w in PICKY_WORDS]
        return NounBank([bank.words[i] for i in keep], bank.embeddings[keep].reshape(len(keep), D_JOINT))


PICKY_WORDS = frozenset({"bed", "coast", "car"})


def make_picky(argument: str = "", device: str = "cpu") -> Backbone:
    return PickyBackbone()


def make_tiny(argument: str = "", device: str = "cpu") -> Backbone:
    return TinyProjBackbone(version=WEIGHTS_VERSION)


def make_nan(argument: str = "", device: str = "cpu") -> Backbone:
    return NaNBackbone()


def register() -> None:
    # Import paths (not callables): the same registration works in a subprocess.
    register_backbone("relitiny", "relihelpers:make_tiny")
    register_backbone("relinan", "relihelpers:make_nan")
    register_backbone("relipicky", "relihelpers:make_picky")


# --------------------------------------------------------------------------- images


def good_image(path: Path, i: int, size: int = 24) -> Path:
    """A smooth two-colour gradient; ``i`` picks one of two colour families."""
    base = np.array([[220, 40, 40], [40, 60, 220]][i % 2], dtype=np.float64)
    rng = np.random.default_rng(i)
    ramp = np.linspace(0.6, 1.0, size)[None, :, None]
    arr = np.clip(base * ramp + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def add_good(folder: Path, n: int = 6) -> list[Path]:
    """``n`` good images (two colour families) plus up to two bundled CIFAR photos."""
    out = [good_image(folder / f"good_{i:02d}.png", i) for i in range(n)]
    for src in sorted(EXAMPLE.glob("*/0000.jpg"))[:2] if EXAMPLE.is_dir() else []:
        dst = folder / f"cifar_{src.parent.name}.jpg"
        dst.write_bytes(src.read_bytes())
        out.append(dst)
    return out


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels and holds almost no data:
    a decompression bomb as far as any reader that trusts the header is concerned."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def noise(size=(32, 32), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --------------------------------------------------------------------------- corpus


@dataclass
class Case:
    """One fuzz kind, built in its own folder among good images.

    expect:
      ``"skip"``   the file is listed in skipped.csv with a reason matching ``reason``
      ``"use"``    the file is clustered (in assignments.csv)
      ``"ignore"`` neither (not an image name, or walked as a folder)
      ``"error"``  the whole command fails: exit code 2, one line matching ``reason``
    """

    kind: str
    source: Path
    target: list[str]  # paths (as tacluster reports them) the expectation is about
    expect: str
    reason: str = ""
    k: int = 2
    backbone: str = "relitiny"
    note: str = ""
    extra_args: list[str] = field(default_factory=list)


Builder = Callable[[Path], Case]
KINDS: dict[str, Builder] = {}


def kind(name: str):
    def deco(fn: Builder) -> Builder:
        KINDS[name] = fn
        return fn

    return deco


def _one(root: Path, name: str, data: bytes, expect: str, reason: str = "", **kw) -> Case:
    add_good(root)
    p = root / name
    p.write_bytes(data)
    return Case(kind="", source=root, target=[str(p)], expect=expect, reason=reason, **kw)


@kind("zero_byte_file")
def _(root):
    return _one(root, "zero.jpg", b"", "skip", "^empty file$")


@kind("truncated_jpeg")
def _(root):
    full = jpeg_bytes(noise((64, 64)))
    return _one(root, "truncated.jpg", full[: len(full) // 2], "skip", "^truncated or corrupt")


@kind("truncated_png")
def _(root):
    full = png_bytes(noise((64, 64)))
    return _one(root, "truncated.png", full[: len(full) // 2], "skip", "^truncated or corrupt")


@kind("text_named_jpg")
def _(root):
    return _one(root, "notes.jpg", b"hello, I am a text file\n" * 20, "skip", "^not an image$")


@kind("html_named_png")
def _(root):
    html = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
    return _one(root, "page.png", html, "skip", "^not an image$")


@kind("png_named_jpg")
def _(root):
    return _one(root, "really_a_png.jpg", png_bytes(noise()), "use")


@kind("cmyk_jpeg")
def _(root):
    return _one(root, "cmyk.jpg", jpeg_bytes(Image.new("CMYK", (20, 16), (0, 255, 255, 0))), "use")


@kind("png_16bit_rgb")
def _(root):
    # 16-bit RGB(A) PNGs are read by Pillow as 8-bit RGB(A); 16-bit grey as I;16.
    arr = (np.random.default_rng(3).integers(0, 65536, (12, 12), dtype=np.uint16))
    return _one(root, "sixteen.png", png_bytes(Image.fromarray(arr)), "use")


@kind("palette_png_transparency")
def _(root):
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    pal.putpixel((2, 2), 1)
    return _one(root, "palette.png", png_bytes(pal, transparency=0), "use")


@kind("la_mode")
def _(root):
    return _one(root, "la.png", png_bytes(Image.new("LA", (9, 9), (120, 80))), "use")


@kind("i16_mode")
def _(root):
    return _one(root, "i16.png", png_bytes(Image.fromarray(np.full((7, 7), 40000, np.uint16))), "use")


@kind("one_pixel")
def _(root):
    return _one(root, "1x1.png", png_bytes(Image.new("RGB", (1, 1), (10, 200, 10))), "use")


@kind("extreme_aspect_10000x1")
def _(root):
    return _one(root, "strip.png", png_bytes(noise((10000, 1))), "use")


@kind("decompression_bomb_header")
def _(root):
    # 50000 x 50000 = 2.5 G pixels, > 2x Pillow's limit: DecompressionBombError
    return _one(root, "bomb.png", png_header_only(50000, 50000), "skip", "^too large$")


@kind("decompression_bomb_warning_range")
def _(root):
    # 10000 x 10000 = 100 M pixels: between the limit (~89 M) and 2x; Pillow only warns
    return _one(root, "bomb_warn.png", png_header_only(10000, 10000), "skip", "^too large$")


@kind("animated_gif")
def _(root):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return _one(root, "anim.gif", buf.getvalue(), "use")


@kind("exif_rotated_photo")
def _(root):
    exif = Image.Exif()
    exif[0x0112] = 6
    return _one(root, "rotated.jpg", jpeg_bytes(noise((30, 20)), exif=exif.tobytes()), "use")


@kind("webp_and_tiff")
def _(root):
    add_good(root)
    noise(seed=5).save(root / "w.webp")
    noise(seed=6).save(root / "t.tiff")
    return Case("", root, [str(root / "t.tiff"), str(root / "w.webp")], "use")


@kind("non_utf8_file_name")
def _(root):
    add_good(root)
    raw = os.fsencode(str(root)) + b"/caf\xe9_\xff.png"
    with open(raw, "wb") as fh:
        fh.write(png_bytes(noise(seed=7)))
    return Case("", root, [os.fsdecode(raw)], "use")


@kind("very_long_file_name")
def _(root):
    return _one(root, "x" * 240 + ".png", png_bytes(noise(seed=8)), "use")


@kind("spaces_quotes_markup_in_name")
def _(root):
    add_good(root)
    names = ["with space.png", "quote\"double.png", "quote'single.png", "<img src=x onerror=alert(1)>.png"]
    sub = root / "<script>alert(1)<"
    sub.mkdir()
    targets = []
    for i, n in enumerate(names):
        (root / n).write_bytes(png_bytes(noise(seed=20 + i)))
        targets.append(str(root / n))
    (sub / "script>.jpg").write_bytes(jpeg_bytes(noise(seed=30)))  # path ends <script>alert(1)</script>.jpg
    targets.append(str(sub / "script>.jpg"))
    return Case("", root, targets, "use")


@kind("symlink_loop")
def _(root):
    add_good(root)
    (root / "sub").mkdir()
    os.symlink(root, root / "sub" / "loop")
    return Case("", root, [str(root / "sub" / "loop")], "skip", "^symlink loop$")


@kind("dangling_symlink")
def _(root):
    add_good(root)
    os.symlink(root / "gone.png", root / "dangling.png")
    return Case("", root, [str(root / "dangling.png")], "skip", "^missing$")


@kind("symlink_to_outside")
def _(root):
    add_good(root)
    outside = root.parent / (root.name + "_outside")
    outside.mkdir()
    (outside / "far.png").write_bytes(png_bytes(noise(seed=9)))
    lone = root.parent / (root.name + "_outside_file")
    lone.mkdir()
    (lone / "far2.png").write_bytes(png_bytes(noise(seed=10)))
    os.symlink(lone / "far2.png", root / "link_file.png")  # not into link_dir: one file linked twice counts once
    os.symlink(outside, root / "link_dir")
    return Case("", root, [str(root / "link_dir" / "far.png"), str(root / "link_file.png")], "use",
                note="symlinks are followed, also out of the folder (datasets are often assembled from links)")


@kind("directory_named_like_image")
def _(root):
    add_good(root)
    (root / "folder.jpg").mkdir()
    (root / "folder.jpg" / "inner.png").write_bytes(png_bytes(noise(seed=10)))
    return Case("", root, [str(root / "folder.jpg" / "inner.png")], "use",
                note="a folder named *.jpg is walked like any folder, not read as a file")


@kind("duplicate_files")
def _(root):
    add_good(root)
    data = png_bytes(noise(seed=11))
    (root / "dup_a.png").write_bytes(data)
    (root / "dup_b.png").write_bytes(data)
    return Case("", root, [str(root / "dup_a.png"), str(root / "dup_b.png")], "use",
                note="both assigned, to the same cluster; embedded once")


@kind("same_image_two_sizes")
def _(root):
    add_good(root)
    big = noise((64, 64), seed=12).resize((64, 64))
    big.save(root / "big.png")
    big.resize((32, 32), Image.LANCZOS).save(root / "small.png")
    return Case("", root, [str(root / "big.png"), str(root / "small.png")], "use")


@kind("not_an_image_extension")
def _(root):
    return _one(root, "readme.txt", b"not listed at all", "ignore")


@kind("csv_list_with_missing_paths")
def _(root):
    goods = add_good(root)
    lst = root / "list.csv"
    rows = ["path,label"] + [f"{p.name},x" for p in goods] + ["gone.png,y", f"{root / 'also_gone.jpg'},z"]
    lst.write_text("\n".join(rows) + "\n")
    return Case("", lst, [str(root / "gone.png"), str(root / "also_gone.jpg")], "skip", "^missing$")


@kind("txt_list_with_a_directory")
def _(root):
    goods = add_good(root)
    (root / "adir").mkdir()
    lst = root / "list.txt"
    lst.write_text("# images\n" + "\n".join(p.name for p in goods) + "\nadir\n")
    return Case("", lst, [str(root / "adir")], "skip", "^not a file$")


@kind("nan_from_backbone")
def _(root):
    add_good(root)
    Image.new("RGB", (10, 10), (255, 255, 255)).save(root / "white.png")
    return Case("", root, [str(root / "white.png")], "skip", "^backbone produced NaN$", backbone="relinan")


@kind("empty_folder")
def _(root):
    return Case("", root, [], "error", "no usable images")


@kind("only_bad_files")
def _(root):
    (root / "a.jpg").write_bytes(b"")
    (root / "b.png").write_text("text")
    return Case("", root, [], "error", r"no usable images .*\(2 file\(s\) skipped\)")


@kind("folder_with_one_image")
def _(root):
    good_image(root / "only.png", 0)
    return Case("", root, [], "error", r"only 1 usable image in .*: clustering needs at least 2 images")


@kind("k_equals_1")
def _(root):
    add_good(root)
    return Case("", root, [], "error", r"integer >= 2", k=1)


@kind("k_larger_than_usable")
def _(root):
    n = len(add_good(root))
    (root / "bad.jpg").write_bytes(b"junk")
    # n good files and a junk one: refused against the 1 + n files listed, before any embedding
    return Case("", root, [], "error", rf"--k 50 is larger than the {n + 1} image files found.*use --k {n + 1} or fewer",
                k=50)


@kind("missing_input")
def _(root):
    return Case("", root / "nope", [], "error", "does not exist")


@kind("missing_vocabulary_file")
def _(root):
    add_good(root)
    return Case("", root, [], "error", "vocabulary file .* does not exist",
                extra_args=["--vocabulary", str(root / "nouns.txt")])


def build(kind_name: str, root: Path) -> Case:
    root.mkdir(parents=True, exist_ok=True)
    case = KINDS[kind_name](root)
    case.kind = kind_name
    return case


# --------------------------------------------------------------------------- subprocess


SITECUSTOMIZE = '''\
import os, time
import relihelpers
relihelpers.register()
_delay = float(os.environ.get("RELI_WRITE_SLEEP", "0") or 0)
if _delay:
    # Slow every atomic rename of the run's outputs: a kill then lands while
    # outputs are being written (temp file complete, target not yet replaced).
    import types
    import tacluster._atomic  # every output (model, tables, report) is renamed there
    def _slow_replace(src, dst, _r=os.replace):
        time.sleep(_delay)
        return _r(src, dst)
    tacluster._atomic.os = types.SimpleNamespace(**{**vars(os), "replace": _slow_replace})
'''


def write_sitecustomize(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def subprocess_env(site_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELI_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(HERE), str(site_dir)])
    env["OMP_NUM_THREADS"] = "1"  # see conftest: faiss k-means on tiny data
    env.update(extra)
    return env


# --------------------------------------------------------------------------- checks


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    """The CLI contract for errors a user can fix: exit 2, one line, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tacluster: error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), (pattern, lines[0])


def read_csv(path: Path) -> list[dict]:
    """Rows of an output CSV (strict UTF-8), each ``path`` turned back into the file's
    path by the documented rule (docs/cli.md, "Paths in the outputs": a ``file://`` URI holds
    percent-encoded bytes)."""
    import urllib.parse

    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if r.get("path", "").startswith("file://"):
            r["path"] = os.fsdecode(urllib.parse.unquote_to_bytes(r["path"][len("file://"):]))
    return rows


def read_run(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def edit_state(run: Path) -> dict:
    """Every place a cluster's name and id live, checked to agree; returns {id: name}."""
    clusters = json.loads((run / "clusters.json").read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in clusters["clusters"]}
    assert sorted(names) == list(range(clusters["n_clusters"]))
    rows = read_csv(run / "assignments.csv")
    assert all(names[int(r["cluster"])] == r["cluster_name"] for r in rows)
    assert {int(r["cluster"]) for r in rows} == set(names)
    for c in clusters["clusters"]:
        assert c["size"] == sum(int(r["cluster"]) == c["id"] for r in rows)
    import pyarrow.parquet as pq

    t = pq.read_table(run / "assignments.parquet").to_pydict()
    assert [(int(c), n) for c, n in zip(t["cluster"], t["cluster_name"])] == [
        (int(r["cluster"]), r["cluster_name"]) for r in rows]
    meta = json.loads((run / "model" / "config.json").read_text())["metadata"]
    assert meta["cluster_names"] == [names[i] for i in range(len(names))]
    import html

    page = (run / "report.html").read_text(encoding="utf-8")
    assert all(html.escape(n, quote=False) in page for n in names.values())
    return names


def kill_and_recover(proc, run: Path, cli, old: str, new: str) -> tuple[bool, str]:
    """kill -9 ``proc`` (renaming cluster 0 of ``run`` from ``old`` to ``new``), then let the
    next tacluster command recover the run. Returns whether the kill came after the commit
    point (the journal) and the state the run is in, checked whole: "old" or "new"."""
    import signal

    from tacluster.run.edit import EDIT_STAGING, JOURNAL

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    committed = (run / JOURNAL).exists()
    code, _, err = cli(["report", run])  # any tacluster command on the run recovers it
    assert code == 0, err
    name = edit_state(run)[0]
    assert name in (old, new)
    assert not (run / JOURNAL).exists() and not (run / EDIT_STAGING).exists()
    return committed, "new" if name == new else "old"
