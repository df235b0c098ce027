"""Embedding stage: reader (list + decode), mapper (backbone forward), writer
(content-keyed cache shards), joined by :func:`embed_images`."""

from tacluster.embed.cache import CorruptShardWarning, EmbeddingCache, content_key
from tacluster.embed.reader import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    InputList,
    decode_image,
    list_inputs,
)
from tacluster.embed.runner import (
    EmbeddingResult,
    EmbeddingStats,
    EmbedTask,
    embed_images,
    run_tasks,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "CorruptShardWarning",
    "EmbedTask",
    "EmbeddingCache",
    "EmbeddingResult",
    "EmbeddingStats",
    "ImageDecodeError",
    "InputList",
    "content_key",
    "decode_image",
    "embed_images",
    "list_inputs",
    "run_tasks",
]
