"""Short backbone names: the models a user asks for by a word.

Each short name stands for a Hugging Face Hub model, fetched into the Hub
cache on first use (:mod:`tacluster.embed.backbones.hub`). Sizes are the fp32
safetensors files as published; dimensions are the shared image-text
embedding width; speeds are measured by ``benchmarks/backbone_speed.py``
(README, "Best quality: a vision-language model").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelCard:
    """What a short name stands for."""

    short: str
    repo_id: str
    summary: str
    dim: int
    params_m: int
    size_mb: int
    licence: str

    @property
    def full_name(self) -> str:
        return f"hf:{self.repo_id}"


CARDS: dict[str, ModelCard] = {
    card.short: card
    for card in (
        ModelCard("clip", "openai/clip-vit-base-patch32",
                  "OpenAI CLIP ViT-B/32, 224 px: the TAC paper's model", 512, 151, 605, "MIT"),
        ModelCard("clip-l", "openai/clip-vit-large-patch14",
                  "OpenAI CLIP ViT-L/14, 224 px", 768, 428, 1710, "MIT"),
        ModelCard("siglip", "google/siglip-base-patch16-224",
                  "Google SigLIP base, patch 16, 224 px (sigmoid loss)", 768, 203, 813, "Apache-2.0"),
        ModelCard("siglip2", "google/siglip2-base-patch16-224",
                  "Google SigLIP 2 base, patch 16, 224 px (multilingual Gemma tokenizer)",
                  768, 375, 1500, "Apache-2.0"),
    )
}


def card_for(name: str) -> ModelCard | None:
    """The card of a short name (``"clip"``) or of its full name (``"hf:openai/..."``)."""
    if name in CARDS:
        return CARDS[name]
    for card in CARDS.values():
        if name == card.full_name:
            return card
    return None
