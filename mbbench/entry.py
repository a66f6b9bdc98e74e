"""The `mbbench` console script (pyproject.toml's [project.scripts]): `mbbench.cli.main`, except that Ctrl-C while
the commands are still being imported exits 130 with one line instead of a traceback.

Importing `mbbench.cli` imports every command, and with them torch and matplotlib: seconds in which Ctrl-C lands in
the import machinery. A console script imports its module before calling anything in it, so that import cannot sit
at the top of the module `main` lives in: here it is `importlib.import_module` inside the try that catches it (not
to dodge a cycle: to be the thing the try covers). Once the commands are imported, `cli.Group` handles Ctrl-C.
"""

from __future__ import annotations

import importlib
import sys

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C stopped


def main() -> None:
    """Import the command line and run it; on Ctrl-C during the import, one line on stderr and exit status 130."""
    try:
        cli = importlib.import_module("mbbench.cli")
    except KeyboardInterrupt:
        sys.stderr.write("mbbench: interrupted while starting; nothing ran\n")
        raise SystemExit(INTERRUPTED) from None
    cli.main()


if __name__ == "__main__":  # `python -m mbbench.entry`, as the console script runs it
    main()
