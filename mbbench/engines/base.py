"""What every engine hands back: a `PreparedEngine` (a callable on padded batches) and its `EngineInfo`.

An engine turns an mbbench `Encoder` (the module and weights the torch engine times) into something that
runs the same function: torch eager, torch.compile, an ONNX Runtime session or an OpenVINO compiled model.
`EngineInfo` is what a record must say about how it ran: versions, device/provider, threads, graph
optimisation, and the cold-start costs (export, compile, first call) measured apart from steady passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mbbench.batching import Batch
from mbbench.errors import UserError
from mbbench.models.encoders import Encoder
from mbbench.records import EngineInfo  # what a record says about an engine: each engine's `prepare` makes one

DEFAULT_CACHE_DIR = Path("runs/.engine-cache")


class EngineUnavailable(UserError):
    """An engine cannot run this model here (extra not installed, provider missing, model refused)."""


@dataclass(frozen=True)
class Threads:
    """Thread counts applied to every engine from one setting, so engines compete on equal terms.

    `intra`: threads one operator may use (torch.set_num_threads, ORT intra_op_num_threads, OpenVINO
    INFERENCE_NUM_THREADS). `inter`: operators run concurrently (torch interop threads, ORT inter_op_num_threads,
    OpenVINO NUM_STREAMS). An encoder forward is one chain of operators, so inter defaults to 1.
    """

    intra: int
    inter: int = 1


def threads_from(setting: int | None = None) -> Threads:
    """`Threads` from the one user setting; None: torch's current `torch.get_num_threads()`.

    Raises UserError for a count below 1.
    """
    intra = torch.get_num_threads() if setting is None else setting
    if isinstance(intra, bool) or not isinstance(intra, int) or intra < 1:
        raise UserError(f"threads must be a positive integer, got {setting!r}")
    return Threads(intra=intra)


@dataclass(frozen=True)
class ModelIdentity:
    """Which function an export holds: everything that changes the traced graph or its constants.

    The catalogue name and tiny flag (for people), a hash of the weights, the attention backend that ran (sdpa and
    eager export different graphs: 3,575 vs 3,053 nodes for ModernBERT), a hash of the whole model config (RoPE
    theta, eps, window, activation hold no tensor but are traced into the graph), and a hash of the modelling code
    that was traced with the library versions (a transformers upgrade can change the graph and still pass parity
    against itself). Issue 34 items 10 and 11.
    """

    name: str
    tiny: bool
    weights: str  # weights_fingerprint(module): loaded checkpoints and seeds alike
    backend: str = ""  # the attention implementation that was traced
    config: str = ""  # config_fingerprint(module)
    code: str = ""  # code_fingerprint(module): the traced classes' source files and library versions


@dataclass(frozen=True)
class EngineSettings:
    """How to prepare an engine: threads, where exports are cached, and the exporter's settings."""

    threads: Threads
    cache_dir: Path = DEFAULT_CACHE_DIR
    opset: int = 17  # ONNX opset of the TorchScript exporter (what deployers' tools default to)


@dataclass
class PreparedEngine:
    """A runnable engine: `engine(batch) -> (batch, seq, hidden)` last hidden states on the batch's device."""

    run: Callable[[Batch], torch.Tensor]
    info: EngineInfo

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.run(batch)


class Engine:
    """One way of running an encoder. Subclasses fill in `version`, `unavailable` and `prepare`."""

    name: str = ""
    extra: str | None = None  # the pip extra that installs it, e.g. "onnx"; None: always installed
    exports: bool = False  # True: prepare exports the model and caches it by `ModelIdentity` (weights hashed)

    def version(self) -> str:
        """The version of the software that runs it; raises EngineUnavailable when it is not installed."""
        raise NotImplementedError

    def refusal(self, layout: str, device: torch.device, dtype: torch.dtype) -> str | None:
        """None when this engine can run a model of `layout` ("packed" or "padded") on `device` in `dtype`,
        else why not (one line). What a plan checks before any model is built."""
        return None

    def unavailable(self, encoder: Encoder) -> str | None:
        """None when this engine can run `encoder` on its device, else why not (one line)."""
        return self.refusal(encoder.layout, encoder.device, encoder.dtype)

    def prepare(self, encoder: Encoder, identity: ModelIdentity, first_batch: Batch,
                settings: EngineSettings) -> PreparedEngine:
        """Export/compile as needed and run `first_batch` once (timed as the cold first call)."""
        raise NotImplementedError

    def check(self, encoder: Encoder) -> None:
        """Raise EngineUnavailable with the reason when this engine cannot run `encoder` here."""
        self.check_configuration(encoder.layout, encoder.device, encoder.dtype)

    def check_configuration(self, layout: str, device: torch.device, dtype: torch.dtype) -> None:
        """Raise EngineUnavailable (a UserError) when the software is missing or `refusal` gives a reason."""
        self.version()
        reason = self.refusal(layout, device, dtype)
        if reason:
            raise EngineUnavailable(f"engine {self.name}: {reason}")


def check_precision(info: EngineInfo, dtype: torch.dtype) -> None:
    """Raise EngineUnavailable when a prepared engine computes in another precision than the run's `dtype` (read
    back, not asked for): a record or a ratio never mixes precision tiers. OpenVINO on a CPU without bf16 units
    computes a bf16 request in f32; ONNX Runtime's CPU provider runs fp16 graphs through inserted fp32 casts."""
    asked = str(dtype).removeprefix("torch.")
    if info.precision != asked:
        detail = f" ({info.precision_note})" if info.precision_note else ""
        raise EngineUnavailable(f"engine {info.name} computes in {info.precision}, not {asked}{detail}: "
                                f"not a {asked} tier")


def missing_extra(engine: str, package: str, extra: str) -> EngineUnavailable:
    """The one-line refusal for an engine whose optional dependency is not installed."""
    return EngineUnavailable(f"engine {engine} needs {package}: pip install 'mbbench[{extra}]'")
