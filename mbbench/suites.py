"""Benchmark suites: TOML definitions -> deterministic document lengths and token ids -> batches.

A suite file (see `suites/*.toml`, shipped with the package, and docs/suites.md) defines the number of documents, a length
distribution (`fixed`, `normal` truncated then clamped to [min, max], or `empirical`: real
document lengths, inline or from a file, resampled with the seed), a token-id range and a seed.
Generation uses torch's CPU generator only, so the same suite yields the same documents on every
machine and device. Token ids are drawn per document from a generator seeded by (suite seed,
document index), so a subsample never needs the whole suite in memory. Empirical lengths are read
when the file is parsed and kept in the definition, so a suite travels to other nodes without its
lengths file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import torch

from mbbench.batching import (PackedBatch, PaddedBatch, check_budget, check_grouping, group_by_count,
                              group_by_tokens, pack_documents, pad_documents)
from mbbench.errors import UserError
from mbbench.records import portable_suite_path

DISTRIBUTIONS = ("fixed", "normal", "empirical")
# Definition fields left out of the fingerprint: the lengths they produce are in it, where they live is not;
# `sample` only for the distributions that have no such field (so their fingerprints never changed).
_UNFINGERPRINTED = ("values", "lengths_file")


SOURCE_SUITES = Path(__file__).resolve().parent.parent / "suites"  # the paper's suites in a checkout


def package_suites():
    """The paper's four suites (short/long x fixed/variable). Their source of truth is `suites/` at the top of
    the repository; a wheel carries copies in mbbench/data/suites (setup.py's build step). An importlib.resources
    Traversable: the wheel's copies when installed from one, else the checkout's folder (editable installs,
    PYTHONPATH)."""
    shipped = resources.files("mbbench").joinpath("data/suites")
    return shipped if shipped.is_dir() else SOURCE_SUITES


def portable_path(suite: "Suite") -> str:
    """Where a suite's file is, as a record may say it: relative to the working directory when under it, else
    "suites/<file>" or the bare file name (`records.portable_suite_path`); never an absolute path."""
    path = Path(suite.path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return portable_suite_path(str(path.resolve()))



@dataclass(frozen=True)
class SuiteDefinition:
    name: str
    documents: int
    distribution: str
    length: int | None  # fixed
    mean: float | None  # normal
    std: float | None
    min_length: int
    max_length: int
    token_low: int
    token_high: int
    seed: int
    description: str = ""
    values: tuple[int, ...] | None = None  # empirical: the lengths read (after clamping), in file order
    lengths_file: str | None = None  # empirical: the file they came from (None: inline)
    sample: bool = True  # empirical: draw `documents` of `values` with replacement; False: use them as-is

    def fingerprint_fields(self) -> dict:
        """The definition as the fingerprint sees it (see `_UNFINGERPRINTED`)."""
        fields = {k: v for k, v in asdict(self).items() if k not in _UNFINGERPRINTED}
        if self.distribution != "empirical":
            del fields["sample"]
        return fields


def _require(table: dict, key: str, source: str, kind=(int, float)):
    if key not in table:
        raise UserError(f"{source}: missing field {key!r}")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UserError(f"{source}: field {key!r} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # TOML has nan and inf
        raise UserError(f"{source}: field {key!r} must be a finite number, got {value!r}")
    return value


# Every field a suite file may have (docs/suites.md): a misspelt one is an error, never a silent default.
TOP_LEVEL_FIELDS = ("name", "description", "documents", "seed", "lengths", "tokens")
LENGTH_FIELDS = {"fixed": ("distribution", "length"), "normal": ("distribution", "mean", "std", "min", "max"),
                 "empirical": ("distribution", "values", "file", "column", "sample", "min", "max")}
# Lengths are generated in memory (8 bytes each): ten million documents is 80 MB, far beyond any suite's need.
MAX_DOCUMENTS = 10_000_000


def _refuse_unknown(table: dict, known: tuple[str, ...], source: str, prefix: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise UserError(f"{source}: unknown field(s) {', '.join(prefix + u for u in unknown)}; "
                        f"known here: {', '.join(prefix + k for k in known)}")


def parse_definition(data: dict, source: str, base_dir: Path | None = None) -> SuiteDefinition:
    """Validate a suite table; every error names the file and the field.

    `source` is the suite file's path (for messages); an empirical `lengths.file` is resolved
    against `base_dir`, by default the directory of `source`. Raises UserError.
    """
    lengths, tokens = data.get("lengths"), data.get("tokens", {"low": 100, "high": 16000})
    if not isinstance(lengths, dict):
        raise UserError(f"{source}: missing [lengths] table")
    if not isinstance(tokens, dict):
        raise UserError(f"{source}: 'tokens' must be a table ([tokens] with low and high)")
    name = data.get("name") or Path(source).stem
    distribution = lengths.get("distribution")
    if distribution not in DISTRIBUTIONS:
        raise UserError(f"{source}: field 'lengths.distribution' must be one of {DISTRIBUTIONS}, got {distribution!r}")
    _refuse_unknown(data, TOP_LEVEL_FIELDS, source, "")
    _refuse_unknown(lengths, LENGTH_FIELDS[distribution], source, "lengths.")
    _refuse_unknown(tokens, ("low", "high"), source, "tokens.")
    values, lengths_file, sample = None, None, True
    if distribution == "empirical":
        values, lengths_file = _empirical_values(lengths, source, Path(source).parent if base_dir is None else base_dir)
        sample = lengths.get("sample", True)
        if not isinstance(sample, bool):
            raise UserError(f"{source}: field 'lengths.sample' must be true or false, got {sample!r}")
    documents = len(values) if values is not None and "documents" not in data else \
        _require(data, "documents", source, int)
    if not 0 < documents <= MAX_DOCUMENTS:
        raise UserError(f"{source}: field 'documents' must be between 1 and {MAX_DOCUMENTS:,}, got {documents}")
    if distribution == "fixed":
        length = _require(lengths, "length", f"{source} [lengths]", int)
        if length <= 0:
            raise UserError(f"{source}: field 'lengths.length' must be positive, got {length}")
        mean = std = None
        low, high = length, length
    elif distribution == "empirical":
        if not sample and documents != len(values):
            raise UserError(f"{source}: field 'documents' ({documents}) must equal the number of lengths "
                            f"({len(values)}) when 'lengths.sample' is false (or be left out)")
        length = mean = std = None
        low, high = min(values), max(values)
    else:
        length = None
        mean = _require(lengths, "mean", f"{source} [lengths]")
        std = _require(lengths, "std", f"{source} [lengths]")
        low = _require(lengths, "min", f"{source} [lengths]", int)
        high = _require(lengths, "max", f"{source} [lengths]", int)
        if std < 0:
            raise UserError(f"{source}: field 'lengths.std' must not be negative, got {std}")
        if low < 1:
            raise UserError(f"{source}: field 'lengths.min' must be >= 1, got {low}")
        if low > high:
            raise UserError(f"{source}: field 'lengths.min' ({low}) is greater than 'lengths.max' ({high})")
    token_low = _require(tokens, "low", f"{source} [tokens]", int)
    token_high = _require(tokens, "high", f"{source} [tokens]", int)
    if not 0 <= token_low < token_high:
        raise UserError(f"{source}: fields 'tokens.low'/'tokens.high' need 0 <= low < high, got {token_low}, {token_high}")
    seed = _require(data, "seed", source, int) if "seed" in data else 42
    return SuiteDefinition(name, documents, distribution, length, mean, std, low, high, token_low, token_high, seed,
                           data.get("description", ""), values, lengths_file, sample)


def _empirical_values(table: dict, source: str, base_dir: Path) -> tuple[tuple[int, ...], str | None]:
    """The lengths of an empirical [lengths] table (inline `values` or a `file`), clamped to optional min/max.

    Raises UserError naming the suite file, the field and, for a lengths file, the file and line.
    """
    if ("values" in table) == ("file" in table):
        raise UserError(f"{source}: an empirical [lengths] table needs exactly one of 'lengths.values' "
                        f"(a list of lengths) or 'lengths.file' (a .txt or .csv file, one length per line)")
    if "values" in table:
        raw, lengths_file = table["values"], None
        if not isinstance(raw, list) or not raw:
            raise UserError(f"{source}: field 'lengths.values' must be a non-empty list of lengths, got {raw!r}")
        for position, value in enumerate(raw):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"{source}: field 'lengths.values' item {position} must be a positive integer, "
                                f"got {value!r}")
        values = list(raw)
    else:
        if not isinstance(table["file"], str):
            raise UserError(f"{source}: field 'lengths.file' must be a path, got {table['file']!r}")
        path = base_dir / table["file"]
        column = table.get("column")
        if column is not None and not isinstance(column, str):
            raise UserError(f"{source}: field 'lengths.column' must be a CSV column name, got {column!r}")
        values, lengths_file = read_lengths(path, f"field 'lengths.file' of {source}", column), str(path)
    low = _require(table, "min", f"{source} [lengths]", int) if "min" in table else 1
    high = _require(table, "max", f"{source} [lengths]", int) if "max" in table else None
    if low < 1:
        raise UserError(f"{source}: field 'lengths.min' must be >= 1, got {low}")
    if high is not None and low > high:
        raise UserError(f"{source}: field 'lengths.min' ({low}) is greater than 'lengths.max' ({high})")
    clamped = (max(v, low) for v in values)
    return tuple(clamped if high is None else (min(v, high) for v in clamped)), lengths_file


def read_lengths(path: Path, context: str, column: str | None = None) -> list[int]:
    """Document lengths from a text file (one per line) or a CSV file (one column, or the named `column`).

    Blank lines and lines starting with '#' are skipped; a CSV's first row may be a header.
    Raises UserError (naming `path`, the line and `context`) for a missing, empty or malformed file.
    """
    if not path.is_file():
        raise UserError(f"{path}: lengths file not found ({context})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read lengths file ({context}): {error}") from None
    if path.suffix.lower() == ".csv":
        rows = [(number, row) for number, row in enumerate(csv.reader(text.splitlines()), 1)
                if row and not row[0].lstrip().startswith("#")]
        rows = _csv_column(rows, path, context, column)
    else:
        if column is not None:
            raise UserError(f"{path}: 'lengths.column' applies to .csv files only ({context})")
        rows = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")]
    lengths = []
    for number, cell in rows:
        try:
            value = int(cell)
        except ValueError:
            value = 0
        if value <= 0:
            raise UserError(f"{path} line {number}: {cell!r} is not a positive integer length ({context})")
        lengths.append(value)
    if not lengths:
        raise UserError(f"{path}: no lengths in file ({context})")
    return lengths


def _csv_column(rows: list[tuple[int, list[str]]], path: Path, context: str,
                column: str | None) -> list[tuple[int, str]]:
    """(line, cell) of the lengths column; the header row, if any, is dropped."""
    if not rows:
        return []
    header = rows[0][1]
    has_header = not header[0].strip().lstrip("-").isdigit()
    if column is not None:
        names = [h.strip() for h in header]
        if not has_header or column not in names:
            raise UserError(f"{path}: no column {column!r} in the header {header} ({context})")
        index = names.index(column)
    elif len(header) != 1:
        raise UserError(f"{path}: {len(header)} columns; name the lengths column with 'lengths.column' ({context})")
    else:
        index = 0
    body = rows[1:] if has_header else rows
    return [(number, row[index].strip() if index < len(row) else "") for number, row in body]


@dataclass(frozen=True)
class Suite:
    definition: SuiteDefinition
    path: str

    @property
    def name(self) -> str:
        return self.definition.name

    @cached_property
    def lengths(self) -> list[int]:
        d = self.definition
        if d.distribution == "fixed":
            return [d.length] * d.documents
        if d.distribution == "empirical":
            if not d.sample:
                return list(d.values)
            picks = torch.randint(0, len(d.values), (d.documents,), generator=torch.Generator().manual_seed(d.seed))
            return [d.values[i] for i in picks.tolist()]
        generator = torch.Generator().manual_seed(d.seed)
        draws = torch.randn(d.documents, generator=generator, dtype=torch.float64) * d.std + d.mean
        # truncate toward zero then clamp, as the paper's generator does (int(normal(...)))
        return draws.trunc().clamp(d.min_length, d.max_length).to(torch.int64).tolist()

    @property
    def max_length(self) -> int:
        return max(self.lengths)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the definition and the lengths actually used (not of where a lengths file lives)."""
        payload = json.dumps({"definition": self.definition.fingerprint_fields(), "lengths": self.lengths},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def document(self, index: int) -> torch.Tensor:
        d = self.definition
        generator = torch.Generator().manual_seed(d.seed * 1_000_003 + index)
        return torch.randint(d.token_low, d.token_high, (self.lengths[index],), generator=generator)

    def statistics(self, documents: int | None = None) -> dict:
        lengths = self.lengths[:documents] if documents else self.lengths
        count = len(lengths)
        mean = sum(lengths) / count
        std = math.sqrt(sum((n - mean) ** 2 for n in lengths) / count)
        return {"suite": self.name, "documents": count, "total_tokens": sum(lengths), "mean": round(mean, 1),
                "std": round(std, 1), "min": min(lengths), "max": max(lengths)}


def suite_directories() -> list:
    """Where suites are looked up by name, first match wins: ./suites of the cwd (user suites), then the
    paper's suites (`package_suites`: the checkout's suites/, or the wheel's copies)."""
    return [Path.cwd() / "suites", package_suites()]


def _read_suite(path) -> Suite:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({error})") from None
    return Suite(parse_definition(data, str(path)), str(path))


def _is_path(name_or_path: str) -> bool:
    return name_or_path.endswith(".toml") or "/" in name_or_path or os.sep in name_or_path


def load_suite(name_or_path: str, search: list | None = None) -> Suite:
    """A suite by name (looked up in `search`, default `suite_directories()`) or by path to a TOML file.

    Raises UserError for an unknown name (listing the known ones), a missing file, invalid TOML or fields.
    """
    if _is_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise UserError(f"suite file {name_or_path!r} not found")
        return _read_suite(path)
    for directory in search or suite_directories():
        path = directory / f"{name_or_path}.toml"
        if path.is_file():
            return _read_suite(path)
    known = ", ".join(suite_names()) or "none found"
    raise UserError(f"unknown suite {name_or_path!r} (known: {known}; or pass a path to a .toml file)")


def suite_names() -> list[str]:
    """Names of every suite findable by name (user ./suites and the shipped ones), sorted."""
    names: set[str] = set()
    for directory in suite_directories():
        if directory.is_dir():
            names.update(entry.name.removesuffix(".toml") for entry in directory.iterdir()
                         if entry.name.endswith(".toml") and entry.is_file())
    return sorted(names)


def check_vocabulary(suite: Suite, vocab_size: int, model_name: str) -> None:
    """Refuse a suite whose token ids do not all exist in a model's vocabulary.

    Ids are drawn from [tokens.low, tokens.high), so `tokens.high` must be <= `vocab_size`; otherwise the
    embedding lookup fails on the device (an index error, or a CUDA assert that kills the process).
    Raises UserError naming the suite, the model and both numbers.
    """
    high = suite.definition.token_high
    if high > vocab_size:
        raise UserError(f"suite {suite.name} draws token ids up to {high - 1} ([tokens] high = {high}), but "
                        f"{model_name}'s vocabulary has {vocab_size} ids (0 to {vocab_size - 1}); "
                        f"set [tokens] high <= {vocab_size} in {suite.path}")


def select_documents(suite: Suite, documents: int | None) -> list[int]:
    """The first N documents (documents are i.i.d., so a prefix is an unbiased, reproducible subsample)."""
    if documents is None:
        return list(range(suite.definition.documents))
    if documents <= 0:
        raise UserError(f"--docs must be positive, got {documents}")
    return list(range(min(documents, suite.definition.documents)))


def make_batches(suite: Suite, indices: list[int], layout: str, batch_size: int | None = None,
                 token_budget: int | None = None, pad_token_id: int = 0,
                 pad_to: int | None = None) -> list[PaddedBatch | PackedBatch]:
    """Group the chosen documents (in order) and build batches in the model's layout, on the CPU.

    Raises UserError when both `batch_size` and `token_budget` are given, or a document exceeds the budget.
    """
    check_grouping(batch_size, token_budget)
    lengths = [suite.lengths[i] for i in indices]
    if token_budget is not None:
        check_budget(lengths, token_budget, indices, f"suite {suite.name}: ")
        groups = group_by_tokens(lengths, token_budget)
    else:
        groups = group_by_count(lengths, batch_size or len(lengths))
    batches = []
    for group in groups:
        docs = [suite.document(indices[i]) for i in group]
        batches.append(pack_documents(docs) if layout == "packed" else pad_documents(docs, pad_token_id, pad_to))
    return batches
