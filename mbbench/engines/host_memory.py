"""Will an exporting engine's run fit in this machine's memory? Checked before it is prepared, not learnt from
the kernel's OOM killer (which takes the whole process, and every side of a comparison measured so far, with it).

transformers' padded ModernBERT exports attention as explicit matrices: each layer holds several fp32
(batch, heads, seq, seq) score tensors at once, so an engine's peak host memory grows with seq². torch's own
SDPA (flash on CPU) does not: transformers on torch ran one 8,192-token document in 2.4 GB.

Measured (peak RSS of one process running the cached export of hf-modernbert-base, fp32, 2 threads, one document
of 2,048 and of 4,096 tokens, AMD EPYC, onnxruntime 1.32, openvino 2026.4, 2026-12-07), fitted as
fixed + copies × (batch · heads · seq² · 4 bytes), the fixed part in units of the model's weight bytes (0.6 GB):

| engine | 2,048 tokens | 4,096 tokens | copies | fixed |
| --- | --- | --- | --- | --- |
| onnxruntime | 2.0 GB | 5.7 GB | 6.2 | 0.8 GB (1.3 x weights) |
| openvino | 3.0 GB | 8.5 GB | 9.1 | 1.2 GB (2 x weights) |

So one 8,192-token document needs about 21 GB on ONNX Runtime and 30 GB on OpenVINO. The fit underestimates
there: ONNX Runtime on one 8,192-token document was killed at 24.4 GB RSS on a 24 GB machine (its memory arena
grows in doubling chunks, and the parity check runs torch's forward in the same process), hence `MARGIN`.
"""

from __future__ import annotations

from pathlib import Path

from mbbench.batching import Batch
from mbbench.engines.base import EngineUnavailable
from mbbench.formatting import plural

ATTENTION_COPIES = {"onnxruntime": 6.2, "openvino": 9.1}  # fp32 score matrices alive at once (measured, above)
WEIGHT_COPIES = {"onnxruntime": 1.3, "openvino": 2.0}  # the fixed part: weights, runtime, graph (measured, above)
MARGIN = 1.25  # the estimate times this must fit: the fit's error at 8,192 tokens (above) and torch's parity pass
MEMINFO = Path("/proc/meminfo")


def available_bytes(meminfo: Path = MEMINFO) -> int | None:
    """MemAvailable of this Linux machine in bytes (what can be allocated without swapping), None elsewhere."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in KiB
    except (OSError, ValueError, IndexError):  # unreadable, or a line of another format: unknown
        return None
    return None


def peak_bytes(engine: str, batches: list[Batch], heads: int, itemsize: int, weight_bytes: int) -> float | None:
    """Estimated peak host bytes of `engine` over padded `batches` ((batch, seq) input_ids; the largest batch · seq²
    decides) of a model with `heads` attention heads and `weight_bytes` of weights; None for an engine whose
    memory does not grow with seq² (torch's)."""
    if engine not in ATTENTION_COPIES:
        return None
    largest = max(b.input_ids.shape[0] * b.input_ids.shape[1] ** 2 for b in batches)  # batch · seq²
    return WEIGHT_COPIES[engine] * weight_bytes + ATTENTION_COPIES[engine] * largest * heads * itemsize


def check_fits(engine: str, batches: list[Batch], heads: int, itemsize: int, weight_bytes: int,
               available: int | None) -> None:
    """Raise EngineUnavailable when `engine`'s estimated peak over `batches` (see `peak_bytes`), times `MARGIN`,
    exceeds `available` bytes (None: unknown, nothing is refused)."""
    need = peak_bytes(engine, batches, heads, itemsize, weight_bytes)
    if need is None or available is None or need * MARGIN <= available:
        return
    worst = max(batches, key=lambda b: b.input_ids.shape[0] * b.input_ids.shape[1] ** 2)
    rows, seq = worst.input_ids.shape
    raise EngineUnavailable(
        f"engine {engine} would need about {need / 2**30:.0f} GiB of host memory ({need * MARGIN / 2**30:.0f} GiB with "
        f"the {MARGIN:g}x margin for the estimate's error) on a batch of "
        f"{plural(rows, 'row')} x {seq} tokens (transformers' exported attention keeps "
        f"{ATTENTION_COPIES[engine]:g} fp32 score matrices of batch x {heads} heads x seq² alive; measured, "
        f"engines/host_memory.py), and {available / 2**30:.0f} GiB is available: not run, rather than killed by "
        "the OOM killer")
