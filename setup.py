"""The one build step pyproject.toml cannot say: the paper's suites live in suites/ at the top of the repository
(the files a user opens and edits) and ship inside the wheel as mbbench/data/suites/*.toml, where
`mbbench.suites.package_suites` finds them in an installed package. Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SUITES = Path(__file__).resolve().parent / "suites"


class BuildWithSuites(build_py):
    """build_py, plus a copy of suites/*.toml into the built package's data/suites."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's suites/ directly
            return
        target = Path(self.build_lib) / "mbbench" / "data" / "suites"
        self.mkpath(str(target))
        for suite in sorted(SUITES.glob("*.toml")):
            self.copy_file(str(suite), str(target / suite.name))


setup(cmdclass={"build_py": BuildWithSuites})
