"""One max-batch trial in this (fresh) process: what `python -m mbbench.max_batch_trial` runs for the probe of
`bench.trial.subprocess_probe`.

The child resolves the names it is given into a plan (`plan.resolve`, measurement "max_batch") and builds the model
through `loading`, as a run does (its threads, its kernels), then runs one forward pass of `size` as the engine's
first call: a batch of `size` documents at the suite's maximum length, or a packed token budget of exactly `size`
tokens. It prints one JSON line: ok with the peak bytes, oom (`errors.is_oom`), or error. The accuracy gate is
left out: the fp32 twin would add its memory to the peak the trial measures.
"""

from __future__ import annotations

import json
import sys

import torch

from mbbench import loading
from mbbench.batching import Batch
from mbbench.bench.trial import FAKE_OOMS, TrialSpec, fixed_length_batch, token_budget_batch
from mbbench.errors import is_oom
from mbbench.models.encoders import Encoder
from mbbench.plan import Plan, RunConfig, max_batch_limits, resolve
from mbbench.suites import load_suite


def trial_plan(spec: TrialSpec) -> Plan:
    """The plan of the model a trial builds: the parent's names, resolved here on the trial's device."""
    config = RunConfig(model=spec.model, suite=spec.suite, backend=spec.backend, dtype=spec.dtype, device=spec.device,
                       tiny=spec.tiny)
    return resolve(config, "max_batch", limits=max_batch_limits())


def trial_batch(spec: TrialSpec, size: int, encoder: Encoder) -> tuple[Batch, int]:
    """The inputs for one trial and their token count, exactly what the record says: a packed batch of exactly
    `size` tokens from the suite's documents (mode "tokens"), or `size` documents of the suite's maximum length
    (the paper's memory column). A tiny model's ids are folded into its vocabulary."""
    suite = load_suite(spec.suite)
    if spec.mode == "tokens":
        batch, tokens = token_budget_batch(suite, size), size
    else:
        pad = 0 if spec.tiny else encoder.pad_token_id
        batch = fixed_length_batch(size, suite.definition.max_length, encoder.layout, pad)
        tokens = size * suite.definition.max_length
    if spec.tiny:
        batch.input_ids.remainder_(encoder.vocab_size)
    return batch, tokens


def run_trial(spec: TrialSpec, size: int) -> dict:
    """One forward pass in this process; reports ok (with peak bytes) / oom (`is_oom`) / error."""
    device = torch.device(spec.device)
    if device.type == "cuda" and spec.memory_limit_bytes:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, spec.memory_limit_bytes / total), device)
    try:
        if spec.fake_error:
            raise ValueError("injected non-OOM failure")
        built = loading.build(trial_plan(spec).model_plan)
        batch, tokens = trial_batch(spec, size, built.encoder)
        if spec.fake_limit_tokens is not None and tokens > spec.fake_limit_tokens:
            error = torch.cuda.OutOfMemoryError if spec.fake_oom == "typed" else RuntimeError
            raise error(FAKE_OOMS[spec.fake_oom])
        if device.type == "cuda":  # the peak of the forward pass, the weights included
            torch.cuda.reset_peak_memory_stats(device)
        loading.ready(built, [batch], gate=False)  # the engine's first call is the trial's forward pass
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
