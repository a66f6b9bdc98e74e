"""The `mbbench` console script: Ctrl-C while the commands are still importing torch and matplotlib exits 130 with
one line, not a traceback (`mbbench.entry`)."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import mbbench.entry

REPO = Path(__file__).resolve().parent.parent

# A fresh interpreter in which importing torch is interrupted, as Ctrl-C during `import torch` would be: a finder
# ahead of every other raises KeyboardInterrupt for it, wherever in the commands' imports it is first asked for.
CTRL_C_AT_TORCH = """
import sys

class CtrlCAtTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlCAtTorch())
sys.argv = ["mbbench", "list", "models"]
from mbbench.entry import main
main()
"""


def test_the_console_script_is_the_entry_that_catches_ctrl_c():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mbbench"] == "mbbench.entry:main"


def test_ctrl_c_while_importing_the_commands_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(name):
        assert name == "mbbench.cli"
        raise KeyboardInterrupt

    monkeypatch.setattr(mbbench.entry.importlib, "import_module", interrupted)
    with pytest.raises(SystemExit) as stopped:
        mbbench.entry.main()
    assert stopped.value.code == 130
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "mbbench: interrupted while starting; nothing ran\n"


def test_ctrl_c_during_import_torch_in_a_fresh_process_prints_no_traceback():
    """Through `mbbench.cli.main` directly the same process prints the import machinery's traceback and dies of
    SIGINT; through the entry, one line and 130."""
    done = subprocess.run([sys.executable, "-c", CTRL_C_AT_TORCH], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "mbbench: interrupted while starting; nothing ran\n" and done.stdout == ""


def test_without_ctrl_c_the_entry_runs_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["mbbench", "--version"])
    with pytest.raises(SystemExit) as done:
        mbbench.entry.main()
    assert done.value.code == 0 and "version" in capsys.readouterr().out
