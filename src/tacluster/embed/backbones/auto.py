"""``--backbone auto``: the paper's CLIP where it is cached or can be fetched, else the offline backbone.

:func:`resolve_auto` decides without loading anything:

1. CLIP ViT-B/32 is in the Hugging Face cache: ``clip`` (no request);
2. offline mode (``--offline``, ``HF_HUB_OFFLINE=1``): ``lite``, with one line
   saying how to get CLIP;
3. the Hub did not answer within the last :data:`REMEMBER_S` seconds (a note
   in the tacluster cache): ``lite`` at once, so a machine without network
   does not wait on a time-out at every run;
4. the Hub answers a :data:`PROBE_TIMEOUT_S` request: ``clip``, announced
   with its download size and the first run's cost; it does not answer:
   ``lite``, and the failure is remembered.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tacluster.embed.backbones.catalog import CARDS
from tacluster.embed.backbones.hub import cached_snapshot, hub_cache_dir, hub_endpoint, offline_mode, prefetch_hint

#: What ``auto`` prefers, and what it falls back to.
PREFERRED = "clip"
FALLBACK = "lite"
#: Seconds the probe of the Hub may take.
PROBE_TIMEOUT_S = 3.0
#: How long an unanswered probe is remembered (the note ``hub-unreachable.json`` in the tacluster cache).
REMEMBER_S = 6 * 3600
NOTE_FILE = "hub-unreachable.json"
#: The first CLIP run on a 2-core CPU, cold (docs/backbones.md: 1,005 photos, noun-bank candidates).
FIRST_RUN = "about 10 min on a 2-core CPU for 1,000 photos, mostly the noun bank; later runs reuse it"


@dataclass(frozen=True)
class AutoChoice:
    """What ``auto`` became and why (run.json's ``backbone_choice``)."""

    backbone: str
    reason: str
    #: The line shown to the user (None when nothing needs saying: CLIP was cached).
    message: str | None = None

    def record(self) -> dict:
        return {"requested": "auto", "backbone": self.backbone, "reason": self.reason}


def resolve_auto(offline: bool | None = None, *, cache_dir: str | os.PathLike | None = None) -> AutoChoice:
    """The backbone ``--backbone auto`` stands for on this machine (module docstring)."""
    from tacluster.nouns.bank import default_cache_dir

    card = CARDS[PREFERRED]
    if cached_snapshot(card.repo_id) is not None:
        return AutoChoice(PREFERRED, "cached")
    get = prefetch_hint(PREFERRED)
    if offline_mode(offline):
        return AutoChoice(FALLBACK, "offline", f"backbone auto: {card.repo_id} is not in the Hugging Face cache "
                          f"{hub_cache_dir()} and offline mode is on, so the offline backbone {FALLBACK!r} runs "
                          f"(no TAC; --backbone {FALLBACK} chooses it without this line); for CLIP, {get}")
    note = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / NOTE_FILE
    endpoint = hub_endpoint()
    since = _unreachable_since(note, endpoint)
    if since is None and not _hub_answers(endpoint, card.repo_id):
        _remember_unreachable(note, endpoint)
        since = time.time()
    if since is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(since))
        return AutoChoice(FALLBACK, "hub unreachable", f"backbone auto: {endpoint} did not answer "
                          f"(checked {stamp}; asked again after {REMEMBER_S // 3600} h), so the offline backbone "
                          f"{FALLBACK!r} runs (no TAC; --backbone {FALLBACK} chooses it without this line); for CLIP, {get}")
    return AutoChoice(PREFERRED, "download", f"backbone auto: fetching {card.summary} ({card.repo_id}, "
                      f"{card.size_mb} MB) into {hub_cache_dir()}; the first run takes {FIRST_RUN} "
                      f"(--backbone {FALLBACK}: the offline backbone, no download)")


def _hub_answers(endpoint: str, repo_id: str) -> bool:
    """Whether the Hub gives any HTTP answer to its model-info request within the probe's time."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{endpoint}/api/models/{repo_id}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return True
    except urllib.error.HTTPError:
        return True  # it answered (a proxy's 403, a 404): the download itself says what is wrong
    except (OSError, ValueError):  # URLError is an OSError: no answer (refused, DNS, time-out)
        return False


def _unreachable_since(path: Path, endpoint: str) -> float | None:
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
        when = float(note["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if note.get("endpoint") != endpoint or not 0 <= time.time() - when < REMEMBER_S:
        return None
    return when


def _remember_unreachable(path: Path, endpoint: str) -> None:
    from tacluster._atomic import atomic_write_bytes

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"endpoint": endpoint, "since": time.time()}).encode("utf-8"))
    except OSError:
        pass  # a read-only cache: the next run probes again, at most PROBE_TIMEOUT_S
