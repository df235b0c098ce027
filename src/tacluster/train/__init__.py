"""Training stage: the two cluster heads and cross-modal mutual distillation
(METHOD.md, TAC with training). Imports torch."""

from tacluster.train.heads import ClusterHead
from tacluster.train.loop import TrainResult, TrainSettings, head_probabilities, train_heads

__all__ = ["ClusterHead", "TrainResult", "TrainSettings", "head_probabilities", "train_heads"]
