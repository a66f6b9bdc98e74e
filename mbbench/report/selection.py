"""Which records the report shows, and as what: typed `Row`s, merged, superseded and labelled.

Every record read becomes one `Row` (a comparison also one per measured side, its per-model tokens/s); the rest of
the report reads rows and their typed records, never a field by name. This module is the one place that reads
by name what is still untyped: the record's environment (host, software versions), NVML telemetry and the record's
`non_finite` places (a predicted sweep's CSV columns are read by `sweep.ranked_frame`, beside the code that writes
them).

- `merge`: repeats of one identity on one host keep the newest (and the report says which);
- `supersede`: a measurement re-measured on the same workload, device and host leaves the tables;
- `label_variants`: a table row's label names the fields that tell a model's records apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mbbench.plan import default_batch
from mbbench.records import (ENGINE_SEPARATOR, LATER_FIELDS, Comparison, EngineInfo, Identity, Latency, MachineLoad,
                             MaxBatchSearch, ParityCheck, Prediction, Record, Serving, Stats, Throughput)

ENGINE_BEFORE_THE_AXIS = LATER_FIELDS["engine"]  # what a record without an engine ran: torch


@dataclass(frozen=True)
class Row:
    """One number the report can show: a record, or one measured side of a comparison (`side`), with what the
    tables read resolved once. `label` is the model as a table row names it (`label_variants` adds variants)."""

    record: Record
    key: str
    model: str  # as people name it: the registry name, "-tiny" for a smoke model
    registry_model: str
    label: str
    measurement: str  # a comparison's side is a "throughput" row
    engine: str
    requested_backend: str
    backend: str | None  # the attention backend that ran
    headline: float | None  # the tokens/s it stands for (`headline_of`)
    stats: Stats | None  # of per-pass tokens/s
    passes: int
    unstable: bool
    host: str | None
    torch: str | None
    transformers: str | None
    side: str | None = None
    parity: ParityCheck | None = None
    engine_info: EngineInfo | None = None
    cold_start_seconds: float | None = None
    superseded_by: str | None = None  # "run of 2026-11-28": the re-measurement that took its place
    older_repeat: bool = False  # an older record of an identity `merge` kept a newer one of
    sides_superseded: dict[str, str] = field(default_factory=dict)  # a comparison's sides superseded, by what

    @property
    def identity(self) -> Identity:
        return self.record.identity

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def gpu(self) -> str:
        """The device's directory under results/ (basket id, "cpu" or the GPU's name)."""
        return self.record.device.directory

    @property
    def device_name(self) -> str:
        return self.record.device.name

    @property
    def suite(self) -> str:
        return self.identity.suite

    @property
    def created_at(self) -> str:
        return self.record.created_at or ""

    @property
    def date(self) -> str:
        return self.created_at[:10]

    @property
    def from_comparison(self) -> bool:
        return self.side is not None

    @property
    def payload(self):
        return self.record.payload

    @property
    def load(self) -> MachineLoad | None:
        payload = self.payload
        return payload.setup.load if isinstance(payload, (Latency, Serving)) else getattr(payload, "load", None)

    @property
    def busy(self) -> bool:
        return bool(self.load and self.load.warning)

    @property
    def subsampled(self) -> bool:
        """Fewer documents than the suite has: a run's own word, else the identity's documents against the suite's."""
        documents, suite = self.identity.documents, self.record.suite.documents if self.record.suite else 0
        if self.side is not None:
            return (documents or 0) < (suite or 0)
        if isinstance(self.payload, Throughput):
            return self.payload.subsampled
        return isinstance(self.payload, Prediction) and bool(documents and documents < suite)

    @property
    def num_documents(self) -> int | None:
        """Documents the number rests on: a measurement's own count, else (a prediction) the identity's."""
        return getattr(self.payload, "num_documents", None) or self.identity.documents

    @property
    def max_batch_size(self) -> int | None:
        """A search's maximum batch, or a prediction's (the memory model's at the suite's length)."""
        return self.payload.max_batch_size if isinstance(self.payload, (MaxBatchSearch, Prediction)) else None

    @property
    def max_token_budget(self) -> int | None:
        return self.payload.max_token_budget if isinstance(self.payload, MaxBatchSearch) else None

    @property
    def model_version(self) -> str | None:
        return self.payload.model_version if isinstance(self.payload, Prediction) else None

    @property
    def throttled(self) -> bool:
        """NVML saw the GPU slow down for power or heat during the passes (`bench.telemetry`)."""
        telemetry = getattr(self.payload, "telemetry", None) if self.side is None else None
        return bool((telemetry or {}).get("throttled"))

    def not_finite(self, name: str = "tokens_per_second") -> str:
        """Why the payload's `name` is missing when it was NaN or infinite ("tokens/s was nan"), else ""."""
        value = self.record.non_finite.get(f"payload.{name}")
        return f"{name.replace('_per_second', '/s').replace('_', ' ')} was {value}" if value else ""

    def payload_not_finite(self) -> list[str]:
        """The payload's fields that were NaN or infinite, sorted."""
        return [name.removeprefix("payload.") for name in sorted(self.record.non_finite)
                if name.startswith("payload.")]


def headline_of(payload, stats: Stats | None) -> float | None:
    """The tokens/s a record stands for: for a median headline the median of per-pass tokens/s (the statistic whose
    IQR the report gives beside it; records made before the two agreed keep their stats' median)."""
    if getattr(payload, "headline", None) == "median" and stats and stats.median is not None:
        return stats.median
    return getattr(payload, "tokens_per_second", None)


def row_of(record: Record) -> Row:
    """The row of a record as the tables read it."""
    payload, ident, env = record.payload, record.identity, record.environment or {}
    stats = payload.tokens_per_second_stats if isinstance(payload, Throughput) else None
    timed = isinstance(payload, Throughput)
    return Row(record, record.key, ident.display_model, ident.model, ident.display_model, ident.measurement,
               ident.engine or ENGINE_BEFORE_THE_AXIS, ident.backend, record.backend, headline_of(payload, stats),
               stats, len(payload.run_seconds) if timed else 0, timed and payload.unstable, env.get("host"),
               env.get("torch"), env.get("transformers"), parity=getattr(payload, "parity", None) if timed else None,
               engine_info=payload.engine_info if timed else None,
               cold_start_seconds=payload.cold_start_seconds if timed else None)


def side_rows(row: Row) -> list[Row]:
    """A comparison's per-side tokens/s as throughput rows: the median of per-pass tokens/s over its rounds, so the
    tables, the speedup and the paired ratio tell one story."""
    payload: Comparison = row.payload
    tiny = "-tiny" if row.identity.tiny else ""
    rows = []
    for name, side in payload.paired.models.items():
        stats = side.tokens_per_second_stats
        if stats.median is None:
            continue
        model, _, engine = name.partition(ENGINE_SEPARATOR)  # a side is MODEL or MODEL@ENGINE
        build = payload.builds.get(name)
        rows.append(replace(
            row, key=f"{row.key}:{name}", model=model + tiny, registry_model=model, label=model + tiny,
            measurement="throughput", engine=engine or ENGINE_BEFORE_THE_AXIS,
            requested_backend=side_backend(row.identity, name), backend=build.backend if build else None,
            headline=stats.median, stats=stats, passes=len(side.pass_seconds), unstable=stats.unstable, side=name,
            parity=(payload.parity or {}).get(name), engine_info=(payload.engines or {}).get(name)))
    return rows


def side_backend(identity: Identity, side: str) -> str:
    """The attention backend a comparison asked for on one side ('auto' unless given)."""
    asked = dict(zip(identity.models, identity.backend.split(",")))
    return asked.get(side) or "auto"


def complete(row: Row) -> bool:
    """Whether the row's record finished: a partial one (Ctrl-C kept what had finished) says `complete` False."""
    return getattr(row.record.payload, "complete", True) is not False


def merge(rows: list[Row]) -> tuple[list[Row], list[str]]:
    """Keep the newest record of each identity per host (a newer prediction of the same workload supersedes an
    older model's), a complete one over a newer partial one (an interrupted rerun does not hide what finished);
    say which were kept over which."""
    newest: dict[tuple, Row] = {}
    notes = []
    for row in sorted(rows, key=lambda r: (r.created_at, r.record.source_path or "")):
        ident = row.identity
        key = (row.key, row.host if row.kind == "measured" else None)
        if row.kind == "predicted":
            key = ("predicted", row.gpu, row.model, row.suite, ident.protocol, ident.backend, ident.dtype,
                   ident.batch_size, ident.documents, row.measurement)
        old = newest.get(key)
        if old is not None and complete(old) and not complete(row):
            notes.append(f"{row.model} / {row.suite} on {row.gpu}: kept the complete record of {old.created_at} "
                         f"over a newer partial one, {row.created_at}")
            continue
        if old is not None:
            versions = (f" ({row.model_version} over {old.model_version})"
                        if row.model_version != old.model_version else "")
            notes.append(f"{row.model} / {row.suite} on {row.gpu}: kept the newest, {row.created_at}, over "
                         f"{old.created_at}{versions}")
        newest[key] = row
    return sorted(newest.values(), key=table_order), notes


def table_order(row: Row) -> tuple:
    return row.gpu, row.label, row.suite, row.key


def measured_workload(row: Row) -> tuple:
    """What a re-measurement shares with the measurement it supersedes: model, suite, protocol, dtype, batch,
    documents and options on one device and host (passes, warmup and software may differ: they are how it was
    measured again; another host or device, even under one host name, is another machine, shown apart)."""
    ident = row.identity
    return (row.gpu, row.device_name, row.host, row.registry_model, ident.tiny, row.suite, ident.suite_fingerprint,
            ident.protocol, ident.dtype, ident.batch_size, ident.token_budget, ident.documents,
            row.requested_backend, ident.compile, row.engine, ident.threads, ident.interop_threads,
            ident.time_transfer, ident.weights_sha256)


def _timed(row: Row) -> bool:
    return row.kind == "measured" and row.measurement == "throughput"


def supersede(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """(current, superseded): of the measured throughput rows of one workload (`measured_workload`), only the newest
    is current; each older one gets `superseded_by` (the newer one's source and date) and leaves the tables."""
    newest: dict[tuple, Row] = {}
    for row in rows:
        if _timed(row) and row.status == "ok":
            key = measured_workload(row)
            if key not in newest or row.created_at > newest[key].created_at:
                newest[key] = row
    current, superseded = [], []
    for row in rows:
        winner = newest.get(measured_workload(row)) if _timed(row) else None
        if winner is None or winner is row:
            current.append(row)
        else:
            source = "comparison" if winner.from_comparison else "run"
            superseded.append(replace(row, superseded_by=f"{source} of {winner.date}"))
    return current, superseded


def what_became_of(read: list[Row], kept: list[Row], superseded: list[Row]) -> list[Row]:
    """Every row read, once each, marked with what became of it: an older repeat of an identity (`merge` kept the
    newest), superseded by a re-measurement (`supersede`; a comparison's sides each on their own)."""
    kept_ids = {id(r) for r in kept}
    later = {(r.key, r.host): r.superseded_by for r in superseded}
    marked = []
    for row in read:
        sides = {side: later[(f"{row.key}:{side}", row.host)] for side in row.identity.models
                 if (f"{row.key}:{side}", row.host) in later} if row.measurement == "comparison" else {}
        marked.append(replace(row, older_repeat=id(row) not in kept_ids, sides_superseded=sides,
                              superseded_by=later.get((row.key, row.host))))
    return marked


# ------------------------------------------------------------------------------------------------ variants

# Fields that change a number without being the model, suite or device: records that differ in one of them are
# shown apart, labelled with the field. `batch` and `docs` are relative to the suite's default.
VARIANT_FIELDS = ("protocol", "engine", "requested_backend", "dtype", "threads", "batch", "docs", "runs", "warmup",
                  "time_transfer", "weights_sha256", "suite_fingerprint", "device_name", "cpu_isa", "host", "torch",
                  "transformers", "model_version", "matmul_precision")
# They change every number of a row: never left implicit in a table (and cells are ranked within one of each).
TABLE_WIDE_FIELDS = ("protocol", "dtype", "device_name")
LABELS = {"requested_backend": "backend", "weights_sha256": "weights", "suite_fingerprint": "suite",
          "device_name": "device", "cpu_isa": "units", "model_version": "model"}


def threads_label(identity: Identity) -> str | None:
    """'2' (intra-op threads), '2/4' when inter-op threads are not 1; None where not recorded (GPU runs)."""
    intra, inter = identity.threads, identity.interop_threads
    if intra is None:
        return None
    return str(intra) if inter in (None, 1) else f"{intra}/{inter}"


def batch_variant(row: Row) -> str | int | None:
    """'tb16384' for a token budget; the batch where it is not the default for the suite (`plan.default_batch`)."""
    ident = row.identity
    if ident.token_budget:
        return f"tb{ident.token_budget}"
    max_length = row.record.suite.max_length if row.record.suite else 0
    default = default_batch(ident.suite, max_length, row.registry_model, ident.protocol)
    return None if ident.batch_size in (None, default) else ident.batch_size


def variant(row: Row) -> dict:
    """The fields of a row that change its number, besides model, suite and device."""
    ident, measured = row.identity, row.kind == "measured"
    return {"protocol": ident.protocol, "requested_backend": row.requested_backend or "auto", "dtype": ident.dtype,
            "batch": batch_variant(row), "docs": ident.documents if row.subsampled else None, "runs": ident.runs,
            "engine": row.engine, "threads": threads_label(ident), "time_transfer": ident.time_transfer or None,
            "weights_sha256": ident.weights_sha256, "warmup": ident.warmup_batches,
            "suite_fingerprint": ident.suite_fingerprint[:8] or None, "matmul_precision": ident.matmul_precision,
            "device_name": row.device_name, "cpu_isa": ident.cpu_isa, "model_version": row.model_version,
            "host": row.host if measured else None, "torch": row.torch if measured else None,
            "transformers": row.transformers if measured else None}


def label_variants(rows: list[Row]) -> list[Row]:
    """Each row's label: the model, plus the variant fields that tell its records apart.

    Protocol, dtype and device name label every row of a table (of one kind) where they vary, so no row mixes
    them across columns and none is ranked unlabelled against another protocol or machine; the other fields label a
    model's rows where two records of one suite differ in them.
    """
    by_model: dict[tuple, list[Row]] = {}
    by_table: dict[tuple, list[Row]] = {}
    for row in rows:  # per device; measured and predicted records are labelled among their own kind
        by_model.setdefault((row.gpu, row.model, row.kind), []).append(row)
        by_table.setdefault((row.gpu, row.kind), []).append(row)
    labelled = []
    for (gpu, model, kind), group in by_model.items():
        values = {id(row): variant(row) for row in by_table[(gpu, kind)]}
        suites = {r.suite for r in group}
        differing = [f for f in VARIANT_FIELDS
                     if (f in TABLE_WIDE_FIELDS and len({str(v[f]) for v in values.values()}) > 1)
                     or any(len({str(values[id(r)][f]) for r in group if r.suite == suite}) > 1 for suite in suites)]
        for row in group:
            parts = [f"{LABELS.get(f, f)}={values[id(row)][f]}" for f in differing if values[id(row)][f] is not None]
            labelled.append(replace(row, label=model + (f" [{', '.join(parts)}]" if parts else "")))
    return labelled
