"""What software and machine produced a result: captured once per run, stored in every record."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import mbbench

# Bump when what is timed, or how, changes: records with different method versions do not compare.
METHOD_VERSION = 1
RELEVANT_ENV = ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "CUDA_DEVICE_ORDER", "OMP_NUM_THREADS",
                "PYTORCH_TUNABLEOP_ENABLED")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(mbbench.__file__).parent, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(mbbench.__file__).parent, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def capture() -> dict:
    import torch

    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = None
    return {
        "mbbench": mbbench.__version__,
        "method_version": METHOD_VERSION,
        "torch": torch.__version__,
        "transformers": transformers_version,
        "python": platform.python_version(),
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "command_line": " ".join(["mbbench", *sys.argv[1:]]) if sys.argv else None,
        "env": {k: os.environ[k] for k in RELEVANT_ENV if k in os.environ},
    }
