"""Dynamic batching as embedding servers do it: a token budget, a request cap and a maximum wait.

When the worker is free, the batcher takes queued requests into one batch while it fits:

- token budget (TEI's `--max-batch-tokens`, default 16384). A padded model's batch costs
  rows x longest (every row is padded to the longest); the unpadded reference model's batch costs
  the sum of lengths (packed, no padding). This is TEI's own accounting (core/src/queue.rs).
- at most `max_batch_requests` requests (TEI's `--max-batch-requests`: unset by default, so the
  budget alone limits a batch; infinity's `--batch-size` is 32).
- order: first come first served, stopping at the first request that does not fit (TEI). With
  `sort_by_length` (infinity, for padded models) the oldest requests are sorted by length, cut into
  consecutive batches that fit, and the batch holding the oldest request goes (similar lengths
  waste less padding, and the oldest request is never passed over, so nothing starves).
- maximum wait: a batch that is not full waits for more requests, but never past the oldest
  queued request's arrival + `max_wait_s`. TEI does not wait (it batches whatever is queued when
  the backend asks), hence the default 0; infinity's 5 ms `batch_delay` is a similar knob.

A batch never holds more tokens than the budget; a request longer than the budget alone could never
run and is refused up front (`check_lengths`, UserError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mbbench.bench.loadgen import Request
from mbbench.errors import UserError

TEI_MAX_BATCH_TOKENS = 16384  # text-embeddings-router --max-batch-tokens default (TEI CLI docs)
TEI_MAX_WAIT_S = 0.0  # TEI has no wait: the next batch is formed as soon as the backend is free
INFINITY_MAX_BATCH_REQUESTS = 32  # infinity_emb --batch-size default
INFINITY_BATCH_DELAY_S = 0.005  # infinity_emb BatchHandler batch_delay default
SORT_WINDOW_BATCHES = 8  # infinity sorts up to 8 batches' worth of queued requests (max_n_batches)


def batch_tokens(lengths: Sequence[int], padded: bool) -> int:
    """Tokens a batch costs against the budget: rows x longest when padded, else the sum of lengths."""
    if not lengths:
        return 0
    return len(lengths) * max(lengths) if padded else sum(lengths)


@dataclass(frozen=True)
class RequestBatch:
    """Requests dispatched together to the model at `dispatch_s` (the model runs them as one `batching.Batch`);
    `tokens` is what the budget counts."""

    requests: tuple[Request, ...]
    dispatch_s: float
    padded: bool

    @property
    def lengths(self) -> list[int]:
        return [r.length for r in self.requests]

    @property
    def size(self) -> int:
        return len(self.requests)

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def tokens(self) -> int:
        """Tokens the model processes: padded (rows x longest) or packed (sum)."""
        return batch_tokens(self.lengths, self.padded)

    @property
    def documents(self) -> list[int]:
        return [r.document for r in self.requests]


@dataclass(frozen=True)
class Batcher:
    """The batching policy (settings only; the queue lives in the serving loop).

    Raises ValueError for a budget < 1, max_batch_requests < 1 or a negative wait.
    """

    max_batch_tokens: int = TEI_MAX_BATCH_TOKENS
    max_batch_requests: int | None = None
    max_wait_s: float = TEI_MAX_WAIT_S
    padded: bool = False  # False: the unpadded reference model (packed); True: pad to the longest
    sort_by_length: bool = False  # padded models only make use of it, but it is allowed either way

    def __post_init__(self) -> None:
        if self.max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        if self.max_batch_requests is not None and self.max_batch_requests < 1:
            raise ValueError(f"max_batch_requests must be >= 1 or None, got {self.max_batch_requests}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0 seconds, got {self.max_wait_s}")

    @property
    def layout(self) -> str:
        return "padded" if self.padded else "packed"

    def check_lengths(self, lengths: Sequence[int]) -> None:
        """Raise UserError if a request alone exceeds the budget (it could never be batched)."""
        longest = max(lengths, default=0)
        if longest > self.max_batch_tokens:
            raise UserError(f"a request of {longest} tokens exceeds the batch token budget "
                            f"{self.max_batch_tokens}: no batch could hold it; raise the budget to at "
                            f"least {longest} or use a suite of shorter documents")

    def fits(self, lengths: Sequence[int]) -> bool:
        """Whether requests of these lengths make one admissible batch (budget and request cap)."""
        if self.max_batch_requests is not None and len(lengths) > self.max_batch_requests:
            return False
        return batch_tokens(lengths, self.padded) <= self.max_batch_tokens

    def select(self, waiting: Sequence[Request]) -> list[Request]:
        """The next batch from `waiting` (arrival order, non-empty): never over the budget.

        Raises UserError when the oldest request alone exceeds the budget.
        """
        if not waiting:
            raise ValueError("no request waiting")
        self.check_lengths([waiting[0].length])
        if self.sort_by_length:
            return self._select_sorted(waiting)
        return self._take_while_fits(waiting)

    def is_full(self, waiting: Sequence[Request]) -> bool:
        """Whether waiting longer cannot grow the next batch: it already leaves a request out."""
        chosen = len(self.select(waiting))
        return chosen < len(waiting) or chosen == self.max_batch_requests

    def _take_while_fits(self, ordered: Sequence[Request]) -> list[Request]:
        """Requests from the front while the batch fits; stops at the first that does not (TEI)."""
        chosen: list[Request] = []
        longest = used = 0
        for request in ordered:
            if self.max_batch_requests is not None and len(chosen) == self.max_batch_requests:
                break
            longest_after = max(longest, request.length)
            cost = (len(chosen) + 1) * longest_after if self.padded else used + request.length
            if cost > self.max_batch_tokens:
                break
            chosen.append(request)
            longest, used = longest_after, used + request.length
        return chosen

    def _select_sorted(self, waiting: Sequence[Request]) -> list[Request]:
        """Sort the oldest requests by length, cut them into batches that fit, take the oldest's batch."""
        window = len(waiting) if self.max_batch_requests is None else self.max_batch_requests * SORT_WINDOW_BATCHES
        by_length = sorted(waiting[:window], key=lambda r: (r.length, r.id))
        oldest = waiting[0]
        while by_length:
            batch = self._take_while_fits(by_length)
            if oldest in batch:
                return batch
            by_length = by_length[len(batch):]
        raise AssertionError("the oldest request is in the window")  # unreachable: check_lengths passed
