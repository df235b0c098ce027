"""The cluster heads of TAC's stage 2: Linear -> BatchNorm -> ReLU -> Linear -> softmax."""

from __future__ import annotations

import torch
from torch import nn


class ClusterHead(nn.Module):
    """Maps an embedding (width ``d``) to K cluster probabilities.

    Weights are drawn from a truncated normal with std 0.02, biases zero (as in
    the paper).
    """

    def __init__(self, in_features: int, n_clusters: int, hidden: int | None = None):
        super().__init__()
        hidden = in_features if hidden is None else hidden
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, n_clusters),
        )
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities of shape (n, K)."""
        return torch.softmax(self.net(x), dim=1)
