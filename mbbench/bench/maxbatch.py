"""OOM-safe maximum batch search: grow geometrically, then bisect, one fresh process per trial.

The search is pure logic over a `probe(size) -> Trial`; only a probe that reports "oom" means
"too big". Any other error raised by the probe stops the search and propagates. The real probe
(`subprocess_probe`) runs each trial in a new Python process (`python -m mbbench.bench.maxbatch`)
so one OOM cannot fragment or poison the allocator for the next trial; only
`torch.cuda.OutOfMemoryError`, caught by type, is reported as "oom".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from mbbench.errors import UserError


@dataclass
class Trial:
    size: int
    status: str  # "ok" or "oom"
    peak_bytes: int | None = None
    seconds: float = 0.0


@dataclass
class SearchResult:
    largest_ok: int  # 0 when even the smallest size failed
    granularity: int
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0

    def with_margin(self, margin: float) -> int:
        """The result less a safety margin (a fraction), rounded down to the granularity."""
        reduced = int(self.largest_ok * (1.0 - margin))
        return (reduced // self.granularity) * self.granularity

    @property
    def peak_bytes(self) -> int | None:
        return next((t.peak_bytes for t in self.trials if t.size == self.largest_ok and t.status == "ok"), None)


class TrialError(RuntimeError):
    """A trial failed for a reason other than running out of memory: the search stops."""


def search(probe: Callable[[int], Trial], granularity: int = 2, start: int = 1, upper: int | None = None
           ) -> SearchResult:
    """Largest size (a multiple of `granularity`) for which `probe` succeeds.

    Sizes are k * granularity; k doubles from `start` until a failure (or `upper`), then the gap
    between the last success and the first failure is bisected. Trials: about 2 * log2(limit) + 3.
    """
    if granularity < 1 or start < 1:
        raise UserError("granularity and start must be >= 1")
    began = time.perf_counter()
    trials: list[Trial] = []

    def fits(k: int) -> bool:
        trial = probe(k * granularity)
        trials.append(trial)
        return trial.status == "ok"

    k_max = None if upper is None else upper // granularity
    low, high, k = 0, None, start  # invariant: low fits (0 trivially), high does not (None: unknown)
    while high is None:
        if k_max is not None and k >= k_max:
            k = k_max
            if fits(k):
                low = k
                break
            high = k
            break
        if fits(k):
            low, k = k, k * 2
        else:
            high = k
    if high is not None:
        while high - low > 1:
            mid = (low + high) // 2
            if fits(mid):
                low = mid
            else:
                high = mid
    return SearchResult(low * granularity, granularity, trials, time.perf_counter() - began)


def synthetic_probe(limit: int, peak_per_item: int = 1) -> Callable[[int], Trial]:
    """A probe that 'runs out of memory' above `limit`: the CPU twin of a real allocator."""
    def probe(size: int) -> Trial:
        return Trial(size, "ok" if size <= limit else "oom", size * peak_per_item if size <= limit else None)
    return probe


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
    fake_limit_tokens: int | None = None  # tests: raise a CUDA OOM above this many tokens
    fake_error: bool = False  # tests: raise a non-OOM error


def subprocess_probe(spec: TrialSpec, timeout: float = 600.0) -> Callable[[int], Trial]:
    def probe(size: int) -> Trial:
        payload = json.dumps({**asdict(spec), "size": size})
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mbbench.bench.maxbatch", payload], capture_output=True,
                              text=True, timeout=timeout)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise TrialError(f"trial at size {size} failed (exit {done.returncode}): "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}")
        answer = json.loads(lines[-1])
        if answer["status"] == "error":
            raise TrialError(f"trial at size {size} failed: {answer['error']}")
        return Trial(size, answer["status"], answer.get("peak_bytes"), time.perf_counter() - began)
    return probe


def _trial_batch(spec: TrialSpec, size: int, pad_token_id: int, layout: str):
    """The inputs for one trial, built from the suite's own documents."""
    from mbbench.suites import load_suite, make_batches

    suite = load_suite(spec.suite)
    length = suite.definition.max_length
    if spec.mode == "tokens":
        indices, used = [], 0
        while used < size:  # documents in suite order (cycling) until the budget is filled
            index = len(indices) % suite.definition.documents
            indices.append(index)
            used += suite.lengths[index]
        [batch] = make_batches(suite, indices, "packed", token_budget=max(used, 1))
        return batch, used
    # fixed-length documents at the suite's maximum, as the paper measures its memory column
    from mbbench.batching import pack_documents, pad_documents
    import torch

    docs = [torch.randint(100, 16000, (length,), generator=torch.Generator().manual_seed(i)) for i in range(size)]
    batch = pack_documents(docs) if layout == "packed" else pad_documents(docs, pad_token_id)
    return batch, size * length


def run_trial(spec: TrialSpec, size: int) -> dict:
    """One forward pass in this process; reports ok / oom (by type) / error."""
    import torch

    from mbbench.dtypes import parse_dtype
    from mbbench.models import registry

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
            raise torch.cuda.OutOfMemoryError(f"injected: {tokens} tokens > {spec.fake_limit_tokens}")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            encoder(batch.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        return {"status": "ok", "peak_bytes": peak}
    except torch.cuda.OutOfMemoryError:
        return {"status": "oom"}
    except Exception as error:  # anything else is a real failure, reported, never counted as "too big"
        return {"status": "error", "error": f"{type(error).__name__}: {error}"}


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    size = request.pop("size")
    print(json.dumps(run_trial(TrialSpec(**request), size)), flush=True)
