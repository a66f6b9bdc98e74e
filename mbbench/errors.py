"""Exceptions that carry a message meant for the user (the CLI prints them on one line, exit 2), and the one rule
for what counts as running out of device memory (`is_oom`: the max-batch search and every failure record)."""


class UserError(Exception):
    """A bad input: unknown name, malformed file, impossible option. Shown as-is to the user."""


class BackendUnavailable(UserError):
    """An attention backend was asked for explicitly but cannot run here."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C after part of a measurement finished: `partial` (a `records.Record` whose payload says it is not
    `complete`) holds what finished; the store writes it before the interruption goes on (`results.Store.produce`)."""

    def __init__(self, partial: object):
        super().__init__()
        self.partial = partial
        self.path: object | None = None  # where the store wrote it
        self.kept: object | None = None  # a complete record a --force rerun left in place instead of writing it


# Generic CUDA errors that mean "out of memory" (matched case-insensitively in the message).
OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def is_oom(error: BaseException) -> bool:
    """True for the typed CUDA OOM and for RuntimeErrors (e.g. torch.AcceleratorError) whose message says
    the device ran out of memory ("CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED")."""
    if type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(marker.lower() in text for marker in OOM_MARKERS)
