"""Exact prefix key/value reuse for causal text towers (CLIP's).

In a causal transformer the hidden state of token ``i`` depends only on tokens
``0..i``. Every noun-bank prompt of one template, ``"a photo of a {}."``,
starts with the same tokens, so their keys and values are the same for every
noun: :class:`CausalTextTower` computes them once per template prefix, caches
them, and runs only the noun and suffix tokens of each prompt against them
(positions continue after the prefix, the causal mask is offset by its
length). It also stops every sequence at its pooled token (later tokens cannot
reach it), pads a batch only to its longest sequence, groups prompts by length
so that padding stays small, and in the last layer runs the attention output
and the MLP for the pooled token alone. The result is the model's own pooled,
projected embedding up to float rounding (``tests/test_text_prefix.py``
checks a cosine distance below 1e-5).

Nothing is re-implemented beyond the attention glue: the layer norms, the
query/key/value and output projections and the MLPs are the model's own
modules, called as they are. The tower is built only for architectures whose
forward it reproduces (:func:`hf_clip_tower`, :func:`open_clip_tower`);
anything else (SigLIP's bidirectional text tower, a subclass with its own
forward, a custom attention) gets ``None`` and keeps the plain forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["CausalTextTower", "Layer", "hf_clip_tower", "open_clip_tower"]


@dataclass
class Layer:
    """One pre-norm transformer block, as modules of the model.

    ``x = x + ls1(out(attention(qkv(norm1(x)))))``, then
    ``x = x + ls2(mlp(norm2(x)))``; ``qkv`` returns the three (B, L, D)
    projections, ``scale`` multiplies the query-key products.
    """

    norm1: Callable
    qkv: Callable
    out: Callable
    norm2: Callable
    mlp: Callable
    heads: int
    scale: float
    ls1: Callable = field(default=lambda x: x)
    ls2: Callable = field(default=lambda x: x)


@dataclass
class CausalTextTower:
    """A causal text transformer seen as its pieces, run with prefix reuse.

    Parameters
    ----------
    tokens : callable
        Token embedding: (B, L) int64 ids -> (B, L, D).
    positions : tensor of shape (context, D)
        Position embedding table (row ``i`` is added at position ``i``).
    layers : list of Layer
    final_norm : callable
        The norm applied to the last hidden states before pooling.
    project : callable
        Pooled (B, D) -> projected (B, d).
    pool : callable
        ``pool(ids)`` is the position the model pools for one tokenised
        prompt, or None where the fast path cannot tell it exactly (the
        caller then uses the plain forward).
    prefixes : sequence of tuple of int
        Token-id prefixes worth caching (the templates' text before ``{}``).
    chunk : int
        Most sequences per forward call.
    """

    tokens: Callable
    positions: "torch.Tensor"  # noqa: F821
    layers: list[Layer]
    final_norm: Callable
    project: Callable
    pool: Callable[[Sequence[int]], "int | None"]
    prefixes: Sequence[tuple[int, ...]] = ()
    chunk: int = 512
    _kv: dict = field(default_factory=dict, repr=False)

    def encode(self, ids: Sequence[Sequence[int]]) -> "torch.Tensor | None":  # noqa: F821
        """Projected, pooled embeddings (N, d) of tokenised prompts, in their order.

        ``ids[i]`` is prompt ``i`` tokenised as the plain forward tokenises it
        (padding after the pooled token is ignored). Returns None when a
        prompt's pooled position is unknown (see ``pool``).

        Prompts of every prefix share a forward call: each row attends to its
        own prefix's cached keys (padded to the longest prefix, the padding
        masked) and its positions start after that prefix.
        """
        import torch

        pools = [self.pool(row) for row in ids]
        if not ids or any(p is None for p in pools):
            return None
        prefix = [self._prefix_of(row, pools[i]) for i, row in enumerate(ids)]
        used = sorted(set(prefix), key=lambda p: (len(p), p))
        index = {p: k for k, p in enumerate(used)}
        past = self._stacked_kv(used)
        device = self.positions.device
        plen = torch.tensor([len(p) for p in used], dtype=torch.long, device=device)
        rows = sorted(range(len(ids)), key=lambda i: pools[i] + 1 - len(prefix[i]))  # by length: little padding
        out: torch.Tensor | None = None
        for c in range(0, len(rows), self.chunk):
            part = rows[c : c + self.chunk]
            length = max(pools[i] + 1 - len(prefix[i]) for i in part)
            batch = torch.zeros((len(part), length), dtype=torch.long)
            for r, i in enumerate(part):
                seq = ids[i][len(prefix[i]) : pools[i] + 1]
                batch[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            which = torch.tensor([index[prefix[i]] for i in part], dtype=torch.long, device=device)
            last = torch.tensor([pools[i] - len(prefix[i]) for i in part], dtype=torch.long, device=device)
            feats = self._run(batch.to(device), plen[which], past, which, last)
            if out is None:
                out = feats.new_empty((len(ids), feats.shape[1]))
            out[torch.tensor(part, device=device)] = feats
        return out

    def _prefix_of(self, row: Sequence[int], pool: int) -> tuple[int, ...]:
        """The longest cached prefix that ``row`` starts with and that ends before its pooled token."""
        best: tuple[int, ...] = ()
        for p in self.prefixes:
            if len(best) < len(p) <= pool and tuple(row[: len(p)]) == p:
                best = p
        return best

    def _prefix_kv(self, prefix: tuple[int, ...]):
        """Per-layer (key, value) of a non-empty ``prefix``, each (1, heads, P, head_dim).

        Cached per device and autocast dtype (an autocast forward gives other
        keys than a float32 one)."""
        import torch

        device = self.positions.device
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        key = (prefix, str(device), autocast)
        if key not in self._kv:
            ids = torch.tensor([prefix], dtype=torch.long, device=device)
            kv: list = []
            self._run(ids, torch.zeros(1, dtype=torch.long, device=device), None, None, None, collect=kv)
            self._kv[key] = kv
        return self._kv[key]

    def _stacked_kv(self, used: list[tuple[int, ...]]):
        """Per-layer (keys, values) of the prefixes ``used``, each (n_used, heads, P_max, head_dim),
        zero past each prefix's end; None when every prefix is empty."""
        import torch

        longest = max(len(p) for p in used)
        if longest == 0:
            return None
        per_prefix = [self._prefix_kv(p) if p else None for p in used]
        stacked = []
        for li in range(len(self.layers)):
            ref = next(kv[li][0] for kv in per_prefix if kv is not None)
            ks, vs = ref.new_zeros((2, len(used), ref.shape[1], longest, ref.shape[3])).unbind(0)
            for k, kv in enumerate(per_prefix):
                if kv is not None:
                    ks[k, :, : len(used[k])], vs[k, :, : len(used[k])] = kv[li][0][0], kv[li][1][0]
            stacked.append((ks, vs))
        return stacked

    def _run(self, ids, start, past, which, last, collect: list | None = None):
        """Run ``ids`` (B, L), row ``b`` at positions ``start[b]..``, against ``past``.

        ``past`` is per layer (keys, values) of shape (n, heads, P_max, head_dim)
        and row ``b`` attends to entry ``which[b]``'s first ``start[b]`` of
        them. ``last`` (B,) is each row's pooled position within ``ids``: the
        final layer then computes only those rows, and the projected (B, d)
        features are returned. With ``collect`` a list, each layer's (key,
        value) is appended to it instead (for a prefix; nothing is pooled).
        """
        import torch
        from torch.nn.functional import scaled_dot_product_attention

        b, length = ids.shape
        steps = torch.arange(length, device=ids.device)
        at = (start[:, None] + steps[None, :]).clamp(max=self.positions.shape[0] - 1)  # clamped: padding only
        x = self.tokens(ids) + self.positions[at]
        # True = may attend: the row's own prefix keys, and its own keys up to the query.
        mask = (steps[None, :] <= steps[:, None]).expand(b, 1, length, length)
        if past is not None:
            n_past = past[0][0].shape[2]
            own = torch.arange(n_past, device=ids.device)[None, :] < start[:, None]  # (B, P_max)
            mask = torch.cat([own[:, None, None, :].expand(b, 1, length, n_past), mask], dim=-1)
        rows = torch.arange(b, device=ids.device)
        for li, layer in enumerate(self.layers):
            final = last is not None and li == len(self.layers) - 1
            q, k, v = (t.unflatten(-1, (layer.heads, -1)).transpose(1, 2) for t in layer.qkv(layer.norm1(x)))
            if past is not None:
                k = torch.cat([past[li][0][which], k], dim=2)
                v = torch.cat([past[li][1][which], v], dim=2)
            if collect is not None:
                collect.append((k, v))
            m = mask
            if final:  # only the pooled token's output is needed from here on
                q, m, x = q[rows, :, last][:, :, None], mask[rows, :, last][:, :, None], x[rows, last][:, None]
            a = scaled_dot_product_attention(q, k, v, attn_mask=m, scale=layer.scale)
            x = x + layer.ls1(layer.out(a.transpose(1, 2).flatten(2)))
            x = x + layer.ls2(layer.mlp(layer.norm2(x)))
        if last is None:
            return None
        return self.project(self.final_norm(x[:, 0]))


def _prefix_ids(token_ids: Callable[[list[str]], list[list[int]]], pool, templates: Sequence[str]):
    """Each template's tokens before the noun: its text before ``{}``, tokenised, cut before the pooled token."""
    found = []
    for template in templates:
        row = token_ids([template.split("{}")[0].rstrip()])[0]
        p = pool(row)
        if p:
            found.append(tuple(row[:p]))
    return tuple(dict.fromkeys(found))


# -- Hugging Face CLIP ----------------------------------------------------------------


def hf_clip_tower(model, tokenizer, token_ids, templates: Sequence[str]) -> CausalTextTower | None:
    """The fast path for a ``transformers`` ``CLIPModel`` / ``CLIPTextModelWithProjection``, or None.

    Only the exact classes whose forward this reproduces qualify
    (``CLIPTextModel`` with ``CLIPEncoderLayer`` / ``CLIPAttention`` layers);
    the pooled position follows ``CLIPTextModel.forward``: the first
    ``eos_token_id``, or for configs with the legacy ``eos_token_id == 2`` the
    largest id.
    """
    try:
        from transformers.models.clip import modeling_clip as mc
    except ImportError:
        return None
    if type(model) not in (mc.CLIPModel, mc.CLIPTextModelWithProjection):
        return None
    text = model.text_model
    if type(text) is not mc.CLIPTextModel or type(text.embeddings) is not mc.CLIPTextEmbeddings:
        return None
    if any(type(layer) is not mc.CLIPEncoderLayer or type(layer.self_attn) is not mc.CLIPAttention
           for layer in text.encoder.layers):
        return None
    if getattr(tokenizer, "padding_side", "right") != "right":
        return None  # left padding shifts the plain forward's positions: not what runs here
    eos = text.eos_token_id
    pad = tokenizer.pad_token_id

    def pool(row: Sequence[int]) -> int | None:
        if eos == 2:  # argmax of the ids; a larger pad id would win in the padded plain forward
            top = max(row)
            return row.index(top) if pad is None or pad <= top else None
        return row.index(eos) if eos in row else None

    layers = [
        Layer(norm1=layer.layer_norm1,
              qkv=lambda h, a=layer.self_attn: (a.q_proj(h), a.k_proj(h), a.v_proj(h)),
              out=layer.self_attn.out_proj, norm2=layer.layer_norm2, mlp=layer.mlp,
              heads=layer.self_attn.num_heads, scale=layer.self_attn.scale)
        for layer in text.encoder.layers
    ]
    return CausalTextTower(
        tokens=text.embeddings.token_embedding,
        positions=text.embeddings.position_embedding.weight,
        layers=layers,
        final_norm=text.final_layer_norm,
        project=model.text_projection,
        pool=pool,
        prefixes=_prefix_ids(token_ids, pool, templates),
    )


# -- open_clip --------------------------------------------------------------------------


def open_clip_tower(model, token_ids, templates: Sequence[str]) -> CausalTextTower | None:
    """The fast path for an open_clip ``CLIP`` whose text tower is causal with
    ``argmax`` pooling (the OpenAI-style models), or None (SigLIP, CoCa, custom
    attention, ``CustomTextCLIP``)."""
    import torch

    try:
        from open_clip.transformer import ResidualAttentionBlock
    except ImportError:
        return None
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    if not all(hasattr(model, name) for name in needed) or getattr(model, "attn_mask", None) is None:
        return None
    if getattr(model, "text_pool_type", "argmax") != "argmax" or getattr(model, "cls_emb", None) is not None:
        return None
    blocks = list(model.transformer.resblocks)
    if any(type(b) is not ResidualAttentionBlock or type(b.attn) is not torch.nn.MultiheadAttention
           or not isinstance(getattr(b, "ln_attn", torch.nn.Identity()), torch.nn.Identity)
           or not b.attn.batch_first or not b.attn._qkv_same_embed_dim for b in blocks):
        return None
    if not getattr(model.transformer, "batch_first", True):
        return None
    mask = model.attn_mask
    if mask.ndim != 2 or not torch.equal(torch.isinf(mask), torch.ones_like(mask, dtype=torch.bool).triu(1)):
        return None  # not the plain causal mask

    def qkv(h, a):
        return torch.nn.functional.linear(h, a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)

    layers = [
        Layer(norm1=b.ln_1, qkv=lambda h, a=b.attn: qkv(h, a), out=b.attn.out_proj, norm2=b.ln_2,
              mlp=b.mlp, heads=b.attn.num_heads, scale=b.attn.head_dim ** -0.5, ls1=b.ls_1, ls2=b.ls_2)
        for b in blocks
    ]
    proj = model.text_projection
    project = proj if isinstance(proj, torch.nn.Module) else (lambda x: x @ proj)

    def pool(row: Sequence[int]) -> int:
        return max(range(len(row)), key=lambda i: (row[i], -i))  # torch's argmax: the first maximum

    return CausalTextTower(
        tokens=model.token_embedding,
        positions=model.positional_embedding,
        layers=layers,
        final_norm=model.ln_final,
        project=project,
        pool=pool,
        prefixes=_prefix_ids(token_ids, pool, templates),
    )
