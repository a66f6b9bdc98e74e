"""Typed records: one header (what was asked, on what, with which software) and exactly one payload.

A record is what every measurement, search and prediction produces and what reports read:

    Record
      header:  schema_version, kind (measured | predicted), status (ok | would-not-fit | unsupported | failed), reason,
               identity (everything that changes the number), device, environment, model, suite, created_at
      payload: Throughput | MaxBatchSearch | Prediction | Comparison | Latency | Serving | MeasuredSweep | Failure

`Identity` is the configuration key: two records with equal identities measured the same thing, so
resume skips on it and the report groups by it. Software versions (torch, transformers, CUDA) live in
the environment: recorded, shown apart in reports, but not part of the identity.

Schema 1 records (the loose dicts committed before this module existed) are migrated on read by the
store's file reader (`results.read_record`, through `migrate`); nothing on disk is rewritten. This module
imports nothing from mbbench: it is the bottom layer every other one reads and writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any, ClassVar, Union

SCHEMA_VERSION = 2
KINDS = ("measured", "predicted")
# "would-not-fit": a prediction whose batch exceeds the predicted maximum batch (its numbers are kept, as predicted)
STATUSES = ("ok", "would-not-fit", "unsupported", "failed")
NO_NUMBER = ("unsupported", "failed")  # statuses whose payload is a Failure
MEASUREMENTS = ("throughput", "max_batch", "prediction", "comparison", "latency", "serving", "measured_sweep")


def now() -> str:
    """UTC timestamp, ISO 8601 to the second (the `created_at` of every record)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ identity

MAX_STEM_CHARS = 160  # a record file's stem; with ".json" and a temporary file's affixes, far below 255 bytes

# Identity fields added after schema 2 was first written -> the value a record without the field implies.
LATER_FIELDS: dict[str, Any] = {
    "matmul_precision": "highest",
    "traffic": (),  # latency and serving settings (issue 28): records before them had none
    "engine": "torch",  # the engine axis (issue 24): records before it ran torch (or `compile`: torch-compile)
    "threads": None,  # a CPU run's intra- and inter-op threads (issue 26): records before them did not say
    "interop_threads": None,
    # a comparison's baseline, now that `models` keeps the order the sides were given (issue 34): before it, the
    # baseline was models[0] and the key hashes that order (`Identity._hashed`)
    "baseline": None,
    # what a CPU computes with (issue 36): two CPUs of one model name, with and without AMX, are two devices
    "cpu_isa": None,
    # the host malloc setting a CPU run measured with (issue 36: `mbbench.allocator`); before it, glibc as found
    "allocator": None,
    "gemm": None,  # a pinned GEMM kernel (issue 34): records before pins chose theirs
    "elementwise": None,  # a pinned element-wise kernel (issue 34)
    "sweep": (),  # a measured sweep's grid and workload (issue 32)
}
ENGINE_SEPARATOR = "@"  # a comparison side on an engine: MODEL@ENGINE (hf-modernbert-base@onnxruntime)
COMPILE_ENGINE = "torch-compile"  # what `compile=True` (the older spelling, before the engine axis) means


def without_non_finite(data: Any, where: str = "") -> tuple[Any, dict[str, str]]:
    """`data` (nested dicts, lists, tuples) with every NaN or infinite float replaced by None, and where each
    was: ({"a": None}, {"a": "nan"}) for {"a": nan}. Strict JSON has no such numbers."""
    if isinstance(data, float) and not math.isfinite(data):
        return None, {where: repr(data)}
    found: dict[str, str] = {}
    if isinstance(data, dict):
        clean = {}
        for name, value in data.items():
            clean[name], inner = without_non_finite(value, f"{where}.{name}" if where else str(name))
            found |= inner
        return clean, found
    if isinstance(data, (list, tuple)):
        items = [without_non_finite(value, f"{where}[{i}]") for i, value in enumerate(data)]
        for _, inner in items:
            found |= inner
        return type(data)(value for value, _ in items), found
    return data, found


def _suite_info(data: dict | None) -> "SuiteInfo | None":
    """A record's suite, its path made portable (records written before it was)."""
    if not data:
        return None
    return SuiteInfo(**{**data, "path": portable_suite_path(data.get("path"))})


def _digest(fields_: dict) -> str:
    text = json.dumps(fields_, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Identity:
    """Every field that changes the number a record reports.

    `device` is the basket id of a GPU (e.g. "H100-SXM"), a GPU's own name when it is not in the basket,
    or the CPU model; `device_index` is torch's CUDA index (None on CPU and for predictions). For a
    max-batch search, `limits` holds the search's own settings (memory cap, granularity, margin).
    `engine` is what ran the model (torch, torch-compile, onnxruntime, openvino; a comparison joins its sides'
    engines); `compile` is its older spelling, kept equal to `engine == "torch-compile"` so records written
    before the engine axis keep their keys. `threads` and `interop_threads` are the intra- and inter-op thread
    counts of a CPU run (None on GPUs and for predictions). `gemm` and `elementwise` are kernels the user pinned
    (`--gemm`, `--elementwise`); a kernel chosen from the kernel cache's timings is in the payload, not here.
    """

    measurement: str  # one of MEASUREMENTS
    model: str  # registry name
    suite: str  # the suite's name, for people; the fingerprint is what identifies it
    suite_fingerprint: str
    protocol: str
    backend: str  # the backend asked for ("auto" included); the one that ran is in the payload
    dtype: str
    device: str
    device_index: int | None = None
    tiny: bool = False
    weights_sha256: str | None = None  # a hash of a --weights checkpoint; None: seeded random weights
    batch_size: int | None = None
    token_budget: int | None = None
    documents: int | None = None  # documents actually used (a subsample says so)
    runs: int | None = None
    warmup_batches: int | None = None  # None: one full warmup pass
    compile: bool = False
    time_transfer: bool = False
    placement: str | None = None  # the Ray node type a CPU task ran on (CPU records share one directory)
    limits: tuple[tuple[str, Any], ...] = ()  # max-batch search settings, as sorted (name, value) pairs
    models: tuple[str, ...] = ()  # a comparison's models (baseline first); empty otherwise
    # torch's float32 matmul precision: "high" lets fp32 GEMMs run in TF32 (GPU) or bf16 passes, which changes
    # both speed and numbers; NVIDIA_TF32_OVERRIDE=0 forces "highest" whatever torch is told
    matmul_precision: str = "highest"
    # latency and serving: the requests' settings (batch sizes, counts, seconds, rates, batcher, SLO, clock,
    # seed) as sorted (name, value) pairs; a list-valued setting is a tuple
    traffic: tuple[tuple[str, Any], ...] = ()
    engine: str = "torch"
    threads: int | None = None  # intra-op threads of a CPU run
    interop_threads: int | None = None  # inter-op threads of a CPU run
    baseline: str | None = None  # a comparison's baseline side (None: models[0], as records before issue 34)
    cpu_isa: str | None = None  # a CPU's matrix and vector units ("amx-bf16 avx512-bf16 avx512 avx2"; DeviceInfo.isa)
    allocator: str | None = None  # a CPU run's host malloc setting (`allocator.AllocatorSetting.name`)
    gemm: str | None = None  # a GEMM kernel pinned with --gemm (None: chosen from the kernel cache's timings)
    elementwise: str | None = None  # an element-wise kernel pinned with --elementwise (None: chosen)
    # a measured sweep's grid and workload (hidden, glu, layers, head dim, params, seed, the CPU's ISA) as sorted
    # (name, value) pairs; a list-valued setting is a tuple
    sweep: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        # `compile` and `engine` name one thing: torch-compile. Either spelling sets the other.
        if self.compile and self.engine == LATER_FIELDS["engine"]:
            object.__setattr__(self, "engine", COMPILE_ENGINE)
        object.__setattr__(self, "compile", self.engine == COMPILE_ENGINE)

    def key(self) -> str:
        """A short hash of every field: equal keys mean the same configuration."""
        return _digest(self._hashed())

    def configuration_key(self) -> str:
        """The key without the device: what a matrix driver can know before a task is placed."""
        return _digest({k: v for k, v in self._hashed().items() if k not in ("device", "device_index", "cpu_isa")})

    def _hashed(self) -> dict:
        """The fields a key hashes. A field added after schema 2 was first written is left out while it holds
        the value every older record implies (`LATER_FIELDS`), so the keys of existing records never change;
        torch-compile hashes as `compile=True`, its spelling before the engine axis."""
        values = asdict(self)
        if values["engine"] == COMPILE_ENGINE:
            values["engine"] = LATER_FIELDS["engine"]  # `compile` (True) carries it
        if values["baseline"] is not None:
            values = _baseline_first(values)
        return {k: v for k, v in values.items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}

    @property
    def baseline_side(self) -> str | None:
        """A comparison's baseline side (records before issue 34 put it first); None for other measurements."""
        return self.baseline or (self.models[0] if self.models else None)

    @property
    def display_model(self) -> str:
        return self.model + ("-tiny" if self.tiny else "")

    def file_stem(self) -> str:
        """A readable, file-name-safe prefix cut to fit, plus the key (unique per identity).

        At most MAX_STEM_CHARS characters, so the record's name and its temporary file's stay within every
        file system's 255-byte limit whatever the suite or model names (a comparison of eight models or a
        261-character suite name included); the key is never cut.
        """
        batch = f"tb{self.token_budget}" if self.token_budget else (f"bs{self.batch_size}" if self.batch_size else "")
        engine = "" if self.engine == LATER_FIELDS["engine"] or self.measurement == "comparison" else self.engine
        threads = f"t{self.threads}" if self.threads is not None else ""
        parts = [self.display_model if self.measurement != "comparison" else "-vs-".join(self.models),
                 self.suite, self.protocol, engine, self.backend, self.dtype, threads, batch,
                 f"docs{self.documents}" if self.documents else "", self.measurement]
        key = self.key()
        readable = re.sub(r"[^A-Za-z0-9._=-]+", "-", "__".join(p for p in parts if p))
        return readable[:MAX_STEM_CHARS - len(key) - 2].rstrip("-_.") + "__" + key

    @classmethod
    def from_dict(cls, data: dict) -> "Identity":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["limits"] = tuple(tuple(pair) for pair in values.get("limits", ()))
        values["models"] = tuple(values.get("models", ()))
        for name in ("traffic", "sweep"):
            values[name] = tuple((key, tuple(value) if isinstance(value, list) else value)
                                 for key, value in values.get(name, ()))
        return cls(**values)


def _baseline_first(values: dict) -> dict:
    """A comparison identity's fields in the form records before issue 34 hashed: the baseline first, the other
    sides in their given order, and the comma-joined per-side backends and engines in that order (`baseline`
    dropped: it is models[0] there). So a comparison keeps its key whatever order its sides are given in."""
    models = list(values["models"])
    order = [models.index(values["baseline"]), *(i for i, m in enumerate(models) if m != values["baseline"])]
    reordered = {**values, "models": tuple(models[i] for i in order), "baseline": None}
    for name in ("backend", "engine"):
        parts = values[name].split(",")
        if len(parts) == len(models):
            reordered[name] = ",".join(parts[i] for i in order)
    return reordered


# ----------------------------------------------------------------------------------------------- header parts

@dataclass(frozen=True)
class DeviceInfo:
    """The device a record is for: measured on, or predicted for (`kind` "predicted")."""

    kind: str  # "cuda", "cpu" or "predicted"
    name: str  # as NVML reports it ("NVIDIA H100 80GB HBM3"), or the CPU model
    basket_id: str | None = None  # gpu_basket.csv id when the name matches one
    index: int | None = None  # torch's CUDA index (cuda:N); None on CPU and for predictions
    sm_count: int | None = None
    compute_capability: str | None = None  # "9.0"
    memory_bytes: int | None = None  # total device memory in bytes, as the device reports it
    driver: str | None = None  # NVIDIA driver version
    cuda: str | None = None  # torch's CUDA version
    uuid: str | None = None  # NVML UUID: how telemetry finds this GPU under CUDA_VISIBLE_DEVICES
    # a CPU's matrix and vector units from its flags, widest first ("amx-bf16 avx512-bf16 avx512 avx2"): what
    # decides its speed, since one model name ("Intel(R) Xeon(R) Processor") covers CPUs with and without AMX
    isa: str | None = None
    cpu_capability: str | None = None  # torch.backends.cpu.get_cpu_capability(): the kernels ATen dispatches to

    @property
    def directory(self) -> str:
        """results/<directory>/: the basket id, "cpu", else a file-name-safe form of the GPU's name."""
        if self.kind == "cpu":
            return "cpu"
        return self.basket_id or re.sub(r"[^A-Za-z0-9.-]+", "-", self.name).strip("-")[:MAX_STEM_CHARS]

    @property
    def identity_name(self) -> str:
        return self.name if self.kind == "cpu" else (self.basket_id or self.name)

    @property
    def label(self) -> str:
        """The device for people: a CPU's name with its units ("AMD EPYC [avx2]"), a GPU's identity name."""
        if self.kind == "cpu" and self.isa:
            return f"{self.name} [{self.isa}]"
        return self.identity_name


@dataclass(frozen=True)
class ConfigChange:
    """One config field in which the checkpoint that ran (`--weights`) differs from its catalogue row, e.g.
    layer_norm_eps 1e-12 -> 0.001. Values are as the model's config holds them (JSON types)."""

    field: str
    row: Any  # the catalogue row's value
    ran: Any  # the checkpoint's value: what the model ran with


@dataclass(frozen=True)
class ModelInfo:
    family: str
    group: str  # "base" or "large": the paper's table groups
    parameters: int
    max_length: int
    layout: str  # "packed" or "padded"
    # the checkpoint's config fields that differ from the catalogue row (empty: the row's own config ran)
    config_changes: tuple[ConfigChange, ...] = ()

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        """Read a record's `model` (files written before `config_changes` existed have none)."""
        changes = tuple(ConfigChange(**change) for change in data.get("config_changes") or ())
        return cls(**{**{k: v for k, v in data.items() if k != "config_changes"}, "config_changes": changes})


def portable_suite_path(path: str | None) -> str | None:
    """A suite file's path as a record keeps it: never an absolute path of the writer's machine. A relative
    path stays; an absolute one becomes "suites/<file>" when it is in a `suites` folder (the paper's, or
    the package's data/suites of older versions), else the bare file name."""
    if not path or not (path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path) or path.startswith("\\\\")):
        return path
    parts = re.split(r"[\\/]+", path)
    return f"suites/{parts[-1]}" if len(parts) > 1 and parts[-2] == "suites" else parts[-1]


@dataclass(frozen=True)
class SuiteInfo:
    """The suite a record ran. `path` is where its file is for people, never an absolute path of the writer's
    machine: the shipped suites as "suites/<name>.toml", a user's file relative to the directory mbbench ran
    in (or its bare name when outside it). The fingerprint in the identity is what identifies it."""

    path: str | None
    documents: int  # documents in the whole suite
    max_length: int


# ---------------------------------------------------------------------------------------------- payloads

@dataclass(frozen=True)
class Throughput:
    """Timed passes over a suite. Seconds per pass in `run_seconds`; tokens/s of real (unpadded) tokens."""

    kind: ClassVar[str] = "throughput"
    backend: str  # the attention implementation that ran
    num_documents: int
    subsampled: bool
    real_tokens: int
    padded_tokens: int
    num_batches: int
    warmup_batches: int  # batches the warmup ran, first call included (records before issue 26: as asked)
    warmup_seconds: float
    first_call_seconds: float
    run_seconds: list[float]
    headline: str  # "median" or "mean" of the pass times
    tokens_per_second: float
    tokens_per_second_stats: dict  # median, mean, std, min, max, iqr, iqr_over_median of per-pass tokens/s
    timer: str  # "cuda-events" or "perf_counter"
    unstable: bool
    backend_reason: str | None = None
    gemm: str | None = None  # the GEMM kernel our models' linears ran on (models.gemm.KERNELS); None: not recorded
    gemm_reason: str | None = None
    elementwise: str | None = None  # our models' RoPE + gated activation kernel (models.fused.KERNELS)
    elementwise_reason: str | None = None
    compile_seconds: float | None = None
    telemetry: dict | None = None
    flops_per_pass: float | None = None
    mfu: float | None = None
    mfu_note: str | None = None
    peak_memory_bytes: int | None = None
    load: dict | None = None  # machine load at start and end of the timed passes
    load_warning: str | None = None
    shape_warmup_batches: int | None = None  # of warmup_batches, run only because their shape was new (None: older)
    # How the engine ran (`engines.EngineInfo.to_dict()`): version, provider, threads read back, graph
    # optimisation, fused-operator counts, export/compile/first-call seconds (the cold start, before warmup)
    engine_info: dict | None = None
    parity: dict | None = None  # `engines.ParityResult.to_dict()` against torch on the first batch; None for torch
    cold_start_seconds: float | None = None  # export + compile + the first call, apart from warmup and passes
    # where each kernel choice came from: "measured now", "cache", "pinned" or "fixed" (`bench.kernel_choice`)
    gemm_source: str | None = None
    elementwise_source: str | None = None


@dataclass(frozen=True)
class MaxBatchSearch:
    """The largest batch (documents at the suite's maximum length) or packed token budget that fits."""

    kind: ClassVar[str] = "max_batch"
    mode: str  # "batch" or "tokens"
    sequence_length: int
    granularity: int
    safety_margin: float
    memory_limit_bytes: int | None
    largest_ok: int
    result: int  # largest_ok less the margin, rounded down to the granularity
    trials: list[dict]
    search_seconds: float
    device_memory_bytes: int | None = None
    peak_bytes_at_result: int | None = None
    capped: bool = False  # stopped by a trial or time cap before the bracket closed
    bracket: tuple[int, int | None] | None = None  # (largest that fit, smallest that did not)
    seed: int | None = None  # where the search started (the memory model's prediction)
    note: str = ""

    @property
    def max_batch_size(self) -> int | None:
        return self.result if self.mode == "batch" else None

    @property
    def max_token_budget(self) -> int | None:
        return self.result if self.mode == "tokens" else None


@dataclass(frozen=True)
class ErrorBand:
    """Where the true value of a predicted number is likely to lie, as factors of the prediction.

    `low` and `high` bound measured / predicted over the validation rows of `basis` (e.g. 0.85 and 1.10: those rows
    measured 85-110% of what the model predicted), widened to contain 1 so the prediction lies inside its band;
    `rows` is how many rows that took and `coverage` which share of them the interval spans. `low` and `high` are
    None when the rows are too few for a band (`thin`; `basis` says how many there were).
    """

    low: float | None
    high: float | None
    basis: str  # which validation rows, in words (`bands.error_band`)
    rows: int = 0
    coverage: str = ""

    @property
    def thin(self) -> bool:
        """Too few rows for a band: none is drawn."""
        return self.low is None or self.high is None

    def around(self, value: float) -> tuple[float, float] | None:
        """(low, high) of `value` (a prediction, in its own unit), or None when the band is too thin."""
        return None if self.thin else (value * self.low, value * self.high)


@dataclass(frozen=True)
class Prediction:
    """The performance and memory models' answer for a configuration on a basket GPU, with the error bands the
    validation of its GPU and stack gives (None in records made before bands existed)."""

    kind: ClassVar[str] = "prediction"
    model_version: str
    tokens_per_second: float
    real_tokens: int
    mfu: float
    max_batch_size: int | None
    efficiency: float
    efficiency_source: str
    peak_tflops: float
    shape: dict
    attention: str = "auto"
    notes: tuple[str, ...] = ()
    error_band: ErrorBand | None = None  # of tokens_per_second
    max_batch_band: ErrorBand | None = None  # of max_batch_size

    @property
    def tokens_per_second_range(self) -> tuple[float, float] | None:
        """(low, high) tokens/s the error band gives, or None without one (or with one too thin to draw)."""
        return self.error_band.around(self.tokens_per_second) if self.error_band else None


@dataclass(frozen=True)
class Comparison:
    """Interleaved passes of several models over the same documents: paired ratios against a baseline.

    `paired` is `bench.paired.PairedResult.to_dict()`: per model its real tokens, pass seconds (round
    order) and tokens/s statistics; per other model the per-round ratios of tokens/s over the
    baseline's, their median and its order-statistic interval (exact coverage in `confidence`; records before
    issue 26: a percentile bootstrap, with `resamples`); the order the models ran in.
    """

    kind: ClassVar[str] = "comparison"
    baseline: str
    num_documents: int
    rounds: int
    backends: dict  # model -> the attention backend that ran
    paired: dict
    engines: dict | None = None  # side -> `EngineInfo.to_dict()` of the engine that ran it
    parity: dict | None = None  # side -> `ParityResult.to_dict()` (sides on an engine other than torch)
    excluded: dict | None = None  # side -> why it was left out of the rounds (failed the accuracy gate, could not run)
    baseline_note: str | None = None  # why the baseline is not the one asked for (it was left out), else None
    mfu: dict | None = None  # side -> model FLOPs utilisation over its median pass (CPU: of the GEMM peak measured
    mfu_note: str = ""  # here in the run's dtype at the side's shapes; GPU: of the datasheet peak), and how
    # side -> {"kernel", "reason", "source"}: the GEMM kernel its linears ran on, why, and where the choice came
    # from (measured now, cache, pinned, fixed; records before issue 34 have no source)
    gemms: dict | None = None
    elementwise: dict | None = None  # side -> {"kernel", "reason", "source"}: its RoPE + gated activation kernel

    def ratio(self, model: str) -> dict:
        """The ratio entry of `model` (median, interval, ratios); KeyError when absent."""
        return next(r for r in self.paired["ratios"] if r["model"] == model)


@dataclass(frozen=True)
class Latency:
    """Closed-loop per-request latency at batch sizes 1, 2, 4, ..., each request drawing its documents
    from the suite (seeded); at least `min_requests` timed requests and `min_seconds` per batch size.

    `points` holds one entry per batch size, `bench.latency.LatencyRun.to_dict()`: batch_size,
    requests, cold_s (the first call at that batch size, apart) and cold_real_tokens (its request 0's tokens),
    elapsed_s, real_tokens, requests_per_second, documents_per_second, tokens_per_second,
    shape_warmup_requests, and latency_s {count, mean, stdev, min, p50, p90, p95, p99, max} in seconds with
    `beyond` (per percentile, the requests beyond it: 0 = it is their largest).
    """

    kind: ClassVar[str] = "latency"
    backend: str  # the attention implementation that ran
    layout: str  # "packed" (unpadded reference model) or "padded" (to the longest in the request)
    seed: int  # which documents each request draws
    min_requests: int
    min_seconds: float  # seconds
    points: list[dict]
    timer: str  # what the model call reports ("cuda-events" or "perf_counter"); latency is the clock's reading
    clock: str = "real"  # "real" or "virtual" (a simulation)
    load_seconds: float | None = None  # model load and move to the device, timed apart from the first call
    first_call_s: float | None = None  # the model's first forward (one document): with load_seconds, the cold start
    gemm: str | None = None  # the GEMM kernel the linears ran on (as `run` chooses it); None: not recorded
    gemm_reason: str | None = None
    elementwise: str | None = None  # the RoPE + gated activation kernel (as `run` chooses it)
    elementwise_reason: str | None = None
    warmup_requests: int = 0  # per batch size: untimed requests after the cold call, before the timed ones
    warmed: str = ""  # what the warmup covered, in words
    load: dict | None = None  # machine load at start and end of the measurement
    load_warning: str | None = None
    # the engine that ran (issue 33): `engines.EngineInfo.to_dict()`, the accuracy gate's `ParityResult.to_dict()`
    # (None: the torch engine in fp32 on torch's kernels) and export + compile + first call (None: older records)
    engine_info: dict | None = None
    parity: dict | None = None
    cold_start_seconds: float | None = None

    @property
    def batch_sizes(self) -> list[int]:
        return [p["batch_size"] for p in self.points]

    def point(self, batch_size: int) -> dict:
        """The entry of `batch_size`; KeyError when it was not measured."""
        for point in self.points:
            if point["batch_size"] == batch_size:
                return point
        raise KeyError(f"batch size {batch_size} not measured (measured: {self.batch_sizes})")


@dataclass(frozen=True)
class Serving:
    """An in-process load test: open-loop arrivals at offered rates through a dynamic batcher into one
    worker, and optionally the highest rate meeting a latency target.

    `runs` holds one entry per offered rate in run order, `bench.serving.ServingRun.to_dict()`:
    offered_rate, arrived_rate (what the seeded draw brought) and achieved_rate (requests/s),
    tokens_per_second (real tokens), duration_s, requests, served, unserved, batches, utilization,
    padding_efficiency, new_shape_batches and new_shape_share (batches of a shape not run before, served with
    their first call, and their share of the busy time), and statistics
    {count, mean, stdev, min, p50, p90, p95, p99, max, beyond} of queue_s, inference_s and total_s
    (seconds per request), batch_size (requests per batch) and batch_tokens (tokens per batch,
    padded when padded). `slo` is `bench.serving.SloSearch.to_dict()`: percentile, target_s, low,
    high, best_rate (None: even the lowest rate missed), bracket, note, and every step's rate,
    latency_s (None: requests went unserved) and met.
    """

    kind: ClassVar[str] = "serving"
    backend: str
    layout: str  # "packed": a batch costs the sum of lengths; "padded": rows x longest
    arrival: str  # "poisson" or "constant"
    seed: int  # arrivals and documents
    min_requests: int  # per rate, at least this many requests ...
    min_seconds: float  # ... arriving over at least this many seconds
    max_batch_tokens: int  # the batcher's token budget
    max_batch_requests: int | None  # None: the budget alone limits a batch
    max_wait_s: float  # seconds a non-full batch may wait for more requests
    sort_by_length: bool
    clock: str  # "real" or "virtual" (simulated queueing; service times as measured or known)
    runs: list[dict]
    slo: dict | None = None
    drain_limit_s: float | None = None  # an overloaded run stops this long after its last arrival
    timer: str = "perf_counter"  # what times a batch's forward ("cuda-events" on a GPU)
    load_seconds: float | None = None  # model load and move to the device
    first_call_s: float | None = None  # the model's first forward (one document), apart from every run
    gemm: str | None = None  # the GEMM kernel the linears ran on (as `run` chooses it); None: not recorded
    gemm_reason: str | None = None
    elementwise: str | None = None  # the RoPE + gated activation kernel (as `run` chooses it)
    elementwise_reason: str | None = None
    warmed: str = ""  # what the warmup covered, in words
    load: dict | None = None  # machine load at start and end of the load tests
    load_warning: str | None = None
    # the engine that ran (issue 33), as in `Latency`
    engine_info: dict | None = None
    parity: dict | None = None
    cold_start_seconds: float | None = None

    @property
    def rates(self) -> list[float]:
        return [r["offered_rate"] for r in self.runs]

    @property
    def best_rate(self) -> float | None:
        return self.slo["best_rate"] if self.slo else None


@dataclass(frozen=True)
class SweepCandidate:
    """One shape of a measured sweep: its passes, interval, prediction and the kernels it ran on.

    Tokens/s are of real tokens per pass over the sweep's workload. `anchor_ratios[r]` is its tokens/s over the
    anchor shape's in round r of the same block: paired, so the machine's state in that round cancels, and
    shapes of different blocks compare through the anchor (`measured_sweep`).
    """

    hidden: int
    glu: int  # fused Wi width (2 x intermediate)
    layers: int
    heads: int
    parameters: int
    block: int  # the block of interleaved rounds that measured it (the anchor runs in every block)
    round_tokens_per_second: list[float]  # one per round
    anchor_ratios: list[float]  # one per round
    tokens_per_second: float  # median of round_tokens_per_second
    interval: dict | None  # that median's order-statistic interval (`bench.paired.Interval`); None below 2 rounds
    predicted_tokens_per_second: float | None
    prediction_parts: dict  # predicted seconds per pass by part (CPU: gemm, attention, elementwise)
    flops_per_pass: float  # model FLOPs (`perfmodel.forward_flops`)
    mfu: float | None
    gemm: str
    gemm_source: str  # "measured now", "cache", "pinned" or "fixed" (`bench.kernel_choice`)
    gemm_reason: str
    elementwise: str
    elementwise_source: str
    elementwise_reason: str
    warmup_seconds: float
    measured_at: str  # UTC, when its block finished

    @property
    def label(self) -> str:
        return f"{self.hidden}/{self.glu}/{self.layers}"


@dataclass(frozen=True)
class MeasuredSweep:
    """Candidate shapes of our reference ModernBERT measured on this device, interleaved round by round in blocks
    that all include one anchor shape, beside each shape's prediction for this device (`measured_sweep`).

    `complete` is False while shapes of the grid remain (an interrupted sweep keeps what it measured; a rerun
    measures the rest). The ranking and its statistics are computed from `candidates` by
    `measured_sweep.ranked` and stored in `rank_correlation` (Spearman's rho of predicted against measured,
    on the ranking metric and on anchored tokens/s) and `predicted_best_tied`.
    """

    kind: ClassVar[str] = "measured_sweep"
    grid: dict  # hidden, glu, layers (lists), head_dim, params ([target, tolerance] or None)
    workload: dict  # tokens_per_pass (budget), batches, documents, real_tokens, source ("synthetic" or a suite)
    backend: str  # the attention backend that ran
    backend_reason: str
    rounds: int
    block: int  # shapes per block besides the anchor
    anchor: list[int]  # (hidden, glu, layers) of the shape every block runs
    anchor_rounds: list[list[float]]  # per block, the anchor's tokens/s in each round
    candidates: list[SweepCandidate]
    planned: int  # shapes in the grid
    ranking: str  # the metric shapes are ranked by (`measured_sweep.RANKINGS`)
    scale_parameters: float  # the parameter count the equal-parameter metric scales every shape to
    prediction_source: str  # what predicted (the CPU cost model, or the GPU model for the detected GPU)
    peak_flops: float | None  # the MFU denominator (FLOP/s)
    peak_note: str
    rank_correlation: dict  # {"ranking": rho, "tokens_per_second": rho, "shapes": n}; rho None below 2 shapes
    predicted_best_tied: bool | None  # the predicted best is the measured best or tied with it (None: no prediction)
    load: dict | None = None
    load_warning: str | None = None

    @property
    def complete(self) -> bool:
        return len(self.candidates) >= self.planned


@dataclass(frozen=True)
class Failure:
    """No number: the configuration failed (error) or cannot run (unsupported); the header has the reason."""

    kind: ClassVar[str] = "failure"
    error_type: str | None = None
    backend: str | None = None
    engine: str | None = None  # the engine that was asked for
    parity: dict | None = None  # a failed parity check (`ParityResult.to_dict()`): the error and the tolerance


Payload = Union[Throughput, MaxBatchSearch, Prediction, Comparison, Latency, Serving, MeasuredSweep, Failure]
PAYLOADS = {cls.kind: cls for cls in (Throughput, MaxBatchSearch, Prediction, Comparison, Latency, Serving,
                                      MeasuredSweep, Failure)}


# ------------------------------------------------------------------------------------------------ record

@dataclass
class Record:
    kind: str  # "measured" or "predicted"
    status: str  # "ok", "unsupported" or "failed"
    identity: Identity
    device: DeviceInfo
    model: ModelInfo | None
    suite: SuiteInfo | None
    payload: Payload
    environment: dict = field(default_factory=dict)
    reason: str | None = None
    created_at: str = field(default_factory=now)
    execution: dict | None = None  # matrix tasks: how and where it ran
    schema_version: int = SCHEMA_VERSION
    # values that were NaN or infinite, by place ("payload.tokens_per_second": "nan"): written as null, so a
    # record is strict JSON (RFC 8259 has no NaN); readers show them as missing and say why
    non_finite: dict[str, str] = field(default_factory=dict)
    source_path: str | None = field(default=None, compare=False)  # where it was read from (not written)
    migrated_from: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"record kind {self.kind!r} not in {KINDS}")
        if self.status not in STATUSES:
            raise ValueError(f"record status {self.status!r} not in {STATUSES}")
        if (self.status in NO_NUMBER) != isinstance(self.payload, Failure):
            raise ValueError(f"a record with status {self.status!r} cannot carry a {self.payload.kind} payload")

    @property
    def key(self) -> str:
        return self.identity.key()

    @property
    def tokens_per_second(self) -> float | None:
        return getattr(self.payload, "tokens_per_second", None)

    def to_json(self) -> dict:
        """A strict-JSON-ready dict (schema 2): a NaN or infinite value becomes null, named in `non_finite`."""
        body = {"schema_version": self.schema_version, "kind": self.kind, "status": self.status,
                "reason": self.reason, "created_at": self.created_at, "identity": asdict(self.identity),
                "device": asdict(self.device), "model": asdict(self.model) if self.model else None,
                "suite": asdict(self.suite) if self.suite else None, "environment": self.environment,
                "execution": self.execution, "payload_type": self.payload.kind, "payload": asdict(self.payload)}
        body, found = without_non_finite(body)
        if found or self.non_finite:
            body["non_finite"] = dict(sorted((self.non_finite | found).items()))
        return body

    @classmethod
    def from_json(cls, data: dict, source_path: str | None = None) -> "Record":
        """Read a schema-2 record; raises ValueError when it is not one (schema 1: `migrate.from_schema_1`)."""
        if not isinstance(data, dict) or not data.get("schema_version"):
            raise ValueError("not an mbbench record (no schema_version)")
        if data["schema_version"] == 1:
            raise ValueError("a schema 1 record: read it with mbbench.migrate.from_schema_1")
        if data["schema_version"] != SCHEMA_VERSION:
            raise ValueError(f"record schema {data['schema_version']} is newer than this mbbench ({SCHEMA_VERSION})")
        payload_cls = PAYLOADS[data["payload_type"]]
        payload_fields = {f.name for f in fields(payload_cls)}
        payload_data, found = without_non_finite(data["payload"], "payload")  # files written before strict JSON
        payload = payload_cls(**{k: v for k, v in payload_data.items() if k in payload_fields})
        if isinstance(payload, MaxBatchSearch) and payload.bracket is not None:
            payload = replace(payload, bracket=tuple(payload.bracket))
        if isinstance(payload, MeasuredSweep):
            payload = replace(payload, candidates=[SweepCandidate(**c) for c in payload.candidates])
        if isinstance(payload, Prediction):
            payload = replace(payload, notes=tuple(payload.notes), **{
                name: ErrorBand(**band) for name in ("error_band", "max_batch_band")
                if isinstance(band := getattr(payload, name), dict)})
        return cls(kind=data["kind"], status=data["status"], identity=Identity.from_dict(data["identity"]),
                   device=DeviceInfo(**data["device"]), model=ModelInfo.from_dict(data["model"]) if data.get("model") else None,
                   suite=_suite_info(data.get("suite")), payload=payload,
                   environment=data.get("environment") or {}, reason=data.get("reason"),
                   created_at=data.get("created_at") or "", execution=data.get("execution"),
                   non_finite=(data.get("non_finite") or {}) | found, source_path=source_path)

    def flatten(self) -> dict:
        """One flat row for pandas and the report: identity, device, software, and the payload's numbers."""
        ident, payload, env = self.identity, self.payload, self.environment or {}
        row = {"key": self.key, "configuration_key": ident.configuration_key(), "kind": self.kind,
               "status": self.status, "reason": self.reason, "measurement": ident.measurement,
               "model": ident.display_model, "registry_model": ident.model, "tiny": ident.tiny,
               "models": list(ident.models) or None, "requested_baseline": ident.baseline_side, "cpu_isa": ident.cpu_isa,
               "suite": ident.suite, "suite_fingerprint": ident.suite_fingerprint, "protocol": ident.protocol,
               "requested_backend": ident.backend, "dtype": ident.dtype, "batch_size": ident.batch_size,
               "token_budget": ident.token_budget, "documents": ident.documents, "runs": ident.runs,
               "warmup_batches": ident.warmup_batches, "compile": ident.compile, "time_transfer": ident.time_transfer,
               "engine": ident.engine, "threads": ident.threads, "interop_threads": ident.interop_threads,
               "weights_sha256": ident.weights_sha256, "limits": dict(ident.limits) or None,
               "matmul_precision": ident.matmul_precision,
               "traffic": dict(ident.traffic) or None,
               "device_kind": self.device.kind, "device_name": self.device.name, "device_index": self.device.index,
               "gpu_dir": self.device.directory, "gpu_id": self.device.basket_id, "driver": self.device.driver,
               "cuda": self.device.cuda, "family": self.model.family if self.model else None,
               "group": self.model.group if self.model else "base",
               "parameters": self.model.parameters if self.model else None,
               "config_changes": {c.field: c.ran for c in self.model.config_changes} or None if self.model else None,
               "suite_documents": self.suite.documents if self.suite else None,
               "torch": env.get("torch"), "transformers": env.get("transformers"),
               "git_commit": env.get("git_commit"), "host": env.get("host"), "created_at": self.created_at,
               "path": self.source_path, "payload_type": payload.kind, "migrated_from": self.migrated_from,
               "non_finite": dict(self.non_finite)}
        for name, value in asdict(payload).items():
            row.setdefault(name, value)
        row.setdefault("tokens_per_second", None)  # every row has the headline column, None without a number
        if isinstance(payload, MaxBatchSearch):
            row.update(max_batch_size=payload.max_batch_size, max_token_budget=payload.max_token_budget)
        if isinstance(payload, Serving):  # `runs` is the identity's passes in a row: the rates' runs go apart
            row["serving_runs"] = payload.runs
        if isinstance(payload, Comparison):  # the load around the interleaved rounds, where throughput keeps it
            row.update(load=payload.paired.get("load"), load_warning=payload.paired.get("load_warning"))
        if isinstance(payload, Prediction):  # a prediction over the first N documents is a subsample, like a run's
            row["subsampled"] = bool(ident.documents and self.suite and ident.documents < self.suite.documents)
        row["backend"] = getattr(payload, "backend", None) or getattr(payload, "attention", None) or ident.backend
        return row

