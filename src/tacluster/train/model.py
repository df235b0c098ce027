"""``"tac"``'s fitter and model: neighbours of both views, the two heads trained
by cross-modal mutual distillation (METHOD.md stage 2), and the image head's
argmax for every image, fitted or new."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from tacluster._blocks import iter_blocks
from tacluster._device import resolve_device
from tacluster.cluster import neighbours
from tacluster.cluster.model import Assignment, Fitted, image_view
from tacluster.counterparts.side import TextFit, TextSide
from tacluster.train.heads import ClusterHead
from tacluster.train.loop import TrainSettings, head_probabilities, train_heads


@dataclass
class HeadsModel:
    """The trained image and text heads; images are assigned by the image head alone."""

    kind: ClassVar[str] = "heads"
    image_head: ClusterHead
    text_head: ClusterHead
    n_features_in: int
    feature_power: float
    text: TextSide
    needs_joint: ClassVar[bool] = False

    @property
    def n_clusters(self) -> int:
        return int(self.image_head.net[-1].out_features)

    def features(self, u, joint=None) -> tuple[list, list[float]]:
        """The image head's input, the power view ``u`` (what a split's refinement reads)."""
        return [u], [1.0]

    def assign(self, u, joint=None, *, proba: bool = False) -> Assignment:
        """Argmax and max of the image head on ``u`` (before ``feature_power``; see :func:`head_assignment`)."""
        return head_assignment(self.image_head, image_view(u, self.feature_power, lazy=True), proba=proba)

    def head_sizes(self, counterparts: np.ndarray) -> int:
        """How many clusters the text head uses on ``counterparts`` (its argmax, per block)."""
        used = np.zeros(self.n_clusters, dtype=bool)
        for sl in iter_blocks(counterparts.shape[0]):
            used[head_probabilities(self.text_head, counterparts[sl]).argmax(1)] = True
        return int(used.sum())

    def arrays(self) -> dict[str, np.ndarray]:
        out = dict(self.text.arrays())
        for prefix, head in (("image_head.", self.image_head), ("text_head.", self.text_head)):
            out.update({prefix + key: v.detach().cpu().numpy() for key, v in head.state_dict().items()})
        return out

    def config(self) -> dict:
        return {"model": self.kind, "feature_power": self.feature_power, "text_head_in": self.text.width,
                **self.text.config()}

    @classmethod
    def from_saved(cls, config: dict, arrays: dict[str, np.ndarray], params: dict, *, text: bool = True) -> "HeadsModel":
        text = TextSide.from_saved(config, arrays, params["tau"])
        d, k = int(config["n_features_in"]), int(config["n_clusters"])
        heads = []
        for prefix, width in (("image_head.", d), ("text_head.", int(config["text_head_in"]))):
            head = ClusterHead(width, k)
            state = {key[len(prefix):]: torch.from_numpy(v.copy()) for key, v in arrays.items() if key.startswith(prefix)}
            head.load_state_dict(state, strict=True)  # a mismatch: RuntimeError, "inconsistent" to the loader
            heads.append(head.eval())
        return cls(heads[0], heads[1], d, float(config.get("feature_power", params["feature_power"])), text)


def head_assignment(head: ClusterHead, x, *, proba: bool) -> Assignment:
    """Argmax and max of ``head`` on the rows ``x``; every probability only with ``proba``,
    else in blocks without the (n, K) matrix."""
    if proba:
        p = head_probabilities(head, x)
        return Assignment(p.argmax(axis=1).astype(np.int64), p.max(axis=1).astype(np.float32), p)
    labels = np.empty(x.shape[0], dtype=np.int64)
    conf = np.empty(x.shape[0], dtype=np.float32)
    for sl in iter_blocks(x.shape[0]):
        p = head_probabilities(head, x[sl])
        labels[sl], conf[sl] = p.argmax(1), p.max(1)
    return Assignment(labels, conf)


def fit_tac(u, k: int, *, text: TextFit, n_neighbors: int, knn_method: str, device: str, verbose: bool,
            n_epochs: int, min_steps: int, batch_size: int, learning_rate: float, temperature: float,
            balance_weight: float, feature_power: float, large: bool, seed: int, timings: dict) -> Fitted:
    """Neighbours of u and s, then the heads by mutual distillation (:class:`TrainSettings`).
    On a CUDA device an exact search runs in torch (at 50k x 512 on an H200 far
    faster than faiss-cpu)."""
    s = text.counterparts
    u = np.asarray(u, dtype=np.float32)  # a row view made whole: the neighbour search and training read all rows
    tic = time.perf_counter()
    n_nb = min(n_neighbors, u.shape[0] - 1)
    if resolve_device(device).startswith("cuda") and knn_method in ("auto", "exact"):
        nn_u, nn_s = (neighbours.knn_torch(x, n_nb, device="cuda") for x in (u, s))
    else:
        nn_u, nn_s = (neighbours.knn(x, n_nb, method=knn_method, seed=seed) for x in (u, s))
    timings["knn"] = time.perf_counter() - tic
    tic = time.perf_counter()
    settings = TrainSettings(n_epochs=n_epochs, min_steps=min_steps, batch_size=batch_size,
                             learning_rate=learning_rate, temperature=temperature, balance_weight=balance_weight)
    result = train_heads(u, s, nn_u, nn_s, k, settings, seed=seed + 2, device=device, progress=verbose)
    timings["train"] = time.perf_counter() - tic
    model = HeadsModel(result.image_head, result.text_head, u.shape[1], feature_power, text.side)
    return Fitted(model, head_assignment(model.image_head, u, proba=not large), {"loss_history": result.history})
