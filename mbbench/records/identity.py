"""The configuration key of a record: `Identity`, every field that changes the number it reports.

Two records with equal identities measured the same thing, so resume skips on it and the report groups by it.
Software versions (torch, transformers, CUDA) live in the record's environment: recorded, not identified.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

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

