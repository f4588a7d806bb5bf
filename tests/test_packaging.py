"""The install and test commands a user copies: the README's and CI's stay the same, their extras exist."""

from __future__ import annotations

import re
import sys

from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    ci_line = next(line for line in ci.splitlines() if line.startswith("pip install -e"))
    install = ci_line.split(" && ")[0]  # CI then runs pytest; the README says so in words
    assert install in readme.splitlines()
    extras = set(re.search(r'"\.\[([^\]]+)\]"', ci_line).group(1).split(","))
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared) and "jax" in extras
