"""The one way an exporting engine (ONNX Runtime, OpenVINO) is prepared: export -> cache -> compile -> first call.

`ExportingEngine.prepare` is the template: it checks the engine can run the model here, exports the encoder into
the export cache (or finds it there: `engines.cache`), compiles the export into something runnable, and times the
first call on the first batch; each step is timed apart and the record's `EngineInfo` says what each cost. An
engine fills in the steps: `exporter` (what besides the model decides the export), `export` (write it into a
cache folder), `compile` (read it into a runnable), `runner` (batch -> hidden states) and `describe` (what it
ran with, read back).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from mbbench.batching import PaddedBatch
from mbbench.bench.timing import timed
from mbbench.engines.base import Engine, EngineInfo, EngineSettings, ModelIdentity, PreparedEngine
from mbbench.engines.cache import CacheEntry, cached_export, export_identity
from mbbench.models.encoders import Encoder


class ExportingEngine(Engine):
    """An engine that runs an export of the encoder, cached by identity (`exports`: its weights are hashed)."""

    exports = True
    artefact: str = ""  # the file `export` writes into its cache folder (what makes an entry a hit)

    def exporter(self, opset: int) -> dict:
        """What, besides the model and its weights, decides the export (part of the cache identity)."""
        raise NotImplementedError

    def export(self, encoder: Encoder, folder: Path, opset: int) -> None:
        """Write the export of `encoder` into `folder` (its `artefact` and whatever it needs beside it)."""
        raise NotImplementedError

    def compile(self, entry: CacheEntry, encoder: Encoder, settings: EngineSettings):
        """The runnable built from the cached export (an ORT session, an OpenVINO compiled model). Raises
        EngineUnavailable when it cannot run here."""
        raise NotImplementedError

    def runner(self, compiled, device: torch.device) -> Callable[[PaddedBatch], torch.Tensor]:
        """batch -> (batch, seq, hidden) tensor on `device`, through the compiled runnable."""
        raise NotImplementedError

    def describe(self, compiled, entry: CacheEntry, encoder: Encoder, settings: EngineSettings) -> EngineInfo:
        """What the record says about how it ran (versions, provider, threads and settings read back, fused
        operators, the precision it computes in); `prepare` adds the timings and the cache."""
        raise NotImplementedError

    def prepare(self, encoder: Encoder, identity: ModelIdentity, first_batch: PaddedBatch,
                settings: EngineSettings) -> PreparedEngine:
        """Export (or reuse the cached export), compile, and time the first call on `first_batch`, each apart.

        Raises EngineUnavailable when the model or device cannot run here (see `refusal`).
        """
        self.check(encoder)
        key = export_identity(identity, encoder.dtype, self.name, self.version(), self.exporter(settings.opset))
        started = time.perf_counter()
        entry = cached_export(settings.cache_dir, key, self.artefact,
                              lambda folder: self.export(encoder, folder, settings.opset))
        export_seconds = 0.0 if entry.hit else time.perf_counter() - started
        started = time.perf_counter()
        compiled = self.compile(entry, encoder, settings)
        compile_seconds = time.perf_counter() - started
        run = self.runner(compiled, encoder.device)
        first_call = timed(lambda: run(first_batch), encoder.device)
        info = replace(self.describe(compiled, entry, encoder, settings), export_seconds=export_seconds,
                       compile_seconds=compile_seconds, first_call_seconds=first_call, cache_hit=entry.hit,
                       cache_path=str(entry.path))
        return PreparedEngine(run, info)
