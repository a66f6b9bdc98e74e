"""The torch engines: eager (the default, and the reference every other engine is checked against) and
torch.compile with inductor.

Both run the Encoder as built, in either layout (packed or padded). Threads: `torch.set_num_threads(intra)`;
inter-op threads can only be set before torch's first parallel work (`set_num_interop_threads` raises
after), so they are set when possible and the value read back is recorded either way. Eager ops do not use
the inter-op pool (it serves torch.jit.fork), so a mismatch there does not change an encoder's timing.
"""

from __future__ import annotations

import copy

import torch

from mbbench.batching import Batch
from mbbench.bench.timing import timed
from mbbench.engines.base import Engine, EngineInfo, EngineSettings, ModelIdentity, PreparedEngine, Threads
from mbbench.models.encoders import Encoder
from mbbench.models.elementwise import inductor_refusal


def apply_threads(threads: Threads) -> Threads:
    """Set torch's intra-op (and, when still allowed, inter-op) threads; returns the counts read back."""
    torch.set_num_threads(threads.intra)
    if torch.get_num_interop_threads() != threads.inter:
        try:
            torch.set_num_interop_threads(threads.inter)
        except RuntimeError:  # "cannot set number of interop threads after parallel work has started"
            pass
    return Threads(torch.get_num_threads(), torch.get_num_interop_threads())


def _inference(fn):
    def run(batch: Batch) -> torch.Tensor:
        with torch.inference_mode():
            return fn(batch)

    return run


class TorchEngine(Engine):
    name = "torch"

    def version(self) -> str:
        return torch.__version__

    def provider(self, encoder: Encoder) -> str:
        return f"torch eager, attention {encoder.backend}"

    def runnable(self, encoder: Encoder) -> Encoder:
        return encoder

    def prepare(self, encoder: Encoder, identity: ModelIdentity, first_batch: Batch,
                settings: EngineSettings) -> PreparedEngine:
        """The encoder itself under inference_mode; times the first call on `first_batch`."""
        self.check(encoder)
        applied = apply_threads(settings.threads)
        run = _inference(self.runnable(encoder))
        first_call = timed(lambda: run(first_batch), encoder.device)
        info = EngineInfo(name=self.name, version=torch.__version__, device=str(encoder.device),
                          provider=self.provider(encoder), threads_intra=applied.intra, threads_inter=applied.inter,
                          graph_optimization=self.inductor_settings(encoder), first_call_seconds=first_call,
                          precision=str(encoder.dtype).removeprefix("torch."))
        return PreparedEngine(run, info)

    def inductor_settings(self, encoder: Encoder) -> str:
        """The graph optimisation a record names: none for eager."""
        return "none (eager)"


class TorchCompileEngine(TorchEngine):
    """torch.compile(module, backend="inductor"); compilation happens inside the first call.

    On a CPU with weight freezing (`freezing=True`): Inductor then folds the weights into the graph as constants
    and prepacks them for oneDNN, what PyTorch's and Intel's CPU inference guides recommend (pytorch#111456; the
    inductor CPU tutorial). Freezing needs grad disabled, which the engine's inference mode gives. On CUDA the
    defaults. `max_autotune`: Inductor's GEMM templates benchmarked per shape (an AMX micro-kernel for bf16 on
    Xeons), offered as its own engine, `torch-compile-max-autotune`, never a silent default.
    """

    name = "torch-compile"
    max_autotune = False

    def refusal(self, layout: str, device: torch.device, dtype: torch.dtype) -> str | None:
        return inductor_refusal() if device.type == "cpu" else None

    def provider(self, encoder: Encoder) -> str:
        return f"inductor, attention {encoder.backend}"

    def options(self, device: torch.device) -> dict[str, bool]:
        """Inductor settings for a model on `device` (recorded in the EngineInfo)."""
        options = {"freezing": device.type == "cpu"}
        if self.max_autotune:
            options["max_autotune"] = True
        return options

    def inductor_settings(self, encoder: Encoder) -> str:
        chosen = ", ".join(f"{k}={v}" for k, v in self.options(encoder.device).items())
        return f"inductor ({chosen})"

    def runnable(self, encoder: Encoder) -> Encoder:
        compiled = copy.copy(encoder)  # same module and weights; only the call goes through inductor
        compiled.module = torch.compile(encoder.module, backend="inductor", options=self.options(encoder.device))
        return compiled


class TorchCompileMaxAutotuneEngine(TorchCompileEngine):
    """torch-compile with Inductor's max-autotune GEMM templates (compiles much longer: benchmarked per shape)."""

    name = "torch-compile-max-autotune"
    max_autotune = True
