"""A model's forward pass as the latency loop's `call` and the serving loop's `service`.

Both loops work on requests that name suite documents; this module turns them into mbbench batches
(`batching.pad_documents` for padded models: rows x longest; `batching.pack_documents` for the
unpadded reference model: concatenated with cu_seqlens) and times the forward with `timing.timed`
(CUDA events on a GPU, perf_counter on the CPU, the device synchronised around the call).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from mbbench.batching import Batch, pack_documents, pad_documents
from mbbench.bench.batcher import RequestBatch
from mbbench.bench.loadgen import request_documents
from mbbench.bench.throughput import batch_shape
from mbbench.bench.timing import timed

Forward = Callable[[Batch], object]  # the model's forward on one mbbench batch (its output is ignored)
Timer = Callable[[Callable[[], None], torch.device], float]  # like timing.timed


def model_batch(documents: Sequence[torch.Tensor], padded: bool, pad_token_id: int = 0) -> Batch:
    """Documents (1-D int64 token ids each, on the CPU) as one batch in the model's layout, on the CPU."""
    return pad_documents(documents, pad_token_id) if padded else pack_documents(documents)


def latency_requests(document: Callable[[int], torch.Tensor], num_documents: int, batch_size: int, seed: int,
                     padded: bool, device: torch.device, pad_token_id: int = 0) -> Callable[[int], Batch]:
    """`make_request(i)` for `latency.measure_latency`: request i's `batch_size` documents (drawn by
    `loadgen.request_documents`, seeded per request) as a batch on `device`, built before it is timed.
    `document(i)` gives suite document i (e.g. `Suite.document`)."""
    def make_request(index: int) -> Batch:
        picks = request_documents(index, batch_size, num_documents, seed)
        return model_batch([document(i) for i in picks], padded, pad_token_id).to(device)
    return make_request


def latency_call(forward: Forward, device: torch.device, timer: Timer = timed) -> Callable[[Batch], float]:
    """`call(batch)` for `latency.measure_latency`: seconds of one forward under inference mode."""
    def call(batch: Batch) -> float:
        with torch.inference_mode():
            return timer(lambda: forward(batch), device)
    return call


class ModelService:
    """`service(batch)` for `serving.serve`: build the batcher's batch from its documents, copy it to `device`,
    and return the seconds of the forward alone; `is_new(batch)` says whether its shape has not run yet.

    Documents are generated once and kept (on the CPU, where batches are assembled). Under a real
    clock a request's inference time is the wall time of this whole call (batch assembly and copy
    included, as a server spends it); under a virtual clock it is exactly the forward's seconds.
    """

    def __init__(self, forward: Forward, document: Callable[[int], torch.Tensor], padded: bool,
                 device: torch.device, pad_token_id: int = 0, timer: Timer = timed):
        self.forward, self.document, self.padded, self.device = forward, document, padded, device
        self.pad_token_id, self.timer = pad_token_id, timer
        self.cache: dict[int, torch.Tensor] = {}
        self.shapes_run: set = set()  # `throughput.batch_shape` of every model batch run so far
        self.built: tuple[RequestBatch, Batch] | None = None  # the last batch `is_new` built, reused by the call

    def inputs(self, batch: RequestBatch) -> Batch:
        """The batcher's batch as the model's batch, on the device."""
        for index in batch.documents:
            if index not in self.cache:
                self.cache[index] = self.document(index)
        return model_batch([self.cache[i] for i in batch.documents], self.padded, self.pad_token_id).to(self.device)

    def __call__(self, batch: RequestBatch) -> float:
        inputs = self.built[1] if self.built is not None and self.built[0] is batch else self.inputs(batch)
        self.built = None
        self.shapes_run.add(batch_shape(inputs))
        with torch.inference_mode():
            return self.timer(lambda: self.forward(inputs), self.device)

    def is_new(self, batch: RequestBatch) -> bool:
        """Whether `batch`'s model shape has not run yet (its first call compiles or allocates lazily). The batch
        it builds is the one the call then runs: asking costs no second assembly."""
        inputs = self.inputs(batch)
        self.built = (batch, inputs)
        return batch_shape(inputs) not in self.shapes_run


def model_service(forward: Forward, document: Callable[[int], torch.Tensor], padded: bool, device: torch.device,
                  pad_token_id: int = 0, timer: Timer = timed) -> ModelService:
    """A `ModelService`: pass it as `service` and its `is_new` as `new_shape` to `serving.serve` / `run_load`."""
    return ModelService(forward, document, padded, device, pad_token_id, timer)
