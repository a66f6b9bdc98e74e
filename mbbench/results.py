"""Records: one JSON file per configuration, written atomically, loaded into pandas.

A record says what it is (`kind`: measured or predicted; `status`: ok, unsupported or failed), on
which device and software, which backend actually ran, and every raw run time.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from mbbench.errors import UserError

SCHEMA_VERSION = 1
KINDS = ("measured", "predicted")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def config_id(parts: dict) -> str:
    """A file-name-safe id of a configuration: equal ids mean the same configuration."""
    text = "__".join(f"{value}" for value in parts.values() if value is not None and value != "")
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text)


def record_path(root: str | Path, record: dict) -> Path:
    return Path(root) / record["gpu_dir"] / f"{record['config_id']}.json"


def write_atomic(path: Path, record: dict) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # includes KeyboardInterrupt: remove the temporary, keep any old record
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_writable(root: str | Path) -> Path:
    """Fail early (before any measurement) when the output directory cannot be written."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test."):
            pass
    except OSError as error:
        raise UserError(f"cannot write results to {root}: {error.strerror or error}") from None
    return root


def iter_record_files(directories: list[str | Path]):
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            raise UserError(f"results directory {directory} does not exist or is not a directory")
        yield from sorted(p for p in directory.rglob("*.json") if not p.name.startswith("."))


def read_records(directories: list[str | Path]) -> list[dict]:
    records = []
    for path in iter_record_files(directories):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"{path}: unreadable record ({error})") from None
        if isinstance(record, dict) and record.get("schema_version") and record.get("kind") in KINDS:
            record["_path"] = str(path)
            records.append(record)
    return records


FLAT_FIELDS = ("kind", "status", "model", "family", "group", "parameters", "suite", "suite_fingerprint",
               "num_documents", "subsampled", "real_tokens", "padded_tokens", "batch_size", "token_budget",
               "backend", "dtype", "protocol", "device", "tokens_per_second", "max_batch_size", "max_token_budget",
               "memory_limit_gb", "created_at", "config_id", "gpu_dir", "reason")


def flatten(record: dict) -> dict:
    row = {key: record.get(key) for key in FLAT_FIELDS}
    gpu = record.get("gpu") or {}
    row.update(gpu_name=gpu.get("name"), gpu_id=gpu.get("basket_id") or record.get("gpu_dir"),
               driver=gpu.get("driver"), cuda=gpu.get("cuda"))
    stats = record.get("tokens_per_second_stats") or {}
    for key in ("median", "mean", "std", "min", "max", "iqr", "iqr_over_median"):
        row[f"tps_{key}"] = stats.get(key)
    env = record.get("environment") or {}
    row.update(torch=env.get("torch"), transformers=env.get("transformers"), git_commit=env.get("git_commit"))
    telemetry = record.get("telemetry") or {}
    row["throttled"] = telemetry.get("throttled")
    row["path"] = record.get("_path")
    return row


def load(directory: str | Path | list) -> "pandas.DataFrame":  # noqa: F821
    """All records under one or more directories as a DataFrame, one row per record."""
    import pandas as pd

    directories = directory if isinstance(directory, list) else [directory]
    return pd.DataFrame([flatten(r) for r in read_records(directories)], columns=[*FLAT_FIELDS, "gpu_name", "gpu_id",
                        "driver", "cuda", *(f"tps_{k}" for k in ("median", "mean", "std", "min", "max", "iqr",
                                                                   "iqr_over_median")),
                        "torch", "transformers", "git_commit", "throttled", "path"])
