"""A plan's model as the latency and serving loops call it: built once, its load timed, one forward callable.

`load_model(plan)` is the single seam between a resolved `Plan` and the function both loops time: today the
torch engine (the Encoder `runner.build` makes, `torch.compile`d with `--compile`, as `runner.run` does);
another engine only has to return another `Forward` here. Its first call is timed apart by `first_call`, so
a record can give the cold start -- model load, then the first forward -- separately from the warm requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from mbbench import engines, environment, runner
from mbbench.bench.forward_service import Forward, model_batch
from mbbench.bench.timing import synchronize, timed
from mbbench.plan import Plan
from mbbench.records import MachineLoad

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LoadedModel:
    """The forward both loops call, in the layout its batches must have, and how long loading took."""

    forward: Forward  # one mbbench batch (on `device`) -> the model's output (ignored)
    padded: bool  # True: right-padded rows with a mask; False: packed documents with cu_seqlens
    pad_token_id: int
    backend: str  # the attention implementation that runs
    device: torch.device
    load_seconds: float  # build (weights initialised or read) and move to the device, synchronised
    gemm: str = "torch"  # the GEMM kernel the linears run on (`runner.gemm_choice`, as `run` chooses it)
    gemm_reason: str = ""
    elementwise: str = "eager"  # RoPE's and the gated activation's kernel (`runner.elementwise_choice`)
    elementwise_reason: str = ""

    @property
    def layout(self) -> str:
        return "padded" if self.padded else "packed"

    @property
    def timer(self) -> str:
        """What `timing.timed` uses on this device: CUDA events on a GPU, perf_counter on the CPU."""
        return "cuda-events" if self.device.type == "cuda" else "perf_counter"


def load_model(plan: Plan, progress: Progress | None = None) -> LoadedModel:
    """Build the plan's model on its device and return its forward (the torch engine; `torch.compile`d with
    dynamic shapes when the plan asks for --compile), its linears on the GEMM kernel `run` would choose.
    Raises whatever building raises."""
    device = torch.device(plan.torch_device)
    engines.apply_threads(plan.threads)  # the plan's threads (a CPU identity's), before anything is built or timed
    runner.cpu_gemm_peak(plan)  # the GEMM kernel's measurement, outside the load time (cached for `build`)
    runner.cpu_elementwise_times(plan)  # likewise the element-wise kernels' (and Inductor's compile)
    synchronize(device)
    began = time.perf_counter()
    encoder = runner.build(plan, progress)  # its linears on the kernel `run` picks
    synchronize(device)
    load_seconds = time.perf_counter() - began
    forward = torch.compile(encoder.__call__, dynamic=True) if plan.config.compile else encoder.__call__
    return LoadedModel(forward, encoder.layout == "padded", encoder.pad_token_id, encoder.backend, device,
                       load_seconds, encoder.gemm, encoder.gemm_reason, encoder.elementwise,
                       encoder.elementwise_reason)


def first_call(model: LoadedModel, document: torch.Tensor) -> float:
    """Seconds of the model's first forward (one document, copied to the device before the clock starts):
    the cold call -- allocator growth, kernel selection, compilation with --compile."""
    batch = model_batch([document], model.padded, model.pad_token_id).to(model.device)
    with torch.inference_mode():
        return timed(lambda: model.forward(batch), model.device)


def watch_load(plan: Plan) -> Callable[[], MachineLoad]:
    """Snapshot the load now (the device's too on a GPU); the returned function snapshots it again and judges
    both with `environment.busy_warning` (torch's intra-op threads on a CPU, one launching thread on a GPU)."""
    reader = runner.gpu_load_reader(plan)
    start = environment.load_snapshot(reader)
    threads = torch.get_num_threads() if plan.device.kind == "cpu" else 1

    def finish() -> MachineLoad:
        return environment.machine_load(start, environment.load_snapshot(reader), threads)
    return finish
