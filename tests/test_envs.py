"""The conda environments (for --sdm conda users) agree with pyproject.toml, the install path of the README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: conda-forge names that differ from PyPI's.
CONDA_TO_PYPI = {"pytorch": "torch", "dask": "dask[distributed]", "distributed": "dask[distributed]"}
#: The workflow driver, installed beside the environments rather than inside them.
DRIVER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}


def _split(requirement: str) -> tuple[str, str]:
    name, specifier = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", requirement.strip()).groups()
    return name.lower(), specifier.replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(_split(requirement) for requirement in project["dependencies"])


def _environment(path: Path) -> dict[str, str]:
    spec = yaml.safe_load(path.read_text())
    packages: dict[str, str] = {}
    for entry in spec["dependencies"]:
        for requirement in entry["pip"] if isinstance(entry, dict) else [entry]:
            name, specifier = _split(requirement)
            if name not in ("python", "pip"):
                packages[CONDA_TO_PYPI.get(name, name)] = specifier
    return packages


def test_every_environment_package_is_a_project_dependency_with_the_same_bound():
    project = _pyproject()
    for path in sorted((ROOT / "envs").glob("*.yaml")):
        for name, specifier in _environment(path).items():
            assert name in project, f"{path.name}: {name} is not a dependency in pyproject.toml"
            assert specifier == project[name], f"{path.name}: {name}{specifier} but pyproject.toml has {project[name]}"


def test_every_project_dependency_is_in_some_environment():
    covered = set().union(*(_environment(path) for path in (ROOT / "envs").glob("*.yaml")))
    missing = set(_pyproject()) - covered - DRIVER_ONLY
    assert not missing, f"pyproject.toml dependencies in no envs/*.yaml: {sorted(missing)}"


def test_environments_use_the_same_python():
    pythons = {str(next(e for e in yaml.safe_load(p.read_text())["dependencies"] if str(e).startswith("python")))
               for p in (ROOT / "envs").glob("*.yaml")}
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert pythons == {f"python{requires}"}
