"""Engines that deployers use: torch (eager, default), torch-compile (inductor), onnxruntime, openvino.

    engine = get_engine("onnxruntime")
    prepared = prepare_engine(engine, encoder, model_identity("hf-modernbert-base", encoder, tiny=False), batch)
    refs = references(prepare_engine(get_engine("torch"), ...), batch, encoder.dtype, float32=twin_forward)
    parity = check_parity(prepared, refs, batch).require()  # against the fp32 function (engines.parity)
    prepared(batch)  # (batch, seq, hidden), timed by the caller; prepared.info goes into the record

onnxruntime and openvino are extras (`pip install 'mbbench[onnx]'`, `'mbbench[openvino]'`), imported only
when used; without them an engine raises EngineUnavailable (a UserError: exit status 2) naming the extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mbbench.batching import Batch
from mbbench.engines.base import (DEFAULT_CACHE_DIR, Engine, EngineInfo, EngineSettings, EngineUnavailable,
                                  ModelIdentity, PreparedEngine, Threads, check_precision, threads_from)
from mbbench.engines.cache import code_fingerprint, config_fingerprint, weights_fingerprint
from mbbench.engines.onnxruntime_engine import OnnxRuntimeEngine
from mbbench.engines.openvino_engine import OpenVinoEngine
from mbbench.engines.parity import (Agreement, ParityFailure, ParityResult, References, agreement, check_parity,
                                   references)
from mbbench.engines.torch_engines import TorchCompileEngine, TorchCompileMaxAutotuneEngine, TorchEngine, apply_threads
from mbbench.errors import UserError
from mbbench.models.encoders import Encoder

__all__ = ["Agreement", "DEFAULT_CACHE_DIR", "DEFAULT_ENGINE", "ENGINES", "Engine", "EngineInfo", "EngineSettings",
           "EngineStatus", "EngineUnavailable", "ModelIdentity", "ParityFailure", "ParityResult", "PreparedEngine",
           "References", "Threads", "TorchCompileEngine", "agreement", "apply_threads", "available_engines", "check_parity",
           "check_precision", "get_engine", "model_identity", "prepare_engine", "references", "threads_from"]

DEFAULT_ENGINE = "torch"
ENGINES: dict[str, Engine] = {engine.name: engine for engine in
                              (TorchEngine(), TorchCompileEngine(), TorchCompileMaxAutotuneEngine(), OnnxRuntimeEngine(),
                               OpenVinoEngine())}


def get_engine(name: str) -> Engine:
    """The engine called `name`; UserError listing the names for an unknown one."""
    if name not in ENGINES:
        raise UserError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    return ENGINES[name]


@dataclass(frozen=True)
class EngineStatus:
    """One row of `mbbench list engines`."""

    name: str
    installed: bool
    version: str | None  # None when not installed
    extra: str | None  # pip extra that installs it
    reason: str = ""  # why it is not installed


def available_engines() -> list[EngineStatus]:
    """Every engine, whether its software is installed here, and its version (imports the extras)."""
    rows = []
    for engine in ENGINES.values():
        try:
            rows.append(EngineStatus(engine.name, True, engine.version(), engine.extra))
        except EngineUnavailable as error:
            rows.append(EngineStatus(engine.name, False, None, engine.extra, str(error)))
    return rows


def model_identity(name: str, encoder: Encoder, tiny: bool = False) -> ModelIdentity:
    """The export cache's identity of a built encoder: catalogue name, tiny flag, and hashes of its weights, config
    and traced code, with the attention backend that runs (`ModelIdentity`)."""
    module = encoder.module
    return ModelIdentity(name, tiny, weights_fingerprint(module), encoder.backend, config_fingerprint(module),
                         code_fingerprint(module))


def prepare_engine(engine: Engine | str, encoder: Encoder, identity: ModelIdentity, first_batch: Batch,
                   threads: int | Threads | None = None, cache_dir: Path | str = DEFAULT_CACHE_DIR,
                   opset: int = 17) -> PreparedEngine:
    """Export/convert/compile `encoder` for `engine` and time its cold first call on `first_batch`.

    `threads`: one setting for every engine (None: torch's current `torch.get_num_threads()`).
    Raises EngineUnavailable (a UserError) naming the reason when the engine cannot run this model here.
    """
    engine = get_engine(engine) if isinstance(engine, str) else engine
    threads = threads if isinstance(threads, Threads) else threads_from(threads)
    return engine.prepare(encoder, identity, first_batch, EngineSettings(threads, Path(cache_dir), opset))
