"""Progress bars for long measurements: a thin facade over tqdm (already installed with transformers).

    with progress_bar(total=runs * len(models), description="paired passes") as bar:
        ...
        bar.advance(model="modernbert-base", tokens_per_s=f"{rate:,.0f}")

The bar goes to stderr and shows count, elapsed time and ETA. When the stream is not a terminal (logs,
CI, pipes, Ray workers) it writes plain lines instead (`passes: 3/10 [12.3 s]`), at most one every
`LINE_INTERVAL_S` seconds plus the last, so a piped run is never silent for minutes and a log holds no bar
frames. It writes nothing when disabled. `write` puts a line above the bar (or in the log), so messages
never collide with it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from types import TracebackType
from typing import Callable, Iterator, TextIO

from tqdm import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, ETA {remaining}{postfix}]"
UNKNOWN_TOTAL_FORMAT = "{desc}: {n_fmt} [{elapsed}{postfix}]"
LINE_INTERVAL_S = 10.0  # off a terminal: at most one progress line this often (and always the last)
HEARTBEAT_S = 30.0  # a silent step (an export, a compile) says it is still at work this often


class ProgressBar:
    """A context manager counting finished units; `count` is kept even when nothing is drawn."""

    def __init__(self, total: int | None, description: str, enabled: bool = True, stream: TextIO | None = None,
                 unit: str = "it"):
        self.total, self.description, self.count = total, description, 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.drawn = enabled and _is_terminal(self.stream)  # a bar; otherwise lines
        self._bar: tqdm | None = None
        self._started = self._last_line = time.monotonic()
        if self.drawn:
            self._bar = tqdm(total=total, desc=description, file=self.stream, unit=unit, dynamic_ncols=True,
                             leave=True, bar_format=BAR_FORMAT if total is not None else UNKNOWN_TOTAL_FORMAT)

    def advance(self, n: int = 1, **postfix: object) -> None:
        """Count `n` more finished units; `postfix` (e.g. model=..., tokens_per_s=...) is shown after the ETA."""
        self.count += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: str(v) for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)
        elif self.enabled:
            now = time.monotonic()
            if now - self._last_line >= LINE_INTERVAL_S or self.count == self.total:
                self._last_line = now
                extra = "".join(f", {k}={v}" for k, v in postfix.items())
                total = f"/{self.total}" if self.total is not None else ""
                self._line(f"{self.description}: {self.count}{total} [{now - self._started:.1f} s{extra}]")

    def set_total(self, total: int | None) -> None:
        """Change the number of units once it is known better (e.g. a comparison side left out before its rounds)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def write(self, message: str) -> None:
        """A line printed above the bar without breaking it (a plain line off a terminal); nothing when disabled."""
        if self._bar is not None:
            self._bar.write(message, file=self._bar.fp)
        elif self.enabled:
            self._line(message)

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

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

    Plain lines when `stream` is not a TTY; nothing when `enabled` is False.
    """
    return ProgressBar(total, description, enabled, stream, unit)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextlib.contextmanager
def heartbeat(say: Callable[[str], None] | None, doing: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """While the body runs, `say(f"{doing}: 30 s so far")` every `every_s` seconds (from a daemon thread), so a
    step with nothing to count (an engine's export and compile: 80-136 s) is never silent; nothing when `say` is
    None. Exceptions of the body pass through; the thread stops with it."""
    if say is None:
        yield
        return
    stop, started = threading.Event(), time.monotonic()

    def beat() -> None:
        while not stop.wait(every_s):
            say(f"{doing}: {time.monotonic() - started:.0f} s so far")

    thread = threading.Thread(target=beat, name="mbbench-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
