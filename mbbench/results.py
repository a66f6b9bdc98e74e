"""The store: records as JSON files under results/<device>/, written atomically, found by identity.

Every command that produces records (`run`, `max-batch`, `predict`, `compare`, `matrix`) resumes through
`Store.find`: skip when a record answering the same configuration exists, otherwise produce it (`Store.produce`
turns an exception into a failure record), write it atomically and drop the failures it supersedes.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterator

from mbbench.errors import Interrupted, UserError
from mbbench.files import read_text, write_json
from mbbench.records import KINDS, Record


def write_atomic(path: Path, data: dict) -> Path:
    """Write strict JSON, UTF-8, atomically (`files.write_json`): never a partial file, an ordinary file's mode."""
    return write_json(path, data)


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
        data = json.loads(read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable record ({error})") from None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return None
    try:
        return Record.from_json(data, str(path))  # any schema: an older one is upgraded on read
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


def identity_key(record: Record) -> Hashable:
    """The default resume key: a record answers the configuration its identity names."""
    return record.key


class Store:
    """Records under `root`, indexed by a resume key. Creating one checks that `root` is writable.

    `resume_key(record)` says which configuration a record answers (None: it answers none here); the default is
    its identity key. A matrix driver, which knows a task's identity only up to the device, indexes by
    (GPU type, configuration key) instead: one index and one rule for every command's resume.
    """

    def __init__(self, root: str | Path, resume_key: Callable[[Record], Hashable | None] = identity_key):
        self.root = check_writable(root)
        self._resume_key = resume_key
        self._index: dict[Hashable, list[Record]] | None = None

    def path_for(self, record: Record) -> Path:
        return self.root / record.device.directory / f"{record.identity.file_stem()}.json"

    def index(self) -> dict[Hashable, list[Record]]:
        """Resume key -> records with it (oldest first)."""
        if self._index is None:
            self._index = {}
            for record in sorted(read_records([self.root]), key=lambda r: r.created_at):
                key = self._resume_key(record)
                if key is not None:
                    self._index.setdefault(key, []).append(record)
        return self._index

    def find(self, key: Hashable, include_failed: bool = False) -> Record | None:
        """The newest record answering `key` (a measurement outranks a failure); None when there is none."""
        found = [r for r in self.index().get(key, []) if include_failed or r.status != "failed"]
        found.sort(key=lambda r: (r.status != "failed", r.created_at))
        return found[-1] if found else None

    def write(self, record: Record) -> Path:
        """Write atomically; the new record removes the older failure records that answer its key."""
        path = write_atomic(self.path_for(record), record.to_json())
        key = self._resume_key(record)
        previous = self.index().setdefault(key, []) if key is not None else []
        for old in previous:
            if old.status == "failed" and old.source_path and Path(old.source_path) != path:
                Path(old.source_path).unlink(missing_ok=True)
        previous[:] = [r for r in previous if r.status != "failed" and r.source_path != str(path)] + [record]
        record.source_path = str(path)
        return path

    def produce(self, key: Hashable, make: Callable[[], Record], on_error: Callable[[Exception], Record],
                force: bool = False, retry_failed: bool = True) -> Outcome:
        """Resume or run one configuration: the one code path of run, max-batch, predict, compare and matrix.

        Skips when a record answering `key` exists (unless `force`; a failure is retried when `retry_failed`;
        a partial one, whose payload is not `complete`, runs again: its producer measures the rest). An exception
        from `make` becomes `on_error(exception)`'s failure record; KeyboardInterrupt propagates (records already
        written stay), after `errors.Interrupted`'s partial record is written, unless a complete record of the key
        exists (a `force` rerun): that one stays and the Interrupted names it (`kept`).
        """
        existing = self.find(key, include_failed=not retry_failed)
        if existing is not None and not force and getattr(existing.payload, "complete", True):
            return Outcome(existing, Path(existing.source_path or self.path_for(existing)), "skipped")
        try:
            record = make()
        except Interrupted as stop:  # Ctrl-C with part of it measured: keep that part, then stop
            if existing is not None and existing.status == "ok" and getattr(existing.payload, "complete", True):
                # only --force reaches here with a complete record: an interrupted rerun never replaces it
                stop.kept = Path(existing.source_path or self.path_for(existing))
            else:
                stop.path = self.write(stop.partial)
            raise
        except Exception as error:  # noqa: BLE001 - a failed configuration is a result, not a crash
            record = on_error(error)
        return Outcome(record, self.write(record), "ran")
