"""A record: one header (what was asked, on what, with which software) and exactly one payload.

    Record
      header:  schema_version, kind (measured | predicted), status (ok | would-not-fit | unsupported | failed), reason,
               identity (everything that changes the number), device, environment, model, suite, created_at
      payload: Throughput | MaxBatchSearch | Prediction | Comparison | Latency | Serving | MeasuredSweep | Failure

`to_json` writes the current schema; `from_json` reads any schema, upgrading an older file's dict first
(`records.migrate`); nothing on disk is rewritten.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from typing import Any, Union

from mbbench.records.codec import decode, encode, without_non_finite
from mbbench.records.header import DeviceInfo, ModelInfo, SuiteInfo
from mbbench.records.identity import Identity
from mbbench.records.migrate import SCHEMA_VERSION, upgrade
from mbbench.records.payloads import Comparison, Failure, MaxBatchSearch, Prediction, Throughput
from mbbench.records.service import Latency, Serving
from mbbench.records.sweep import MeasuredSweep

KINDS = ("measured", "predicted")
# "would-not-fit": a prediction whose batch exceeds the predicted maximum batch (its numbers are kept, as predicted)
STATUSES = ("ok", "would-not-fit", "unsupported", "failed")
NO_NUMBER = ("unsupported", "failed")  # statuses whose payload is a Failure
MEASUREMENTS = ("throughput", "max_batch", "prediction", "comparison", "latency", "serving", "measured_sweep")

Payload = Union[Throughput, MaxBatchSearch, Prediction, Comparison, Latency, Serving, MeasuredSweep, Failure]
PAYLOADS = {cls.kind: cls for cls in (Throughput, MaxBatchSearch, Prediction, Comparison, Latency, Serving,
                                      MeasuredSweep, Failure)}


def now() -> str:
    """UTC timestamp, ISO 8601 to the second (the `created_at` of every record)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def backend_of(payload: Payload) -> str | None:
    """The attention backend a payload says ran (a prediction's attention, a failure's asked-for backend); None
    where it names none (a comparison: one per side, in `builds`)."""
    if isinstance(payload, (Latency, Serving)):
        return payload.setup.build.backend
    if isinstance(payload, Throughput):
        return payload.build.backend
    if isinstance(payload, Prediction):
        return payload.attention
    return getattr(payload, "backend", None)


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
    migrated_from: int | None = field(default=None, compare=False)  # the schema of the file it was read from

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

    @property
    def backend(self) -> str:
        """The attention backend that ran, else the one asked for."""
        return backend_of(self.payload) or self.identity.backend

    def to_json(self) -> dict:
        """A strict-JSON-ready dict (the current schema): a NaN or infinite value becomes null, named in
        `non_finite`."""
        body = {"schema_version": self.schema_version, "kind": self.kind, "status": self.status,
                "reason": self.reason, "created_at": self.created_at, "identity": asdict(self.identity),
                "device": asdict(self.device), "model": encode(self.model), "suite": encode(self.suite),
                "environment": self.environment, "execution": self.execution, "payload_type": self.payload.kind,
                "payload": asdict(self.payload)}
        body, found = without_non_finite(body)
        if found or self.non_finite:
            body["non_finite"] = dict(sorted((self.non_finite | found).items()))
        return body

    @classmethod
    def from_json(cls, data: dict, source_path: str | None = None) -> "Record":
        """Read a record of any schema (an older one upgraded by `migrate.upgrade`); raises ValueError when `data`
        is not a record, TypeError when a part lacks a field its type requires."""
        if not isinstance(data, dict) or not data.get("schema_version"):
            raise ValueError("not an mbbench record (no schema_version)")
        current = upgrade(data)
        payload_data, found = without_non_finite(current["payload"], "payload")  # files written before strict JSON
        model, suite = current.get("model"), current.get("suite")
        version = data["schema_version"]
        return cls(kind=current["kind"], status=current["status"], identity=Identity.from_dict(current["identity"]),
                   device=decode(DeviceInfo, current["device"]), model=decode(ModelInfo, model) if model else None,
                   suite=decode(SuiteInfo, suite) if suite else None,
                   payload=decode(PAYLOADS[current["payload_type"]], payload_data),
                   environment=current.get("environment") or {}, reason=current.get("reason"),
                   created_at=current.get("created_at") or "", execution=current.get("execution"),
                   non_finite=(current.get("non_finite") or {}) | found, source_path=source_path,
                   migrated_from=version if version < SCHEMA_VERSION else None)

    def flatten(self) -> dict:
        """One flat row for pandas: the header's columns, then the payload's fields (a typed part's fields as
        `part.field`). A payload field named like a header column is `payload.<name>`: nothing is overwritten."""
        row = self._header_row()
        for name, value in _flat_fields(self.payload):
            row["payload." + name if name in row else name] = value
        row.setdefault("tokens_per_second", None)  # every row has the headline column, None without a number
        if isinstance(self.payload, MaxBatchSearch):
            row.update(max_batch_size=self.payload.max_batch_size, max_token_budget=self.payload.max_token_budget)
        return row

    def _header_row(self) -> dict:
        ident, device, env = self.identity, self.device, self.environment or {}
        return {"key": self.key, "configuration_key": ident.configuration_key(), "kind": self.kind,
                "status": self.status, "reason": self.reason, "measurement": ident.measurement,
                "model": ident.display_model, "registry_model": ident.model, "tiny": ident.tiny,
                "models": list(ident.models) or None, "requested_baseline": ident.baseline_side,
                "cpu_isa": ident.cpu_isa, "suite": ident.suite, "suite_fingerprint": ident.suite_fingerprint,
                "protocol": ident.protocol, "requested_backend": ident.backend, "backend": self.backend,
                "dtype": ident.dtype, "batch_size": ident.batch_size, "token_budget": ident.token_budget,
                "documents": ident.documents, "runs": ident.runs, "warmup_batches": ident.warmup_batches,
                "compile": ident.compile, "time_transfer": ident.time_transfer, "engine": ident.engine,
                "threads": ident.threads, "interop_threads": ident.interop_threads,
                "weights_sha256": ident.weights_sha256, "limits": dict(ident.limits) or None,
                "matmul_precision": ident.matmul_precision, "traffic": dict(ident.traffic) or None,
                "device_kind": device.kind, "device_name": device.name, "device_index": device.index,
                "gpu_dir": device.directory, "gpu_id": device.basket_id, "driver": device.driver, "cuda": device.cuda,
                "family": self.model.family if self.model else None,
                "group": self.model.group if self.model else "base",
                "parameters": self.model.parameters if self.model else None,
                "config_changes": {c.field: c.ran for c in self.model.config_changes} or None if self.model else None,
                "suite_documents": self.suite.documents if self.suite else None,
                "torch": env.get("torch"), "transformers": env.get("transformers"),
                "git_commit": env.get("git_commit"), "host": env.get("host"), "created_at": self.created_at,
                "path": self.source_path, "payload_type": self.payload.kind, "migrated_from": self.migrated_from,
                "non_finite": dict(self.non_finite)}


def _flat_fields(part: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(name, value) of each field of a dataclass, a typed part's fields under `part.`; other values as JSON types."""
    out = []
    for f in fields(part):
        value = getattr(part, f.name)
        if is_dataclass(value):
            out += _flat_fields(value, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, _plain(value)))
    return out


def _plain(value: Any) -> Any:
    """Lists and dicts of typed parts as JSON types."""
    if isinstance(value, (list, tuple)):
        return type(value)(encode(item) for item in value)
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    return value
