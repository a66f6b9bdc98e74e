"""A wheel (not an editable install) ships the paper's suites (issue 14, part 7), whose source of truth is suites/ at
the top of the repository (issue 26).

Builds the wheel without build isolation, installs it with --no-deps into a fresh venv that sees this
interpreter's packages (torch, transformers ...) but not this checkout, and lists suites from a directory
outside the repository through the console script.
"""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAPER_SUITES = ("long-fixed", "long-variable", "short-fixed", "short-variable")


def _run(*args, cwd, env=None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _parent_site_packages() -> list[str]:
    """This interpreter's site-packages (a venv's own, unlike --system-site-packages' base ones)."""
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(p for p in paths if Path(p).is_dir()))


@pytest.mark.slow
def test_wheel_ships_the_suites(tmp_path):
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    source = tmp_path / "source"
    shutil.copytree(REPO / "mbbench", source / "mbbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "suites", source / "suites")  # the source of truth, at the top (issue 26)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--quiet",
         "-w", str(wheels), cwd=tmp_path, env=env)
    [wheel] = wheels.glob("mbbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(n for n in archive.namelist() if n.startswith("mbbench/data/suites/"))
    assert shipped == [f"mbbench/data/suites/{name}.toml" for name in PAPER_SUITES], shipped
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel),
         cwd=tmp_path, env=env)
    own_site = _run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip()
    # After the install (pip would see this checkout's editable mbbench and skip): plain path lines make the
    # parent's packages importable after the venv's own; its .pth files (the editable mbbench) do not run.
    (Path(own_site) / "parent_env.pth").write_text("\n".join(_parent_site_packages()) + "\n")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    location = _run(str(python), "-c", "import mbbench; print(mbbench.__file__)", cwd=outside, env=env)
    assert location.startswith(str(venv)), location  # the wheel's copy, not this checkout
    listing = _run(str(venv / "bin" / "mbbench"), "list", "suites", cwd=outside, env=env)
    for name in PAPER_SUITES:
        assert name in listing, listing
    assert "8192       4194304" in listing  # short-fixed's documents and tokens, read from the shipped file


def test_the_readme_says_what_dev_installs_and_where_torchs_cpu_build_comes_from():
    """Issue 34 item 8: the README said `.[dev]` is pytest, hypothesis and Ray (it is the engines too) and that
    `torch==2.13.0` takes the CPU build (only where a local wheel exists; PyPI's Linux torch is CUDA's)."""
    import re
    import tomllib

    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    names = [re.split(r"[<>=!~\[ ]", requirement)[0].lower() for requirement in dev]
    readme = (REPO / "README.md").read_text()
    start = readme.index("`.[dev]` is the tests'")
    said = readme[start:readme.index(".\n", start)]  # the sentence that says what it installs
    assert [name for name in names if name not in said.lower()] == [], (names, said)
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in readme
    assert "pip install torch==2.13.0 -e ." not in readme  # PyPI's torch on Linux: the CUDA build
