"""The exact fast text path (prefix key/value reuse) against the model's plain forward.

Tiny random Hugging Face CLIP / SigLIP models built in tmp_path; the open_clip
case is in test_backbones_clip.py (it needs the open_clip venv).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tacluster.embed.backbones import load_backbone  # noqa: E402
from tacluster.embed.backbones.base import PROMPT_TEMPLATES  # noqa: E402
from tacluster.nouns.bank import RANKING_TEMPLATES  # noqa: E402
from tacluster.testing import save_tiny_hf_siglip  # noqa: E402

from helpers import save_tiny_hf_clip  # noqa: E402

# Nouns of 1 to 30 tokens (the tiny tokenizer is one token per character), odd characters,
# and prompts that match no template (no prefix to reuse).
WORDS = ["x", "cat", "ice cream", "aardvark", "café", "o'clock", "a very long noun phrase indeed"]
OTHER = ["plain text", "{braces}", "", "a photo of a", "a photo of a cat. a photo of a dog."]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return load_backbone(f"hf:{save_tiny_hf_clip(tmp_path_factory.mktemp('clip') / 'model', seed=3)}")


def _both(backbone, fn):
    """``fn()`` on the plain forward, then on the fast path."""
    backbone.prefix_reuse = False
    try:
        plain = fn()
    finally:
        backbone.prefix_reuse = True
    return plain, fn()


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - (a * b).sum(axis=1)


def test_fast_path_reproduces_plain_forward_and_is_used(clip, monkeypatch):
    prompts = [t.format(w) for w in WORDS for t in PROMPT_TEMPLATES + RANKING_TEMPLATES] + OTHER
    plain, _ = _both(clip, lambda: clip.encode_text(prompts))
    # The fast path must run without the plain forward, with one cached prefix per template
    # (TAC's 7 and the ranking bank's).
    monkeypatch.setattr(clip, "_text_features", lambda texts: pytest.fail("plain forward called"))
    clip._tower = None
    fast = clip.encode_text(prompts)
    assert fast.shape == plain.shape
    assert _cosine_distance(plain, fast).max() < 1e-5
    assert len({key[0] for key in clip._tower._kv}) == len(PROMPT_TEMPLATES + RANKING_TEMPLATES)


def test_noun_bank_matches_plain_bank_in_order(clip):
    words = WORDS + [f"{w}{i}" for i, w in enumerate(WORDS * 5)]
    clip.text_batch_size = 8  # several batches, each with mixed lengths
    plain, fast = _both(clip, lambda: clip.noun_bank(words, progress=False))
    assert fast.words == plain.words == words
    assert _cosine_distance(plain.embeddings, fast.embeddings).max() < 1e-5


def test_legacy_eos_rule_pools_the_largest_id(clip):
    # Configs with eos_token_id == 2 pool the largest id (CLIPTextModel.forward); the
    # tiny tokenizer's end-of-text token is its largest id, so both rules must agree
    # with the plain forward.
    text = clip._model.text_model
    saved = text.eos_token_id
    text.eos_token_id = 2
    clip._tower = None
    try:
        prompts = [t.format(w) for w in WORDS[:3] for t in PROMPT_TEMPLATES]
        plain, fast = _both(clip, lambda: clip.encode_text(prompts))
        assert clip._tower is not False
    finally:
        text.eos_token_id = saved
        clip._tower = None
    assert _cosine_distance(plain, fast).max() < 1e-5


def test_unknown_pooled_position_falls_back_to_plain_forward(clip, monkeypatch):
    # A config whose end-of-text id the tokenizer never produces: the model then pools
    # position 0 of every padded batch, which the fast path does not guess; it leaves
    # the call to the plain forward.
    monkeypatch.setattr(clip._model.text_model, "eos_token_id", 5)
    clip._tower = None
    calls = []
    original = clip._text_features
    monkeypatch.setattr(clip, "_text_features", lambda texts: calls.append(len(texts)) or original(texts))
    try:
        out = clip.encode_text(["a photo of a cat.", "dog"])
        assert clip._tower is not False  # the tower exists; this call is what it declined
    finally:
        clip._tower = None
    assert calls == [2] and out.shape[0] == 2


def test_siglip_is_bidirectional_so_it_keeps_the_plain_forward(tmp_path, monkeypatch):
    siglip = load_backbone(f"hf:{save_tiny_hf_siglip(tmp_path / 'siglip')}")
    calls = []
    original = siglip._text_features
    monkeypatch.setattr(siglip, "_text_features", lambda texts: calls.append(len(texts)) or original(texts))
    out = siglip.encode_text(["a photo of a cat.", "a photo of a dog."])
    assert siglip._tower is False  # no fast path for it
    assert calls == [2] and out.shape[0] == 2


@pytest.mark.parametrize("busy", [True, False])
def test_noun_bank_text_tower_on_one_thread_only_when_busy(clip, monkeypatch, busy):
    import tacluster._threads as threads

    monkeypatch.setattr(threads, "machine_is_busy", lambda: busy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    original = clip.encode_text
    monkeypatch.setattr(clip, "encode_text", lambda texts: seen.append(torch.get_num_threads()) or original(texts))
    try:
        clip.noun_bank(["cat", "dog"], progress=False)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen == [1 if busy else 2] and after == 2
