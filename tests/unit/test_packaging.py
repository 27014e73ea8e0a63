"""pyproject.toml: metadata that a fresh ``make install`` builds without deprecation warnings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
#: The first setuptools that reads ``project.license`` as an SPDX expression (PEP 639);
#: older ones need the table form, which newer ones warn about.
SPDX_LICENSE_SETUPTOOLS = (77, 0)


def _pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def test_the_license_is_an_spdx_expression() -> None:
    license_ = _pyproject()["project"]["license"]
    assert license_ == "Apache-2.0", "project.license must be an SPDX string, not a table"


def test_the_build_requires_a_setuptools_that_reads_spdx_licenses() -> None:
    requires = _pyproject()["build-system"]["requires"]
    (setuptools,) = (r for r in requires if re.match(r"setuptools\b", r))
    floor = re.fullmatch(r"setuptools\s*>=\s*(\d+)(?:\.(\d+))?.*", setuptools)
    assert floor, f"{setuptools!r} has no lower bound"
    assert (int(floor[1]), int(floor[2] or 0)) >= SPDX_LICENSE_SETUPTOOLS
