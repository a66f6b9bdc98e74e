"""A plan's model, ready to time: the one place every producer (run, compare, latency, serve, a max-batch trial, a
measured sweep's shapes) builds a model and prepares its engine.

    loaded = load(plan.model_plan, lambda encoder: [first_batch], progress)
    loaded.engine(batch)  # timed by the caller; loaded.engine.info, loaded.parity and the build facts go in the record

In order, once per model:

1. `build`: the plan's threads applied to torch (once) and read back; the GEMM and element-wise kernels chosen
   (`bench.kernel_choice`: the kernel cache, measured once per CPU, or the pins); the encoder built on the device
   in the dtype with its resolved backend, its load timed (synchronised), outside any kernel measurement.
2. `ready`: an exporting engine's host memory checked on the batches it will run (`engines.host_memory`) before
   anything is exported; the engine prepared from the encoder (export, cache, compile and the first call on the
   first batch, timed apart: the cold start), with a heartbeat while it runs; the precision it computes in read
   back (`engines.check_precision`); the accuracy gate (`engines.parity`) against the same weights in fp32.

`load` is the two in a row. A comparison builds each model once and readies it on each side's engine; a run says
its duration estimate between the two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mbbench import allocator, engines
from mbbench.batching import Batch
from mbbench.bench import kernel_choice
from mbbench.bench.elementwise import ElementwiseTimes, elementwise_times
from mbbench.bench.kernel_choice import FIXED, KernelChoice
from mbbench.bench.matmul import GemmRates, cpu_gemm_rates
from mbbench.bench.timing import synchronize
from mbbench.engines import DEFAULT_ENGINE, ModelIdentity, ParityResult, PreparedEngine, References, Threads
from mbbench.engines import host_memory
from mbbench.models import registry
from mbbench.models.elementwise import EAGER as DEFAULT_ELEMENTWISE
from mbbench.models.encoders import Encoder, float32_twin
from mbbench.models.gemm import TORCH as DEFAULT_GEMM
from mbbench.plan import ModelPlan
from mbbench.progress import heartbeat
from mbbench.records import BuildInfo, MachineLoad, ServiceSetup

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Built:
    """A model built for its plan: the encoder, the threads read back, how long building took, and the kernels it
    runs on with where each choice came from."""

    model: ModelPlan
    encoder: Encoder  # the module and weights torch runs: layout, pad id, the backend that runs
    threads: Threads  # torch's intra- and inter-op threads, read back after applying the plan's
    load_seconds: float  # build (weights initialised or read) and the move to the device, synchronised
    gemm: KernelChoice  # the linears' kernel (`gemm_choice`)
    elementwise: KernelChoice  # RoPE's and the gated activation's kernel (`elementwise_choice`)
    rates: GemmRates | None  # each GEMM kernel's rate at the model's shapes on this CPU (None off a CPU)

    def info(self) -> BuildInfo:
        """What a record says this model ran on: its attention backend and why (the plan resolved it), its GEMM and
        element-wise kernels with why and where each choice came from."""
        gemm, elementwise = self.gemm, self.elementwise
        return BuildInfo(self.encoder.backend, self.model.backend_reason, gemm.kernel, gemm.text, gemm.source,
                         elementwise.kernel, elementwise.text, elementwise.source)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to time: built, its engine prepared (cold start apart) and past the accuracy gate."""

    built: Built
    engine: PreparedEngine  # engine(batch) -> hidden states; engine.info: versions, threads, the cold start
    parity: ParityResult | None  # None: the torch engine in fp32 on torch's kernels (it is the function), or ungated

    @property
    def model(self) -> ModelPlan:
        return self.built.model

    @property
    def encoder(self) -> Encoder:
        return self.built.encoder

    @property
    def device(self) -> torch.device:
        return torch.device(self.built.model.torch_device)

    @property
    def padded(self) -> bool:
        """True: right-padded rows with a mask; False: packed documents with cu_seqlens."""
        return self.encoder.layout == "padded"

    @property
    def timer(self) -> str:
        """What `timing.timed` uses on this device: CUDA events on a GPU, perf_counter on the CPU."""
        return "cuda-events" if self.device.type == "cuda" else "perf_counter"

    @property
    def busy_threads(self) -> int:
        """The cores a measurement keeps busy, for `environment.busy_warning`: on a CPU the intra-op threads the
        engine read back, on a GPU one launching thread."""
        return self.engine.info.threads_intra if self.device.type == "cpu" else 1

    @property
    def cold_start_seconds(self) -> float:
        """Export + compile + first call of the engine: what a deployment pays once, before warmup (s)."""
        return self.engine.info.cold_start_seconds

    def service_setup(self, seed: int, min_requests: int, min_seconds: float, clock: str, warmed: str,
                      load: MachineLoad) -> ServiceSetup:
        """What a latency or serving measurement ran on this model (`records.ServiceSetup`): the build, the engine
        with its cold start and accuracy gate, the timer, and the measurement's own settings, clock, warmup (in
        words) and the machine's load."""
        built, info = self.built, self.engine.info
        return ServiceSetup(built.info(), self.encoder.layout, seed, min_requests, min_seconds, self.timer, clock,
                            built.load_seconds, info.first_call_seconds, warmed, load, engine=info,
                            parity=self.parity.check() if self.parity else None,
                            cold_start_seconds=info.cold_start_seconds)


def load(model: ModelPlan, inputs: Callable[[Encoder], Sequence[Batch]], progress: Progress | None = None,
         shared: dict[int, References] | None = None) -> LoadedModel:
    """`build` then `ready`: the model of `model`, its engine prepared and gated on the batches `inputs(encoder)`
    gives (the first: the cold call's and the gate's; all: the host-memory check's). Raises what `build` and
    `ready` raise."""
    built = build(model, progress)
    return ready(built, inputs(built.encoder), progress, shared)


def build(model: ModelPlan, progress: Progress | None = None) -> Built:
    """Apply the plan's threads once (read back), choose the kernels (measured before the clock starts, or read from
    the kernel cache) and build the encoder on the plan's device in its dtype with its resolved backend; the
    build is timed, synchronised. Raises whatever building raises (a checkpoint that does not load, a kernel
    that cannot run)."""
    allocator.configure()  # once per process, before the first large allocation
    threads = apply_threads(model.threads)  # before the GEMM rates are measured and the model is built
    rates = gemm_rates(model)
    gemm = gemm_choice(model, rates)
    elementwise = elementwise_choice(model, cpu_elementwise_times(model))
    if progress:
        progress(f"building {model.label} ({str(model.dtype).removeprefix('torch.')}, backend {model.backend}: "
                 f"{model.backend_reason or 'asked for'}, GEMM {gemm.kernel} ({gemm.source}), element-wise "
                 f"{elementwise.kernel} ({elementwise.source})) on {model.device.name} ({model.torch_device})")
    options = registry.BuildOptions(model.torch_device, model.dtype, model.backend, model.seed, model.weights,
                                    gemm.kernel, elementwise.kernel)
    device = torch.device(model.torch_device)
    synchronize(device)
    began = time.perf_counter()
    encoder = registry.encoder(model.spec, options)
    synchronize(device)
    return Built(model, encoder, threads, time.perf_counter() - began, gemm, elementwise, rates)


def ready(built: Built, batches: Sequence[Batch], progress: Progress | None = None,
          shared: dict[int, References] | None = None, gate: bool = True) -> LoadedModel:
    """The plan's engine prepared from `built.encoder` and its accuracy gate, on `batches[0]` (moved to the device).

    The engine's first call on it is timed as its cold start. Then its output is judged against the same weights in
    fp32 run by torch eager (`engines.parity`: fp32 1e-4; reduced precision against torch eager's own error in that
    dtype) before anything is timed. `shared` keeps the reference outputs per encoder, so sides of one model compute
    them once. `gate=False` only for a max-batch trial: its first call is the measurement, and the fp32 twin would
    add its memory to the peak. Raises EngineUnavailable (a UserError) when the engine cannot run the model here or
    its host memory would not hold `batches`, ParityFailure (carrying the result) on a miss or a NaN.
    """
    model, encoder = built.model, built.encoder
    check_engine_memory(model, encoder, list(batches))
    first = batches[0].to(torch.device(model.torch_device))
    prepared = prepare_engine(built, first, progress)
    engines.check_precision(prepared.info, encoder.dtype)  # read back: a bf16 record never times f32
    parity = accuracy_gate(built, prepared, first, progress, shared) if gate else None
    return LoadedModel(built, prepared, parity)


def prepare_engine(built: Built, first_batch: Batch, progress: Progress | None = None) -> PreparedEngine:
    """The plan's engine from the built encoder: export, cache, compile and the first call on `first_batch` (on the
    device), each timed apart, with a heartbeat while an engine other than torch prepares."""
    model = built.model
    exporting = model.engine.name != DEFAULT_ENGINE
    say = progress if exporting else None
    if say:
        say(f"preparing engine {model.engine.name} ({built.threads.intra} threads; export, compile and the first "
            f"call timed apart; a large model's can take minutes)")
    started = time.perf_counter()
    with heartbeat(say, f"still preparing engine {model.engine.name}"):
        prepared = engines.prepare_engine(model.engine, built.encoder, model_identity(model, built.encoder),
                                          first_batch, built.threads, model.engine_cache)
    if say:
        say(f"engine {model.engine.name} ready in {time.perf_counter() - started:.1f} s "
            f"({engine_steps(prepared.info)})")
    return prepared


def accuracy_gate(built: Built, prepared: PreparedEngine, first_batch: Batch, progress: Progress | None = None,
                  shared: dict[int, References] | None = None) -> ParityResult | None:
    """The engine's output on `first_batch` judged against the fp32 function (`engines.check_parity`); None for the
    torch engine in fp32 on torch's kernels, which is that function. Raises ParityFailure on a miss."""
    model, encoder = built.model, built.encoder
    torch_engine = model.engine.name == DEFAULT_ENGINE
    twin = float32_twin(encoder)
    if torch_engine and twin is encoder:
        return None
    refs = (shared or {}).get(id(encoder))
    if refs is None:
        eager = prepared if torch_engine else engines.prepare_engine(
            DEFAULT_ENGINE, encoder, model_identity(model, encoder), first_batch, built.threads)
        refs = engines.references(eager, first_batch, encoder.dtype, None if twin is encoder else _inference(twin))
        if shared is not None:
            shared[id(encoder)] = refs
    parity = engines.check_parity(prepared, refs, first_batch, is_torch_engine=torch_engine)
    if progress:
        progress(parity.message)
    return parity.require()


def _inference(encoder: Encoder) -> Callable[[Batch], torch.Tensor]:
    def run(batch: Batch) -> torch.Tensor:
        with torch.inference_mode():
            return encoder(batch)

    return run


# ------------------------------------------------------------------------------ threads and the kernels' choice

def apply_threads(threads: Threads) -> Threads:
    """Set torch's intra-op (and, while still allowed, inter-op) threads to a plan's; the counts read back. `build`
    calls it before anything is measured or built; a measured sweep also before it measures its GEMM peak."""
    return engines.apply_threads(threads)



def gemm_rates(model: ModelPlan) -> GemmRates | None:
    """Each GEMM kernel's rate at the model's shapes on this CPU (from the kernel cache, or measured once and
    kept); None off a CPU."""
    if model.device.kind != "cpu":
        return None
    return cpu_gemm_rates(tuple(model.shape.gemms().values()), model.dtype, model.threads.intra)


def gemm_choice(model: ModelPlan, rates: GemmRates | None) -> KernelChoice:
    """The kernel of the model's linears and where the choice came from: on a GPU cuBLAS; transformers models keep
    transformers' code (they measure what transformers does); our own models on a CPU take `--gemm`, else the
    kernel `kernel_choice.decide` picks from the measured (or cached) rounds, ties going to torch's."""
    if not registry.owns_gemms(model.spec):
        shipped = "torch's default (cuBLAS on CUDA)" if rates is None else \
            "transformers' own linears, as shipped (torch's MKL path on CPU)"
        return KernelChoice(DEFAULT_GEMM, FIXED, shipped + ("; --gemm applies to our own models" if model.gemm
                                                            else ""))
    return kernel_choice.gemm_for(rates, model.gemm, DEFAULT_GEMM)


def cpu_elementwise_times(model: ModelPlan) -> ElementwiseTimes | None:
    """Eager vs Inductor RoPE + gated activation at the model's shapes on this CPU (from the kernel cache, or
    measured once and kept, compiling Inductor's kernels); None where `elementwise_choice` needs no measurement
    (pinned with --elementwise, transformers models, another engine, GPUs)."""
    activation = registry.gated_activation(model.spec)
    if model.device.kind != "cpu" or not activation or model.engine.name != DEFAULT_ENGINE or model.elementwise:
        return None
    shape = model.shape
    return elementwise_times(shape.heads, shape.head_dim, shape.ffn, activation, model.dtype, model.threads.intra)


def elementwise_choice(model: ModelPlan, times: ElementwiseTimes | None) -> KernelChoice:
    """The kernel of our own models' RoPE and gated activation and where the choice came from: `--elementwise`, else
    on a CPU the one `kernel_choice.decide` picks (ties to eager); eager for transformers models (their own code),
    under an engine other than torch (it runs its own graph), and on GPUs (Inductor's fused kernels are not
    measured there yet)."""
    if not registry.gated_activation(model.spec):
        return KernelChoice(DEFAULT_ELEMENTWISE, FIXED, "transformers' own code, as shipped")
    if model.engine.name != DEFAULT_ENGINE:
        return KernelChoice(DEFAULT_ELEMENTWISE, FIXED,
                            f"eager in the module; the {model.engine.name} engine runs its own graph")
    return kernel_choice.elementwise_for(times, model.elementwise, DEFAULT_ELEMENTWISE)


# ----------------------------------------------------------------------------------------------- the engine

def check_engine_memory(model: ModelPlan, encoder: Encoder, batches: list[Batch]) -> None:
    """Raise EngineUnavailable when the model's engine would run out of host memory on `batches` (an exporting
    engine on a CPU: transformers' exported attention grows with seq², `engines.host_memory`); before anything
    is exported, so a comparison leaves the side out with the reason instead of being killed."""
    if model.device.kind != "cpu" or not model.engine.exports:
        return
    heads = encoder.module.config.num_attention_heads
    weight_bytes = sum(p.numel() * p.element_size() for p in encoder.module.parameters())
    host_memory.check_fits(model.engine.name, batches, heads, model.dtype.itemsize, weight_bytes,
                           host_memory.available_bytes())


def model_identity(model: ModelPlan, encoder: Encoder) -> ModelIdentity:
    """The export cache's identity of `encoder`. Its weights are hashed only for an engine that exports (a pass
    over the weights): the torch engines never read it."""
    if model.engine.exports:
        return engines.model_identity(model.spec.name, encoder, model.spec.tiny)
    return ModelIdentity(model.spec.name, model.spec.tiny, weights="not hashed: nothing is exported")


def engine_steps(info: engines.EngineInfo) -> str:
    """'export 40.1 s (cached: no), compile 30.2 s, first call 23.0 s': where an engine's preparation went."""
    steps = [(name, getattr(info, f"{name.replace(' ', '_')}_seconds", None))
             for name in ("export", "compile", "first call")]
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps if seconds is not None)
