"""The probe of a max-batch search: each trial in a fresh process (`python -m mbbench.max_batch_trial`, which builds
the model through `loading` and runs one forward pass of `size`), and the batches a trial runs.

A trial prints one JSON line: ok with the peak bytes, oom (`errors.is_oom`), or error. Names cross the process
boundary (model, suite path, dtype, backend), so the child resolves them itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from mbbench.batching import PackedBatch, PaddedBatch, pack_documents
from mbbench.bench.maxbatch import Trial, TrialError


TRIAL_MODULE = "mbbench.max_batch_trial"  # what a trial process runs (`python -m`)
# The forms an out-of-memory takes on CUDA, for tests of the classification (`TrialSpec.fake_oom`).
FAKE_OOMS = {
    "typed": "CUDA out of memory. Tried to allocate 2.00 GiB (injected)",
    "cuda-error": "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported (injected)",
    "cublas": "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)` (injected)",
}


@dataclass(frozen=True)
class TrialSpec:
    """Everything a fresh process needs to run one forward pass of `size` (batch or token budget)."""

    model: str
    suite: str
    dtype: str
    backend: str
    device: str
    mode: str  # "batch": size documents of the suite's maximum length; "tokens": a packed token budget
    tiny: bool = False
    memory_limit_bytes: int | None = None
    fake_limit_tokens: int | None = None  # tests: raise an OOM above this many tokens
    fake_error: bool = False  # tests: raise a non-OOM error
    fake_oom: str = "typed"  # tests: which form the injected OOM takes (a key of FAKE_OOMS)


def subprocess_probe(spec: TrialSpec, timeout: float = 600.0) -> Callable[[int], Trial]:
    """A probe that runs each trial in a fresh `python -m mbbench.max_batch_trial` process.

    Raises TrialError when the process fails or reports a non-OOM error; `timeout` is in seconds.
    """
    def probe(size: int) -> Trial:
        payload = json.dumps({**asdict(spec), "size": size})
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", TRIAL_MODULE, payload], capture_output=True,
                              text=True, timeout=timeout)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise TrialError(f"trial at size {size} failed (exit {done.returncode}): "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}")
        answer = json.loads(lines[-1])
        if answer["status"] == "error":
            raise TrialError(f"trial at size {size} failed: {answer['error']}")
        return Trial(size, answer["status"], answer.get("peak_bytes"), time.perf_counter() - began,
                     answer.get("detail"))
    return probe


def fixed_length_batch(size: int, length: int, layout: str, pad_token_id: int = 0, seed: int = 0):
    """`size` documents of `length` random ids in [100, 16000) (the paper's range), built in one call.

    Packed: ids `(size * length,)`, cu_seqlens `(size + 1,)` int32, positions `(size * length,)`;
    padded: ids and an all-ones mask `(size, length)` (no row is padded; `pad_token_id` is unused).
    """
    ids = torch.randint(100, 16000, (size, length), generator=torch.Generator().manual_seed(seed))
    if layout == "packed":
        cu = torch.arange(0, (size + 1) * length, length, dtype=torch.int32)
        return PackedBatch(ids.reshape(-1), cu, length, torch.arange(length).repeat(size))
    return PaddedBatch(ids, torch.ones_like(ids), size * length)


def token_budget_batch(suite, size: int) -> PackedBatch:
    """Exactly `size` tokens, packed: the suite's documents in order (cycling) while whole ones fit, then the
    next one's first tokens to fill the rest. Whole documents alone overshot the budget by up to one document
    (15% on long-variable), so a trial ran more tokens than its record said (issue 26); the cut document is
    an ordinary shorter one, within the suite's lengths."""
    docs, used = [], 0
    while used < size:
        document = suite.document(len(docs) % suite.definition.documents)[:size - used]
        docs.append(document)
        used += len(document)
    return pack_documents(docs)
