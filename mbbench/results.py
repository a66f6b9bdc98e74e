"""The store: records as JSON files under results/<device>/, written atomically, found by identity.

Every command that produces records (`run`, `max-batch`, `predict`, `compare`, `matrix`) goes through
`Store.produce`: skip when a record of the same identity exists (resume), otherwise produce it, turn an
exception into a failure record, write it atomically and drop the failure it supersedes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from mbbench.errors import UserError
from mbbench.records import KINDS, Identity, Record


def write_atomic(path: Path, data: dict) -> Path:
    """Write JSON to a temporary file in the same directory, fsync, then rename: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
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
    if not str(root).strip():
        raise UserError("--out is empty: name a directory for the records")
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test."):
            pass
    except OSError as error:
        raise UserError(f"cannot write results to {root}: {error.strerror or error}") from None
    return root


def iter_record_files(directories: list[str | Path]) -> Iterator[Path]:
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            raise UserError(f"results directory {directory} does not exist or is not a directory")
        yield from sorted(p for p in directory.rglob("*.json") if not p.name.startswith("."))


def read_record(path: Path) -> Record | None:
    """The record in a file (any schema version), None when the JSON is not a record; UserError if unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable record ({error})") from None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return None
    try:
        return Record.from_json(data, str(path))
    except (ValueError, TypeError, KeyError):
        return None


def read_records(directories: list[str | Path]) -> list[Record]:
    """Every record under the directories (sweep CSVs and other JSON are ignored)."""
    return [r for r in (read_record(p) for p in iter_record_files(directories)) if r is not None]


def load(directories: str | Path | list) -> "pandas.DataFrame":  # noqa: F821
    """All records under one or more directories as a DataFrame, one `Record.flatten()` row per record."""
    import pandas as pd

    directories = directories if isinstance(directories, list) else [directories]
    return pd.DataFrame([r.flatten() for r in read_records(directories)])


@dataclass
class Outcome:
    """What the store did with one configuration."""

    record: Record
    path: Path
    state: str  # "ran" or "skipped" (a record of the same identity exists)

    @property
    def status(self) -> str:
        return self.record.status


class Store:
    """Records under `root`, indexed by identity key. Creating one checks that `root` is writable."""

    def __init__(self, root: str | Path):
        self.root = check_writable(root)
        self._index: dict[str, list[Record]] | None = None

    def path_for(self, record: Record) -> Path:
        return self.root / record.device.directory / f"{record.identity.file_stem()}.json"

    def index(self) -> dict[str, list[Record]]:
        """Identity key -> records with it (newest last)."""
        if self._index is None:
            self._index = {}
            for record in sorted(read_records([self.root]), key=lambda r: r.created_at):
                self._index.setdefault(record.key, []).append(record)
        return self._index

    def find(self, identity: Identity, include_failed: bool = False) -> Record | None:
        """The newest record of this identity (a measurement outranks a failure); None when there is none."""
        found = [r for r in self.index().get(identity.key(), []) if include_failed or r.status != "failed"]
        found.sort(key=lambda r: (r.status != "failed", r.created_at))
        return found[-1] if found else None

    def write(self, record: Record, supersedes: Iterable[Record] = ()) -> Path:
        """Write atomically; the new record removes the older failure records of its identity and any failure
        among `supersedes` (a matrix task's failure filed before it reached a device, under another identity)."""
        path = write_atomic(self.path_for(record), record.to_json())
        previous = self.index().setdefault(record.key, [])
        for old in [*previous, *supersedes]:
            if old.status == "failed" and old.source_path and Path(old.source_path) != path:
                Path(old.source_path).unlink(missing_ok=True)
        previous[:] = [r for r in previous if r.status != "failed"] + [record]
        record.source_path = str(path)
        return path

    def produce(self, identity: Identity, make: Callable[[], Record], on_error: Callable[[Exception], Record],
                force: bool = False, retry_failed: bool = True) -> Outcome:
        """Resume or run one configuration: the one code path of run, max-batch, predict and matrix.

        Skips when a record of `identity` exists (unless `force`; a failure is retried when
        `retry_failed`). An exception from `make` becomes `on_error(exception)`'s failure record;
        KeyboardInterrupt propagates (records already written stay).
        """
        existing = self.find(identity, include_failed=not retry_failed)
        if existing is not None and not force:
            return Outcome(existing, Path(existing.source_path or self.path_for(existing)), "skipped")
        try:
            record = make()
        except Exception as error:  # noqa: BLE001 - a failed configuration is a result, not a crash
            record = on_error(error)
        return Outcome(record, self.write(record), "ran")
