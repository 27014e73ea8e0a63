"""pyproject.toml: metadata that a fresh ``make install`` builds without deprecation warnings."""

from __future__ import annotations

import fnmatch
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


WORKER = PYPROJECT.parent / "worker"
#: Files the package reads at run time beside its modules.
DATA_FILES = (
    "worker/config/definitions/default.yaml",
    "worker/config/triggers/default.yaml",
    "worker/adapters/state.zdict",
    "worker/adapters/state-2.zdict",
)


def test_every_subpackage_is_packaged() -> None:
    find = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        ".".join(path.parent.relative_to(PYPROJECT.parent).parts)
        for path in WORKER.rglob("__init__.py")
    }
    assert len(packages) > 8
    for package in packages:
        assert any(fnmatch.fnmatchcase(package, pattern) for pattern in find), package


def test_the_data_files_are_package_data() -> None:
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    packaged = {
        path.relative_to(PYPROJECT.parent).as_posix()
        for package, patterns in data.items()
        for pattern in patterns
        for path in PYPROJECT.parent.joinpath(*package.split(".")).glob(pattern)
    }
    for name in DATA_FILES:
        assert (PYPROJECT.parent / name).is_file(), name
        assert name in packaged, f"{name} is not in [tool.setuptools.package-data]"
