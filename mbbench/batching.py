"""Batches in the two layouts every encoder understands, and how documents are grouped into them.

- `PaddedBatch`: `(batch, seq)` ids right-padded with an attention mask (models that need padding).
- `PackedBatch`: `(total_tokens,)` ids with `cu_seqlens` (unpadded models); no token is padding.

Every document appears in exactly one batch; real and padded token counts are both known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor  # (batch, seq) int64
    attention_mask: torch.Tensor  # (batch, seq) int64, 1 on real tokens
    real_tokens: int

    @property
    def padded_tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def num_documents(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "PaddedBatch":
        return PaddedBatch(self.input_ids.to(device), self.attention_mask.to(device), self.real_tokens)


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # (total,) int64
    cu_seqlens: torch.Tensor  # (docs + 1,) int32
    max_seqlen: int  # python int so the forward never syncs to read it
    position_ids: torch.Tensor  # (total,) int64, position inside each document

    @property
    def real_tokens(self) -> int:
        return self.input_ids.numel()

    padded_tokens = real_tokens

    @property
    def num_documents(self) -> int:
        return self.cu_seqlens.numel() - 1

    def to(self, device: torch.device | str) -> "PackedBatch":
        return PackedBatch(self.input_ids.to(device), self.cu_seqlens.to(device), self.max_seqlen,
                           self.position_ids.to(device))


Batch = PaddedBatch | PackedBatch


def pad_documents(docs: Sequence[torch.Tensor], pad_token_id: int, pad_to: int | None = None) -> PaddedBatch:
    """Right-pad documents to the longest one (or to `pad_to`, as the paper pads to 512/8192)."""
    seq = max(len(d) for d in docs) if pad_to is None else pad_to
    ids = torch.full((len(docs), seq), pad_token_id, dtype=torch.int64)
    mask = torch.zeros((len(docs), seq), dtype=torch.int64)
    for row, doc in enumerate(docs):
        ids[row, : len(doc)] = doc
        mask[row, : len(doc)] = 1
    return PaddedBatch(ids, mask, int(sum(len(d) for d in docs)))


def pack_documents(docs: Sequence[torch.Tensor]) -> PackedBatch:
    lengths = torch.tensor([len(d) for d in docs], dtype=torch.int32)
    cu = torch.zeros(len(docs) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    positions = torch.cat([torch.arange(len(d)) for d in docs])
    return PackedBatch(torch.cat(list(docs)).to(torch.int64), cu, int(lengths.max()), positions)


def group_by_count(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive groups of `batch_size` documents (the last may be smaller), in suite order."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return [list(range(start, min(start + batch_size, len(lengths)))) for start in range(0, len(lengths), batch_size)]


def group_by_tokens(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Consecutive groups whose total length stays within `token_budget` (a longer document goes alone)."""
    if token_budget < 1:
        raise ValueError(f"token budget must be >= 1, got {token_budget}")
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, length in enumerate(lengths):
        if current and used + length > token_budget:
            groups.append(current)
            current, used = [], 0
        current.append(index)
        used += length
    if current:
        groups.append(current)
    return groups
