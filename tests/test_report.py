"""The figure book: ``snakemake --report report.html`` works after the README's plain install, and every caption is
clean reStructuredText."""

from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import docutils.core
import jinja2
import pytest
import yaml

from statcell.config import validate_config
from tests.test_workflow import copy_run, snakemake, tiny_full_run

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = sorted((ROOT / "workflow" / "report").glob("*.rst"))


def _base_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower() for requirement in project["dependencies"]}


def test_the_plain_install_brings_what_snakemake_report_needs():
    # Snakemake's HTML report imports pygments, which snakemake itself does not require; docutils and jinja2 it does.
    assert "pygments" in _base_dependencies()
    import pygments.formatters  # noqa: F401
    from snakemake.report.html_reporter import data  # noqa: F401 - the report's own imports resolve


@pytest.mark.parametrize("caption", CAPTIONS, ids=[path.name for path in CAPTIONS])
def test_every_caption_renders_without_rst_problems(caption):
    """As Snakemake renders a caption: Jinja2 first (as Snakemake sets it up; captions may use ``snakemake.config``,
    here the default config), then docutils; any message of level 2 (warning) or above, such as an undefined
    ``|substitution|``, fails. Job-specific values (wildcards, params) render empty here."""
    config = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined)
    text = environment.from_string(caption.read_text()).render(snakemake=SimpleNamespace(config=config),
                                                               categories={}, files={})
    messages = io.StringIO()
    docutils.core.publish_doctree(text, source_path=str(caption),
                                  settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": messages})
    assert not messages.getvalue(), messages.getvalue()


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_runs")  # the session's tiny run (tests/test_workflow.py)
def test_the_report_of_a_finished_run_holds_every_figure(tmp_path_factory, tmp_path):
    run = copy_run(tiny_full_run(tmp_path_factory), tmp_path / "run")  # the report is written into the folder
    built = snakemake(run, "--report", "report.html", timeout=900)
    log = built.stdout + built.stderr
    assert not re.search(r"\((WARNING|ERROR|SEVERE)/\d\)", log), log  # docutils' messages on the captions
    report = run / "report.html"
    head = report.read_bytes()[:512].lstrip().lower()
    assert head.startswith((b"<!doctype html", b"<html")), head[:80]
    text = report.read_text(errors="ignore")
    figures = sorted(path.name for path in (run / "results" / "figures").glob("*.png"))
    assert figures, "the tiny run drew no figures"
    explorer = sorted(path.name for path in (run / "results" / "figures" / "explorer").iterdir())
    assert {"main.html", "drugs.html"} <= set(explorer), explorer  # with their screenshots where a browser is
    figures += explorer
    missing = [name for name in figures if name not in text]
    assert not missing, f"figures not in the report: {missing}"


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_runs")  # the session's tiny run (tests/test_workflow.py)
def test_explorer_screenshots_go_into_the_report(tmp_path_factory, tmp_path):
    """With ``figures.explorer.screenshot: true`` (a browser installed as tests/test_explorer.py installs it), the
    finished run draws a PNG of each explorer page, and only those, and the report embeds them beside the pages."""
    from tests.test_explorer import _ensure_browser

    _ensure_browser()
    run = copy_run(tiny_full_run(tmp_path_factory), tmp_path / "run")
    settings = yaml.safe_load((run / "tiny.yaml").read_text())
    settings["figures"]["explorer"]["screenshot"] = True
    (run / "tiny.yaml").write_text(yaml.safe_dump(settings))
    drawn = snakemake(run, timeout=900)
    ran = set(re.findall(r"^(?:local)?rule (\w+):", drawn.stdout + drawn.stderr, flags=re.MULTILINE)) - {"all"}
    assert ran == {"screenshot_explorer"}, ran
    shots = run / "results" / "figures" / "explorer"
    for dataset in ("main", "drugs"):
        assert (shots / f"{dataset}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", dataset
    snakemake(run, "--report", "report.html", timeout=900)
    text = (run / "report.html").read_text(errors="ignore")
    assert all(name in text for name in ("main.png", "drugs.png", "main.html", "drugs.html"))
