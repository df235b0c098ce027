"""Stage 2 of TAC: cross-modal mutual distillation of two cluster heads.

Loss (METHOD.md): L = D(P, Q^N) + D(Q, P^N) + L_con - w * (H(P) + H(Q)), with
D the cluster-level contrastive loss between the columns of two assignment
matrices, L_con = mean -log <p_i, q_i>, H the entropy of the mean assignment,
w = 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from tacluster._device import resolve_device
from tacluster._progress import Progress
from tacluster._threads import one_torch_thread
from tacluster.train.heads import ClusterHead

_EPS = 1e-8


def cluster_contrastive_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cluster-level contrast between the columns of ``a`` and ``b`` (both (n, K)).

    The 2K columns are normalised; column k of ``a`` and column k of ``b`` are
    a positive pair, every other column a negative; cross entropy over the
    2K - 1 others, averaged over all 2K columns.
    """
    k = a.shape[1]
    cols = F.normalize(torch.cat([a.T, b.T], dim=0), dim=1)
    sim = cols @ cols.T / temperature
    sim = sim.masked_fill(torch.eye(2 * k, dtype=torch.bool, device=sim.device), float("-inf"))
    target = torch.cat([torch.arange(k, 2 * k), torch.arange(0, k)]).to(sim.device)
    return F.cross_entropy(sim, target)


def consistency_loss(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over samples of -log <p_i, q_i>: both views agree and become one-hot."""
    return -torch.log((p * q).sum(dim=1).clamp_min(_EPS)).mean()


def balance_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean assignment (cluster-size distribution) of ``p`` (n, K)."""
    m = p.mean(dim=0).clamp_min(_EPS)
    return -(m * torch.log(m)).sum()


@dataclass(frozen=True)
class TrainSettings:
    """Settings of the mutual-distillation training (METHOD.md; defaults are the paper's).

    Attributes
    ----------
    n_epochs : int
        Passes over the data (paper: 20).
    min_steps : int
        tacluster's addition: at least this many optimiser steps in total, so
        small collections (a few hundred images = one batch per epoch) are
        trained as long as a 5,000-image set is with the paper's 20 epochs.
    batch_size : int
        Rows per step (the last partial batch of an epoch is dropped).
    learning_rate : float
        Adam's learning rate (betas 0.9, 0.99).
    temperature : float
        Of the cluster-level contrastive loss.
    balance_weight : float
        Weight w of the entropy of the mean assignment.
    """

    n_epochs: int = 20
    min_steps: int = 200
    batch_size: int = 512
    learning_rate: float = 1e-3
    temperature: float = 0.5
    balance_weight: float = 5.0


@dataclass
class TrainResult:
    image_head: ClusterHead
    text_head: ClusterHead
    history: list[dict] = field(default_factory=list)  # one dict of mean losses per epoch
    n_steps: int = 0


def train_heads(
    image_embeddings: np.ndarray,
    counterparts: np.ndarray,
    image_neighbours: np.ndarray,
    text_neighbours: np.ndarray,
    n_clusters: int,
    settings: TrainSettings | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> TrainResult:
    """Train the image head f and the text head g by cross-modal mutual distillation.

    Parameters
    ----------
    image_embeddings : ndarray of shape (n_samples, d_u)
    counterparts : ndarray of shape (n_samples, d_s)
    image_neighbours, text_neighbours : ndarray of shape (n_samples, n_neighbors)
        Nearest neighbours of each sample on u and on s (self excluded).
    settings : TrainSettings, optional
        Epochs, batch, optimiser and loss settings (default: the paper's).

    Returns
    -------
    TrainResult
        The trained heads (in eval mode, on CPU) and the per-epoch loss history.
        The last epoch's heads are kept, as in the paper.
    """
    dev = torch.device(resolve_device(device))
    # The configured torch threads, never dropped by the machine's load (that
    # made a seed's result depend on the load at that moment). One thread would
    # also make it independent of the core count, but measured 49.6 s instead of
    # 35.8 s on the 50k core world (2 cores) and far more on many cores, while
    # the neighbour lists still depend on the thread count (docs/stability.md).
    cfg = settings or TrainSettings()
    n = image_embeddings.shape[0]
    u = _feature_tensor(image_embeddings).to(dev)
    s = _feature_tensor(counterparts).to(dev)
    nn_u = torch.from_numpy(np.ascontiguousarray(image_neighbours, dtype=np.int64)).to(dev)
    nn_s = torch.from_numpy(np.ascontiguousarray(text_neighbours, dtype=np.int64)).to(dev)

    # One seed drives initialisation, shuffling and neighbour sampling; the
    # global torch RNG is left as the caller had it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        f = ClusterHead(u.shape[1], n_clusters).to(dev)
        g = ClusterHead(s.shape[1], n_clusters).to(dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(list(f.parameters()) + list(g.parameters()), lr=cfg.learning_rate, betas=(0.9, 0.99))

    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)  # drop the last partial batch (BatchNorm needs >1 row)
    epochs = max(cfg.n_epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    history: list[dict] = []
    f.train()
    g.train()
    with Progress(epochs, "training heads", "epoch", enabled=progress, leave=False) as bar:
        for _ in range(epochs):
            history.append(_epoch(f, g, opt, (u, s), (nn_u, nn_s), gen, bs, steps_per_epoch, cfg))
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
            bar.update()
    f.eval().cpu()
    g.eval().cpu()
    return TrainResult(image_head=f, text_head=g, history=history, n_steps=epochs * steps_per_epoch)


def _epoch(f, g, opt, views, neighbours, gen, bs: int, steps: int, cfg: TrainSettings) -> dict:
    """One pass: each sample, a random neighbour of it in the other view, both heads' losses.

    Returns the epoch's mean losses (one device sync per epoch)."""
    (u, s), (nn_u, nn_s) = views, neighbours
    dev, n = u.device, u.shape[0]
    perm = torch.randperm(n, generator=gen).to(dev)
    picks = torch.randint(0, nn_u.shape[1], (2, n), generator=gen).to(dev)
    sums = torch.zeros(4, device=dev)  # loss, distill, consistency, entropy
    for step in range(steps):
        idx = perm[step * bs : (step + 1) * bs]
        p, q = f(u[idx]), g(s[idx])
        p_n = f(u[nn_u[idx, picks[0, idx]]])
        q_n = g(s[nn_s[idx, picks[1, idx]]])
        l_dis = cluster_contrastive_loss(p, q_n, cfg.temperature) + cluster_contrastive_loss(q, p_n, cfg.temperature)
        l_con = consistency_loss(p, q)
        ent = balance_entropy(p) + balance_entropy(q)
        loss = l_dis + l_con - cfg.balance_weight * ent
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums += torch.stack([loss, l_dis, l_con, ent]).detach()
    return dict(zip(("loss", "distill", "consistency", "entropy"), (sums / steps).tolist()))


def _feature_tensor(x: np.ndarray) -> torch.Tensor:
    """Features as a float32 tensor sharing the array's memory (the estimator
    passes float32 unit rows; a read-only memmap is copied once)."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if not arr.flags.writeable:  # torch wants a writable buffer
        arr = arr.copy()
    return torch.from_numpy(arr)


def head_probabilities(head: ClusterHead, x: np.ndarray, *, batch: int = 65536) -> np.ndarray:
    """Cluster probabilities of a trained head, shape (n, K), float32 (one
    torch thread, so the argmax never depends on the machine's core count)."""
    head.eval()
    out = []
    with torch.inference_mode(), one_torch_thread():
        for start in range(0, x.shape[0], batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch], dtype=np.float32))
            out.append(head(xb).numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), dtype=np.float32)
