"""Files mbbench writes: UTF-8 text, replaced atomically, readable by the user's other tools, names bounded.

Every record, report, figure, CSV and cache file goes through `replace_atomically`: it is written to a
temporary file beside its target, flushed to disk and renamed over it, so a reader never sees half a file and
a failure leaves the old one (or none) in place. `tempfile.mkstemp` creates its file with mode 0600; the
target gets the mode `open()` would have given it (0666 less the umask, 0644 with the usual umask 022), as
every other tool's output does. Text is UTF-8 whatever the locale (a C locale would otherwise refuse "±").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from mbbench.records import without_non_finite

ENCODING = "utf-8"
MAX_NAME_BYTES = 255  # NAME_MAX of ext4, xfs, btrfs, APFS and NTFS (in UTF-16 units there, no fewer here)
MAX_STEM_CHARS = 160  # a record's stem: leaves room for ".json" and the temporary file's ".<stem>.<random>.tmp"


def _umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it; else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding=ENCODING).splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_mode(directory: bool = False) -> int:
    """The mode `open()` (0666) or `mkdir()` (0777) would give under the current umask: 0644 / 0755 usually."""
    return (0o777 if directory else 0o666) & ~_umask()


def safe_name(text: str) -> str:
    """`text` with every run of characters outside [A-Za-z0-9._=-] turned into one "-": a portable file name."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text)


def bounded_name(readable: str, key: str = "", suffix: str = "", limit: int = MAX_STEM_CHARS) -> str:
    """A file name: `readable` made safe and cut so that it, "__" and `key` fit in `limit` characters, then `suffix`.

    The key (a hash) stays whole, so two names that differ only past the cut stay distinct. ASCII only, so
    characters are bytes. Raises ValueError when the key and suffix alone do not fit in MAX_NAME_BYTES.
    """
    key_part = f"__{key}" if key else ""
    if len(key_part) + len(suffix) > MAX_NAME_BYTES:
        raise ValueError(f"key {key!r} and suffix {suffix!r} do not fit in a file name")
    room = max(0, min(limit, MAX_NAME_BYTES - len(suffix)) - len(key_part))
    prefix = safe_name(readable)[:room].rstrip("-_.") if room else ""
    return (prefix + key_part).lstrip("_") + suffix


@contextlib.contextmanager
def replace_atomically(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error, fsync it, give it an ordinary
    file's mode and rename it over `path`. On any error (KeyboardInterrupt included) the temporary is removed
    and `path` is left as it was. The parent directory is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, ordinary_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` as UTF-8, atomically (`replace_atomically`)."""
    with replace_atomically(path) as tmp:
        # a lone surrogate (a non-UTF-8 byte in a path or argument, as Python decodes it) is written as its \u
        # escape: still valid JSON and readable text, where strict UTF-8 would fail after the work was done
        tmp.write_text(text, encoding=ENCODING, errors="backslashreplace")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data`, atomically (`replace_atomically`)."""
    with replace_atomically(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def to_json(data: Any) -> str:
    """Strict JSON (RFC 8259: no NaN or Infinity), indented, keys sorted, one trailing newline.

    Raises ValueError naming every non-finite value (callers make those null with a reason first).
    """
    _, bad = without_non_finite(data)
    if bad:
        raise ValueError("not finite, so not JSON: " + ", ".join(f"{k}={v}" for k, v in sorted(bad.items())))
    return json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=False, ensure_ascii=False) + "\n"


def write_json(path: str | Path, data: Any) -> Path:
    """Strict JSON (`to_json`) as UTF-8, atomically."""
    return write_text(path, to_json(data))


def read_text(path: str | Path) -> str:
    """A text file mbbench reads (records, suites, matrix files, configs): UTF-8 whatever the locale."""
    return Path(path).read_text(encoding=ENCODING)
