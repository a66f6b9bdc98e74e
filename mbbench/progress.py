"""Progress bars for long measurements: a thin facade over tqdm (already installed with transformers).

    with progress_bar(total=runs * len(models), description="paired passes") as bar:
        ...
        bar.advance(model="modernbert-base", tokens_per_s=f"{rate:,.0f}")

The bar goes to stderr and shows count, elapsed time and ETA. It writes nothing when disabled or
when the stream is not a terminal (logs, CI, pipes, Ray workers), so records and JSON on stdout
are never interleaved with bar frames.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, ETA {remaining}{postfix}]"
UNKNOWN_TOTAL_FORMAT = "{desc}: {n_fmt} [{elapsed}{postfix}]"


class ProgressBar:
    """A context manager counting finished units; `count` is kept even when nothing is drawn."""

    def __init__(self, total: int | None, description: str, enabled: bool = True, stream: TextIO | None = None,
                 unit: str = "it"):
        self.total, self.description, self.count = total, description, 0
        stream = sys.stderr if stream is None else stream
        self.enabled = enabled and _is_terminal(stream)
        self._bar: tqdm | None = None
        if self.enabled:
            self._bar = tqdm(total=total, desc=description, file=stream, unit=unit, dynamic_ncols=True, leave=True,
                             bar_format=BAR_FORMAT if total is not None else UNKNOWN_TOTAL_FORMAT)

    def advance(self, n: int = 1, **postfix: object) -> None:
        """Count `n` more finished units; `postfix` (e.g. model=..., tokens_per_s=...) is shown after the ETA."""
        self.count += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: str(v) for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)

    def write(self, message: str) -> None:
        """A line printed above the bar without breaking it; nothing when the bar is disabled."""
        if self._bar is not None:
            self._bar.write(message, file=self._bar.fp)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def progress_bar(total: int | None, description: str, enabled: bool = True, stream: TextIO | None = None,
                 unit: str = "it") -> ProgressBar:
    """A progress bar over `total` units (None: unknown, no percentage or ETA) on `stream` (default stderr).

    Draws nothing when `enabled` is False or `stream` is not a TTY.
    """
    return ProgressBar(total, description, enabled, stream, unit)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
