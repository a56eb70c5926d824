"""The conda environments (for --sdm conda users) agree with pyproject.toml, the install path of the README."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: conda-forge names that differ from PyPI's.
CONDA_TO_PYPI = {"pytorch": "torch", "dask": "dask[distributed]", "distributed": "dask[distributed]"}
#: The workflow driver, installed beside the environments rather than inside them.
#: pygments: for `snakemake --report`, which the driver builds.
DRIVER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm", "pygments"}


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


#: Import name of each package whose import name differs from its (PyPI or conda) name.
IMPORT_NAMES = {"pytorch": "torch", "torch": "torch", "scikit-image": "skimage", "scikit-learn": "sklearn",
                "pyyaml": "yaml", "dask[distributed]": "dask", "bioio-ome-tiff": "bioio_ome_tiff",
                "bioio-tifffile": "bioio_tifffile"}


def _import_names(packages) -> set[str]:
    names = {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in packages}
    return names | ({"distributed"} if "dask[distributed]" in packages else set())


def _rules() -> dict[str, dict[str, str]]:
    """Every rule of rules/*.smk: its conda env file and the statcell subcommand its shell runs (``use rule``
    inherits what it does not set). A rule generated in a loop (``rule:`` with ``name: f"stage_{...}"``) is named
    by its name's fixed start, ``stage``."""
    rules: dict[str, dict[str, str]] = {}
    blocks = []
    for path in sorted((ROOT / "rules").glob("*.smk")):
        blocks += re.split(r"^(?=[ \t]*(?:rule \w+:|rule:|use rule \w+ as \w+ with:))", path.read_text(),
                           flags=re.MULTILINE)[1:]
    for block in sorted(blocks, key=lambda block: block.lstrip().startswith("use ")):  # a `use rule` after its parent
        header = re.match(r"\s*(?:rule (\w+):|rule:\s+name:\s+f\"(\w+?)_?\{|use rule (\w+) as (\w+) with:)", block)
        name = header.group(1) or header.group(2) or header.group(4)
        rule = dict(rules[header.group(3)]) if header.group(3) else {}
        if conda := re.search(r'conda:\s*\n\s*"\.\./(envs/[\w.]+)"', block):
            rule["env"] = conda.group(1)
        if command := re.search(r'\{STATCELL\} ([a-z][a-z-]+)', block):
            rule["command"] = command.group(1)
        if command := re.search(r'\bcommand="([a-z-]+)"', block):
            rule["command"] = command.group(1)
        rules[name] = rule
    return {name: rule for name, rule in rules.items() if "command" in rule}


def _modules_of(command: str) -> list[str]:
    """The modules a subcommand imports: the CLI, its handler's own imports and, for a figure, its plots module."""
    import inspect
    import textwrap

    from statcell import cli

    parser = cli._build_parser()._subparsers._group_actions[0].choices[command]
    handler = parser.get_default("handler")
    modules = ["statcell.cli"]
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(handler)))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):  # from a package: its modules named; from a module: the module
            package = ROOT / node.module.replace(".", "/")
            modules += [f"{node.module}.{alias.name}" if (package / f"{alias.name}.py").exists() else node.module
                        for alias in node.names]
    figure = parser.get_default("figure")
    if figure is not None:
        modules.append(figure.draw.split(":")[0])
    return modules


_BLOCKED_IMPORT = """
import importlib, json, sys

BLOCKED = set(sys.argv[1].split(","))

class Blocker:
    '''Refuse the blocked packages to statcell's own code (a package the environment holds may use what it pulls).'''
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in BLOCKED:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
            frame = frame.f_back
        importer = frame.f_globals.get("__name__", "") if frame is not None else ""
        if importer.startswith("statcell") or importer == "__main__":
            raise ModuleNotFoundError(f"{name} is not in the environment (imported by {importer})")
        return None

sys.meta_path.insert(0, Blocker())
failures = {}
for rule, modules in json.loads(sys.argv[2]).items():
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            failures[rule] = f"{type(error).__name__}: {error}"
            break
print(json.dumps(failures))
"""


def test_every_rule_environment_holds_what_its_command_imports():
    """For every rule: the modules its subcommand imports (the CLI, the handler's imports, a figure's plots module)
    import in a Python where the project's dependencies missing from the rule's conda env cannot be imported by
    statcell, so the rule runs under --sdm conda. Function-local imports deeper in the library are not followed.
    The rules of one environment share one Python: they are refused the same packages, so what one rule's modules
    imported the next may use."""
    import json
    import subprocess
    import sys
    from collections import defaultdict

    known = _import_names(_pyproject()) - _import_names(DRIVER_ONLY)
    rules = _rules()
    assert {"plot_latent_scatter", "train_beta_sweep", "preprocess_fovs", "check_models"} <= set(rules)
    by_environment: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for name, rule in sorted(rules.items()):
        assert "env" in rule, f"rule {name} has no conda: env"
        by_environment[rule["env"]][name] = _modules_of(rule["command"])
    failures = []
    for environment, modules in sorted(by_environment.items()):
        blocked = known - _import_names(_environment(ROOT / environment))
        run = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORT, ",".join(sorted(blocked)) or "-",
                              json.dumps(modules)], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0, f"{environment}: the import check itself failed:\n{run.stderr}"
        failures += [f"rule {name} ({rules[name]['command']}, {environment}): {error}"
                     for name, error in json.loads(run.stdout).items()]
    assert not failures, "\n".join(failures)


def test_figure_rules_run_without_torch_or_zarr():
    plots = _import_names(_environment(ROOT / "envs" / "plots.yaml"))
    assert not plots & {"torch", "zarr", "lightning"}
    for name, rule in _rules().items():
        if name.startswith("plot_"):
            assert rule["env"] == "envs/plots.yaml", name
