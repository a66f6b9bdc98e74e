"""One max-batch trial in a fresh process: what `python -m mbbench.bench.trial` runs, and the probe that starts it.

A trial builds the model, runs one forward pass of `size` (a batch of documents at the suite's maximum length,
or a packed token budget) and prints one JSON line: ok with the peak bytes, oom (`errors.is_oom`), or error.
Names cross the process boundary (model, suite path, dtype, backend), so the child resolves them itself.
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
from mbbench.errors import is_oom
from mbbench.dtypes import parse_dtype
from mbbench.models import registry
from mbbench.suites import load_suite


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
    """A probe that runs each trial in a fresh `python -m mbbench.bench.trial` process.

    Raises TrialError when the process fails or reports a non-OOM error; `timeout` is in seconds.
    """
    def probe(size: int) -> Trial:
        payload = json.dumps({**asdict(spec), "size": size})
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mbbench.bench.trial", payload], capture_output=True,
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


def _trial_batch(spec: TrialSpec, size: int, pad_token_id: int, layout: str):
    """The inputs for one trial and their token count, exactly what the record says: a packed batch of exactly
    `size` tokens from the suite's documents (mode "tokens"), or `size` documents of the suite's maximum
    length (the paper's memory column)."""
    suite = load_suite(spec.suite)
    if spec.mode == "tokens":
        batch = token_budget_batch(suite, size)
        return batch, batch.real_tokens
    return fixed_length_batch(size, suite.definition.max_length, layout, pad_token_id), \
        size * suite.definition.max_length


def run_trial(spec: TrialSpec, size: int) -> dict:
    """One forward pass in this process; reports ok (with peak bytes) / oom (`is_oom`) / error."""
    device = torch.device(spec.device)
    if device.type == "cuda" and spec.memory_limit_bytes:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, spec.memory_limit_bytes / total), device)
    try:
        if spec.fake_error:
            raise ValueError("injected non-OOM failure")
        encoder = registry.build_encoder(spec.model, registry.BuildOptions(spec.device, parse_dtype(spec.dtype),
                                                                           spec.backend), tiny=spec.tiny)
        pad = 0 if spec.tiny else (getattr(encoder.module.config, "pad_token_id", 0) or 0)
        batch, tokens = _trial_batch(spec, size, pad, encoder.layout)
        if spec.tiny:
            batch.input_ids.remainder_(encoder.module.config.vocab_size)
        if spec.fake_limit_tokens is not None and tokens > spec.fake_limit_tokens:
            error = torch.cuda.OutOfMemoryError if spec.fake_oom == "typed" else RuntimeError
            raise error(FAKE_OOMS[spec.fake_oom])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            encoder(batch.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        return {"status": "ok", "peak_bytes": peak}
    except Exception as error:  # only an OOM means "too big"; anything else is a real failure, reported
        if is_oom(error):
            typed = isinstance(error, torch.cuda.OutOfMemoryError)
            return {"status": "oom", "detail": None if typed else f"{type(error).__name__}: {str(error)[:300]}"}
        return {"status": "error", "error": f"{type(error).__name__}: {error}"}


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    size = request.pop("size")
    print(json.dumps(run_trial(TrialSpec(**request), size)), flush=True)
