"""Nouns stage: the WordNet vocabulary, prompt templates and the noun bank
(every noun embedded once per backbone, cached and memory-mapped)."""

from tacluster.nouns.bank import PROMPT_TEMPLATES, NounBank, cached_noun_bank, default_cache_dir, embed_with_templates
from tacluster.nouns.vocabulary import load_imagenet_hierarchy, load_vocabulary, load_wordnet_nouns, normalize_noun

__all__ = [
    "PROMPT_TEMPLATES",
    "NounBank",
    "cached_noun_bank",
    "default_cache_dir",
    "embed_with_templates",
    "load_imagenet_hierarchy",
    "load_vocabulary",
    "load_wordnet_nouns",
    "normalize_noun",
]
