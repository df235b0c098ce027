"""Fetching named pretrained models into the Hugging Face cache, offline aware.

tacluster keeps no model store of its own: a Hub model id is fetched with
``huggingface_hub.snapshot_download`` into the standard Hub cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
the same files ``transformers`` and ``open_clip`` use, with the Hub's own
progress bars. The cache is asked first and without any request: a model
fetched once loads with no network at all. Offline mode (``offline=True``,
``--offline``, ``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``) never
makes a request; a model that is not cached then stops with one line that
names the model, the cache searched, and the command that pre-fetches it.

A download that breaks off leaves only the Hub's ``.incomplete`` blob, never
a snapshot file: the next run resumes or restarts it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable

from tacluster.errors import BackboneError

#: What a two-tower model folder needs: configs (model, tokenizer, image
#: processor), tokenizer vocabularies (.txt BPE merges/vocab, .model
#: sentencepiece) and safetensors weights. Other formats (flax, tf, onnx) are
#: never fetched; ``pytorch_model.bin`` only when a repository has no safetensors.
HF_PATTERNS = ("*.json", "*.txt", "*.model", "*.safetensors")
HF_FALLBACK_WEIGHTS = ("pytorch_model.bin", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

_TRUE = {"1", "on", "yes", "true"}


def offline_mode(offline: bool | None = None) -> bool:
    """True when no request may be made: ``offline`` or the Hub's environment switches."""
    if offline:
        return True
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hub_endpoint() -> str:
    """The Hub address (``$HF_ENDPOINT``, default huggingface.co), read at call time."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def prefetch_hint(name: str) -> str:
    """The commands that put ``name`` into the cache on a machine with network."""
    return (
        f"pre-fetch it on a machine with network access with `tacluster backbones fetch {name}` "
        "and copy that cache directory here (or set HF_HUB_CACHE to a copy)"
    )


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, shortened: for one-line errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hub_errors():
    from huggingface_hub import errors

    return errors


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types a failed transfer can raise, across huggingface_hub versions."""
    kinds: list[type[BaseException]] = [OSError, ValueError]
    errors = _hub_errors()
    for attr in ("HfHubHTTPError", "LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        if hasattr(errors, attr):
            kinds.append(getattr(errors, attr))
    for module in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        for attr in ("HTTPError", "RequestException", "TransportError"):
            if isinstance(getattr(mod, attr, None), type):
                kinds.append(getattr(mod, attr))
    return tuple(kinds)


def _has_weights(folder: Path) -> bool:
    return any(p.suffix in WEIGHT_SUFFIXES and p.is_file() for p in folder.iterdir())


def cached_snapshot(repo_id: str, *, revision: str | None = None, cache_dir: Path | None = None,
                    required: Iterable[str] = ("config.json",)) -> Path | None:
    """The complete cached snapshot of ``repo_id``, or None; makes no request."""
    from huggingface_hub import snapshot_download

    errors = _hub_errors()
    local_missing = tuple(
        getattr(errors, a) for a in ("LocalEntryNotFoundError", "IncompleteSnapshotError") if hasattr(errors, a)
    )
    # The usual files first; a repository without safetensors was fetched with
    # its .bin weights, so its complete snapshot matches the wider pattern list.
    for patterns in (HF_PATTERNS, HF_PATTERNS + HF_FALLBACK_WEIGHTS):
        try:
            path = Path(snapshot_download(
                repo_id, revision=revision, cache_dir=str(cache_dir or hub_cache_dir()),
                local_files_only=True, allow_patterns=list(patterns),
            ))
        except local_missing + (FileNotFoundError,):
            continue
        if path.is_dir() and _has_weights(path) and all((path / f).is_file() for f in required):
            return path
    return None


def fetch_snapshot(repo_id: str, *, name: str | None = None, revision: str | None = None,
                   offline: bool | None = None, cache_dir: Path | None = None,
                   required: Iterable[str] = ("config.json",)) -> Path:
    """Local folder of the Hub model ``repo_id``, downloading it on first use.

    Parameters
    ----------
    repo_id : Hub model id (``"openai/clip-vit-base-patch32"``)
    name : the name the user typed (for messages; default ``hf:<repo_id>``)
    revision : branch, tag or commit (default: the repository's default branch)
    offline : never make a request (also when ``HF_HUB_OFFLINE=1``)
    cache_dir : Hub cache (default :func:`hub_cache_dir`)
    required : files the folder must hold besides a weights file

    Raises
    ------
    BackboneError
        One line: not cached while offline, unknown or gated repository,
        failed transfer, or a repository without the needed files.
    """
    name = name or f"hf:{repo_id}"
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    required = tuple(required)
    found = cached_snapshot(repo_id, revision=revision, cache_dir=cache, required=required)
    if found is not None:
        return found
    if offline_mode(offline):
        raise BackboneError(
            f"backbone {name!r}: model {repo_id!r} is not in the Hugging Face cache {cache} and offline "
            f"mode is on (--offline / HF_HUB_OFFLINE); {prefetch_hint(name)}"
        )
    path = _download(repo_id, name, revision, cache, list(HF_PATTERNS))
    if not _has_weights(path):
        path = _download(repo_id, name, revision, cache, list(HF_FALLBACK_WEIGHTS))
    missing = [f for f in required if not (path / f).is_file()]
    if missing or not _has_weights(path):
        what = ", ".join(missing) if missing else f"a weights file ({', '.join(WEIGHT_SUFFIXES)})"
        raise BackboneError(f"backbone {name!r}: the Hub repository {repo_id!r} has no {what}")
    return path


def _download(repo_id: str, name: str, revision: str | None, cache: Path, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    errors = _hub_errors()
    endpoint = hub_endpoint()
    try:
        return Path(snapshot_download(
            repo_id, revision=revision, cache_dir=str(cache), allow_patterns=patterns, endpoint=endpoint,
        ))
    except errors.RepositoryNotFoundError as exc:
        raise BackboneError(
            f"backbone {name!r}: no model {repo_id!r} on {endpoint} (or it is private: log in with "
            "`hf auth login`); check the name, or pass a local folder as 'hf:/path/to/model'"
        ) from exc
    except errors.GatedRepoError as exc:
        raise BackboneError(
            f"backbone {name!r}: {repo_id!r} is gated on {endpoint}: accept its licence on the model "
            "page, then log in with `hf auth login`"
        ) from exc
    except _network_errors() as exc:
        reason = first_line(exc)
        raise BackboneError(
            f"backbone {name!r}: cannot download {repo_id!r} from {endpoint} into {cache} ({reason}); "
            f"retry, or {prefetch_hint(name)}"
        ) from exc


@contextlib.contextmanager
def hub_offline(offline: bool | None):
    """Within the block, huggingface_hub (and so transformers) makes no request when ``offline``.

    For libraries that fetch on their own (open_clip's tokenizers): the Hub reads
    ``constants.HF_HUB_OFFLINE`` at each call. The previous value is restored.
    """
    if not offline:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def hub_progress(enabled: bool):
    """Within the block, the Hub's download bars (and transformers' loading bars) are off unless
    ``enabled``: ``--quiet``, or stderr is a log file rather than a terminal."""
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    except ImportError:  # no Hub client installed: nothing downloads, nothing to silence
        enabled = True
    if enabled:
        yield
        return

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    tf_logging = _transformers_logging()
    tf_was_on = tf_logging is not None and tf_logging.is_progress_bar_enabled()
    if tf_was_on:
        tf_logging.disable_progress_bar()  # "Loading checkpoint shards" and the like
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()
        if tf_was_on:
            tf_logging.enable_progress_bar()


def _transformers_logging():
    """transformers' logging module when transformers is installed, else None."""
    try:
        from transformers.utils import logging
    except ImportError:
        return None
    return logging
