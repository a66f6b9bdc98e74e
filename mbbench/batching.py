"""Batches in the two layouts every encoder understands, and how documents are grouped into them.

- `PaddedBatch`: `(batch, seq)` ids right-padded with an attention mask (models that need padding).
- `PackedBatch`: `(total_tokens,)` ids with `cu_seqlens` (unpadded models); no token is padding.

Every document appears in exactly one batch; real and padded token counts are both known.
A token-budget batch never holds more tokens than its budget (a longer document is a UserError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from mbbench.errors import UserError


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


def check_grouping(batch_size: int | None, token_budget: int | None) -> None:
    """Validate how documents are grouped: by count (`--batch-size`) or by tokens (`--token-budget`).

    Raises UserError when both are given (one would be silently ignored) or when either is < 1.
    """
    if batch_size is not None and token_budget is not None:
        raise UserError(f"--batch-size {batch_size} and --token-budget {token_budget} both given: a batch is "
                        "either a number of documents or a number of tokens; pass one")
    for option, value in (("--batch-size", batch_size), ("--token-budget", token_budget)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{option} must be a positive integer, got {value!r}")


def check_budget(lengths: Sequence[int], token_budget: int, documents: Sequence[int] | None = None,
                 source: str = "") -> None:
    """Raise UserError if a document is longer than `token_budget`, naming it, its length and the budget.

    `documents` gives the documents' own numbers (default: positions in `lengths`); `source` prefixes the
    message (e.g. "suite long-variable: ").
    """
    longest = max(lengths, default=0)
    if longest > token_budget:
        position = list(lengths).index(longest)
        number = documents[position] if documents is not None else position
        raise UserError(f"{source}document {number} has {longest} tokens, more than --token-budget "
                        f"{token_budget}; a budget of at least {longest} tokens fits every document")


def group_by_count(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive groups of `batch_size` documents (the last may be smaller), in suite order.

    Raises UserError for a batch size < 1.
    """
    check_grouping(batch_size, None)
    return [list(range(start, min(start + batch_size, len(lengths)))) for start in range(0, len(lengths), batch_size)]


def group_by_tokens(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Consecutive groups (suite order) whose total length stays within `token_budget` tokens.

    Raises UserError for a budget < 1 or when a document alone is longer than the budget (it would
    otherwise run in a batch larger than the budget), naming that document and the budget it needs.
    """
    check_grouping(None, token_budget)
    check_budget(lengths, token_budget)
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
