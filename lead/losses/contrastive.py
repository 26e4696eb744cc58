"""The contrastive loss of dense retrieval: the gold passage against the candidate set.

Every score matrix has one row per query and one column per candidate passage; passages come
group by group, each query's positive first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gold_labels(
    num_queries: int, group_size: int, offset: int = 0, *, device: torch.device | None = None
) -> Tensor:
    """Column of each query's positive: passages come group by group, positive first.

    `offset` is the column of this process's first passage in the gathered candidate set.
    """
    return offset + torch.arange(num_queries, device=device) * group_size


def own_group(scores: Tensor, group_size: int) -> Tensor:
    """Slice a (B, B*g) matrix of local scores to each query's own g passages -> (B, g)."""
    num_queries = scores.shape[0]
    if scores.shape[1] != num_queries * group_size:
        raise ValueError(
            f"expected {num_queries * group_size} candidates for {num_queries} queries in "
            f"groups of {group_size}, got {scores.shape[1]}"
        )
    rows = torch.arange(num_queries, device=scores.device)
    return scores.view(num_queries, num_queries, group_size)[rows, rows]


def contrastive_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the gold column, mean over queries (computed in at least fp32)."""
    return F.cross_entropy(full_precision(scores), labels)


def full_precision(scores: Tensor) -> Tensor:
    """Scores as fp32 (or the fp64 they already are): softmaxes of peaked distributions lose
    their tails in bf16's 8-bit significand."""
    return scores if scores.dtype in (torch.float32, torch.float64) else scores.float()
