"""The explorer of the cells: thumbnails with known answers, the page's content, and the page in a real browser.

The browser test opens the page in headless Chromium (Debian's ``chromium``, installed with ``apt-get`` when missing,
as root, like tests/slurm/cluster.py installs SLURM; skipped, with the reason, where it cannot be). The page writes
what it did on its ``<html>`` element once the scatter is on screen (``data-explorer-*``, see
:mod:`statcell.plots.explorer`); Chromium's ``--dump-dom`` reads it back, and ``--screenshot`` shows the page.
"""

from __future__ import annotations

import html
import io as bytes_io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from statcell import cli, io
from statcell.analysis import thumbnails
from statcell.normalize import create_cell_store
from statcell.plots import explorer
from statcell.plots.style import CHANNEL_COLOURS

SHAPE = (6, 8, 10)  # Z, Y, X voxels of a constructed cell
BROWSER_PACKAGES = ("chromium",)
BROWSER_TIMEOUT_S = 120


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(bytes_io.BytesIO(data)) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def _rgb(name: str) -> list[int]:
    return [round(255 * value) for value in CHANNEL_COLOURS[name]]


def _store(path: Path, cells: np.ndarray, *, voxel_um: float = 0.8) -> Path:
    """A cells.zarr as normalize writes it, holding ``cells`` ((N, 3, Z, Y, X); the masks left empty)."""
    array = create_cell_store(path, (len(cells), 5, *cells.shape[2:]), voxel_um=voxel_um)
    full = np.zeros(array.shape, dtype=np.float32)
    full[:, :3] = cells
    array[:] = io.encode_cells(full, array.dtype)
    return path


# Thumbnails ----------------------------------------------------------------------------------------------------------


def test_a_bright_voxel_lands_in_its_pixel_of_both_views_in_its_channels_colour(tmp_path):
    cells = np.zeros((3, 3, *SHAPE), dtype=np.float32)
    voxels = {0: ("membrane", (1, 2, 3)), 1: ("dna", (4, 5, 7)), 2: ("structure", (0, 7, 9))}
    for index, (name, (z, y, x)) in voxels.items():
        cells[index, thumbnails.THUMBNAIL_CHANNELS.index(name), z, y, x] = 0.9
    store = _store(tmp_path / "cells.zarr", cells, voxel_um=0.8)
    table = pd.DataFrame({"cell_id": ["c/0", "c/1", "c/2"], "store_index": [0, 1, 2]})

    made = thumbnails.make_thumbnails(store, table, size=64)

    assert list(made.columns) == list(thumbnails.THUMBNAIL_COLUMNS)
    assert made["cell_id"].tolist() == table["cell_id"].tolist()
    for index, (name, (z, y, x)) in voxels.items():
        xy, xz = _png(made.loc[index, "xy_png"]), _png(made.loc[index, "xz_png"])
        assert xy.shape == (SHAPE[1], SHAPE[2], 3) and xz.shape == (SHAPE[0], SHAPE[2], 3)
        row = SHAPE[0] - 1 - z  # z points up: the coverslip (z = 0) is the bottom row
        for view, (r, c) in ((xy, (y, x)), (xz, (row, x))):
            assert view[r, c].tolist() == _rgb(name), (name, view[r, c])
            lit = np.argwhere(view.any(axis=2))
            assert lit.tolist() == [[r, c]], f"{name}: only the voxel's pixel is lit"


def test_channels_are_found_by_the_stores_names_not_their_position(tmp_path):
    import zarr

    cell = np.zeros((1, 3, *SHAPE), dtype=np.float32)
    cell[0, 0, 2, 3, 4] = 1.0  # stored first, but named "dna"
    root = zarr.open_group(tmp_path / "swapped.zarr", mode="w", zarr_format=3)
    root.attrs.update({"ome": {"omero": {"channels": [{"label": name} for name in ("dna", "membrane", "structure")]},
                               "multiscales": [{"datasets": [{"path": "0", "coordinateTransformations": [
                                   {"type": "scale", "scale": [1.0, 1.0, 0.8, 0.8, 0.8]}]}]}]}})
    root.create_array("0", data=cell)
    made = thumbnails.make_thumbnails(tmp_path / "swapped.zarr", pd.DataFrame({"cell_id": ["a"], "store_index": [0]}))
    assert _png(made.loc[0, "xy_png"])[3, 4].tolist() == _rgb("dna")

    root.attrs.update({"ome": {"omero": {"channels": [{"label": "membrane"}, {"label": "dna"}]}}})
    with pytest.raises(ValueError, match="structure"):
        thumbnails.make_thumbnails(tmp_path / "swapped.zarr", pd.DataFrame({"cell_id": ["a"], "store_index": [0]}))


def test_rows_follow_the_cells_table_through_store_index(tmp_path):
    cells = np.zeros((3, 3, *SHAPE), dtype=np.float32)
    for index in range(3):
        cells[index, 2, 0, index, 0] = 1.0  # cell k lights row k of its xy view
    store = _store(tmp_path / "cells.zarr", cells)
    table = pd.DataFrame({"cell_id": ["second", "zeroth"], "store_index": [2, 0]})
    made = thumbnails.make_thumbnails(store, table)
    assert made["store_index"].tolist() == [2, 0]
    assert [int(np.argwhere(_png(png).any(axis=2))[0, 0]) for png in made["xy_png"]] == [2, 0]
    with pytest.raises(ValueError, match="store_index"):
        thumbnails.make_thumbnails(store, pd.DataFrame({"cell_id": ["x"], "store_index": [3]}))


def test_views_keep_the_physical_aspect_and_fit_the_size():
    cell = np.random.default_rng(0).random((3, 10, 20, 30)).astype(np.float32)
    xy, xz = thumbnails.project_cell(cell, spacing=(2.0, 1.0, 1.0))  # z steps twice the pixel size
    assert xy.shape == (20, 30, 3) and xz.shape == (20, 30, 3)
    big = np.random.default_rng(1).random((3, 40, 120, 160)).astype(np.float32)
    xy, xz = thumbnails.project_cell(big, spacing=(1.0, 1.0, 1.0), size=64)
    assert xy.shape == (48, 64, 3) and xz.shape == (16, 64, 3)
    assert xy.dtype == np.uint8 and 0 < xy.mean() < 255


def test_png_encoder_round_trips():
    image = np.random.default_rng(2).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    assert np.array_equal(_png(thumbnails.encode_png(image)), image)


# The page ------------------------------------------------------------------------------------------------------------


def _cells(count: int, rng: np.random.Generator) -> pd.DataFrame:
    structures = np.array(["nucleoli", "golgi", "control_dna"])
    return pd.DataFrame({
        "cell_id": [f"main/fov_{index % 4:02d}/{index + 1}" for index in range(count)],
        "dataset": "main", "store_index": np.arange(count), "label": np.arange(count) + 1,
        "structure": structures[np.arange(count) % 3], "split": np.where(np.arange(count) % 5 == 0, "test", "train"),
        "drug": np.where(np.arange(count) % 2 == 0, "", "drug_a"), "is_mitotic": np.arange(count) % 7 == 0,
        "cell_volume_um3": rng.uniform(400, 1600, count), "nucleus_height_um": rng.uniform(3, 8, count)})


def _embedding(cells: pd.DataFrame, dims: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"cell_id": cells["cell_id"], "split": cells["split"],
                         **{f"mu_{i}": rng.normal(0, 0.1 + i, len(cells)) for i in range(dims)},
                         **{f"log_var_{i}": np.zeros(len(cells)) for i in range(dims)}})


@pytest.fixture(scope="module")
def page_inputs(tmp_path_factory) -> dict:
    """A constructed dataset of 41 cells: store, cells table, two embeddings, thumbnails and the explorer table."""
    folder = tmp_path_factory.mktemp("explorer")
    rng = np.random.default_rng(5)
    cells = _cells(41, rng)
    images = np.zeros((len(cells), 3, *SHAPE), dtype=np.float32)
    images[:, 0, :, 1:-1, 1:-1] = 0.3
    images[:, 1, 1:4, 3:6, 3:7] = 0.8
    images[:, 2, 2, 4, 5] = 1.0
    store = _store(folder / "cells.zarr", images)
    embeddings = {"reference": _embedding(cells, 4, rng), "target": _embedding(cells, 3, rng)}
    thumbnail_table = thumbnails.make_thumbnails(store, cells)
    table = explorer.explorer_table(cells, embeddings, thumbnail_table)
    return {"folder": folder, "store": store, "cells": cells, "embeddings": embeddings,
            "thumbnails": thumbnail_table, "table": table}


def test_explorer_table_holds_categories_measurements_latents_and_thumbnails(page_inputs):
    table, cells = page_inputs["table"], page_inputs["cells"]
    assert table["cell_id"].tolist() == cells["cell_id"].tolist()
    assert set(table["mitotic_stage"]) == {"mitotic", "interphase"}  # from is_mitotic
    assert set(table["drug"]) == {"untreated", "drug_a"}
    assert [column for column in table.columns if "_mu_" in column] == [
        "reference_mu_0", "reference_mu_1", "reference_mu_2", "reference_mu_3",
        "target_mu_0", "target_mu_1", "target_mu_2"]
    assert np.allclose(table["target_mu_2"], page_inputs["embeddings"]["target"]["mu_2"])
    assert "store_index" not in table.columns and "label" not in table.columns  # ids are not measurements
    assert all(uri.startswith("data:image/png;base64,") for uri in (*table["xy"], *table["xz"]))
    with pytest.raises(ValueError, match="duplicate"):
        explorer.explorer_table(pd.concat([cells, cells.head(1)]), {})


def test_features_join_on_the_cells_they_measure(page_inputs):
    cells = page_inputs["cells"]
    features = pd.DataFrame({"cell_id": [cells["cell_id"].iloc[2], cells["cell_id"].iloc[2], "prior/0"],
                             "source": ["real", "reconstruction", "prior"], "cell_sphericity": [0.9, 0.5, 0.1]})
    table = explorer.explorer_table(cells, {}, features=features)
    assert table["feature_cell_sphericity"].iloc[2] == 0.9  # the real cell's value, not its reconstruction's
    assert table["feature_cell_sphericity"].isna().sum() == len(cells) - 1
    assert "feature_cell_sphericity" in dict(explorer.axis_options(table))


def test_a_dose_series_is_coloured_dose_by_dose(page_inputs):
    cells = page_inputs["cells"]
    doses = np.where(np.arange(len(cells)) % 2, 1.0, 5.0)
    table = explorer.explorer_table(cells.assign(drug="taxol", concentration_um=doses), {})
    assert set(table["drug"]) == {"taxol 1 µM", "taxol 5 µM"}
    assert set(explorer.explorer_table(cells.assign(drug=""), {})["drug"]) == {"untreated"}


def test_a_column_without_any_value_is_no_axis_choice(page_inputs):
    cells = page_inputs["cells"].assign(junction_pool=np.nan)
    table = explorer.explorer_table(cells, {})
    assert "junction_pool" in table.columns
    assert "junction_pool" not in dict(explorer.axis_options(table))
    assert "cell_volume_um3" in dict(explorer.axis_options(table))


def test_pickers_list_every_latent_and_measured_column(page_inputs):
    from bokeh.models import AutocompleteInput, Select

    table = page_inputs["table"]
    document = explorer.explorer_document(table)
    pickers = {select.title: select for select in document.select({"type": Select})}
    expected = [*(f"reference_mu_{i}" for i in range(4)), *(f"target_mu_{i}" for i in range(3)),
                "cell_volume_um3", "nucleus_height_um"]
    for axis in ("x axis", "y axis"):
        assert [value for value, _ in pickers[axis].options] == expected
    assert dict(pickers["x axis"].options)["cell_volume_um3"] == "cell volume (µm³)"
    assert [value for value, _ in pickers["colour by"].options] == ["structure", "mitotic_stage", "drug", "split"]
    # At first: the two reference dimensions farthest from 0 on the test cells (the embedding's sd grows with i).
    assert (pickers["x axis"].value, pickers["y axis"].value) == ("reference_mu_2", "reference_mu_3")
    search = next(iter(document.select({"type": AutocompleteInput})))
    assert search.completions == table["cell_id"].tolist()
    renderer = document.select_one({"name": "cells"})
    assert len(renderer.data_source.data["cell_id"]) == len(table)
    assert pickers["colour by"].value == "structure"
    # a drug set of one structure opens coloured by treatment
    drug_set = table.assign(structure="microtubules", drug=np.where(np.arange(len(table)) % 2, "paclitaxel", ""))
    opened = {select.title: select.value for select in explorer.explorer_document(drug_set).select({"type": Select})}
    assert opened["colour by"] == "drug"


def _tags(page: str) -> list[tuple[str, dict]]:
    """Every HTML tag of a page with its attributes (the text of scripts is not parsed as tags)."""
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.found = []

        def handle_starttag(self, tag, attrs):
            self.found.append((tag, dict(attrs)))

    parser = Tags()
    parser.feed(page)
    return parser.found


def test_page_is_self_contained_and_holds_every_cell(page_inputs):
    page = explorer.draw_explorer(page_inputs["table"], page_inputs["folder"] / "page.html").read_text()
    tags = _tags(page)
    assert [tag for tag, attributes in tags if tag == "script" and "src" in attributes] == [], "no external scripts"
    assert [tag for tag, _ in tags if tag == "link"] == [], "no external style sheets"
    remote = [(tag, attributes) for tag, attributes in tags for name, value in attributes.items()
              if name in ("src", "href") and re.match(r"(https?:)?//", value or "")]
    assert remote == [], "nothing fetched from the network"
    assert sum(tag == "script" for tag, _ in tags) >= 3, "Bokeh's JavaScript is inline"
    assert page.index("explorerErrors") < page.index("<body"), "the error recorder runs before Bokeh"
    for cell_id in page_inputs["cells"]["cell_id"]:
        assert cell_id in page
    for png in page_inputs["thumbnails"]["xy_png"][:3]:
        import base64

        assert base64.b64encode(png).decode() in page


def test_cli_commands_write_the_thumbnails_and_the_page(page_inputs, tmp_path):
    cells_path, output = tmp_path / "cells.parquet", tmp_path / "thumbnails.parquet"
    io.write_table(page_inputs["cells"], cells_path)
    embedding_paths = []
    for model, table in page_inputs["embeddings"].items():
        io.write_table(table, tmp_path / "embeddings" / f"{model}.parquet")
        embedding_paths.append(str(tmp_path / "embeddings" / f"{model}.parquet"))
    for argv in (["make-thumbnails", "--store", str(page_inputs["store"]), "--cells", str(cells_path),
                  "--output", str(output)],
                 ["plot-explorer", "--cells", str(cells_path), "--embeddings", *embedding_paths,
                  "--thumbnails", str(output), "--output", str(tmp_path / "explorer" / "main.html")]):
        assert cli.main(argv) == 0
    made = pd.read_parquet(output)
    assert made["xy_png"].tolist() == page_inputs["thumbnails"]["xy_png"].tolist()
    page = (tmp_path / "explorer" / "main.html").read_text()
    assert "target_mu_2" in page and page_inputs["cells"]["cell_id"].iloc[-1] in page


def test_rules_run_in_environments_that_hold_what_they_import():
    """make_thumbnails reads the store (zarr, scipy); plot_explorer draws with Bokeh, without torch or zarr;
    screenshot_explorer needs only the statcell command (the browser is the machine's)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    text = (root / "rules" / "explorer.smk").read_text()
    rules = dict(re.findall(r'^rule (\w+):.*?conda:\s*"\.\./(envs/\w+\.yaml)"', text, flags=re.MULTILINE | re.DOTALL))
    assert set(rules) == {"make_thumbnails", "plot_explorer", "screenshot_explorer"}

    def packages(env: str) -> set[str]:
        entries = yaml.safe_load((root / env).read_text())["dependencies"]
        flat = [item for entry in entries for item in (entry["pip"] if isinstance(entry, dict) else [entry])]
        return {re.match(r"[\w\-]+", entry).group(0) for entry in flat}

    assert {"numpy", "pandas", "pyarrow", "scipy", "zarr"} <= packages(rules["make_thumbnails"])
    assert {"numpy", "pandas", "pyarrow", "bokeh"} <= packages(rules["plot_explorer"])
    assert not {"pytorch", "zarr"} & packages(rules["plot_explorer"])
    assert rules["screenshot_explorer"] == rules["plot_explorer"]


# In a real browser ---------------------------------------------------------------------------------------------------


def _ensure_browser(timeout_s: float = 900) -> str:
    """The path of a Chromium-family browser (:func:`statcell.plots.explorer.find_browser`), Debian's ``chromium``
    installed with ``apt-get`` (as root) if there is none; skip with the reason otherwise."""
    if explorer.find_browser():
        return explorer.find_browser()
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"chromium missing, and no apt-get as root to install {' '.join(BROWSER_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300",
               *BROWSER_PACKAGES]
    failure = ""
    for commands in ([install], [["apt-get", "update", "-o", "DPkg::Lock::Timeout=300"], install]):
        for command in commands:
            try:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pytest.skip(f"{' '.join(command)} took over {timeout_s:.0f} s")
            if done.returncode != 0:
                failure = f"{' '.join(command)}: {(done.stderr or done.stdout).strip()[-400:]}"
                break
        else:
            if explorer.find_browser():
                return explorer.find_browser()
            failure = "installed chromium but it is not on the PATH"
    pytest.skip(f"chromium cannot be installed: {failure}")


@pytest.fixture(scope="module")
def browser() -> str:
    return _ensure_browser()


def _open(browser: str, page: Path, *arguments: str, fragment: str = "") -> subprocess.CompletedProcess:
    command = explorer.browser_command(browser, page, *arguments, profile=page.parent / "chromium-profile",
                                       fragment=fragment)
    return subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)


def _page_state(dom: str) -> dict[str, str]:
    """The ``data-explorer-*`` attributes of the ``<html>`` element of a DOM dump."""
    match = re.search(r"<html\b([^>]*)>", dom)
    assert match, dom[:500]
    return {name: html.unescape(value) for name, value in re.findall(r'data-explorer-([\w-]+)="([^"]*)"',
                                                                        match.group(1))}


# Moves the pointer onto the first cell once the page is drawn (as a mouse would: pointerenter, then pointermove).
_HOVER_FIRST_CELL = """<script>
document.addEventListener("DOMContentLoaded", () => setTimeout(() => {
  const renderer = Bokeh.documents[0].get_model_by_name("cells");
  const view = Bokeh.index.find_one(renderer);
  const canvas = view.plot_view.canvas_view.events_el;
  const box = canvas.getBoundingClientRect();
  const at = {clientX: box.left + view.glyph.sx[0], clientY: box.top + view.glyph.sy[0], bubbles: true,
              pointerType: "mouse", isPrimary: true, pointerId: 1};
  canvas.dispatchEvent(new PointerEvent("pointerenter", at));
  canvas.dispatchEvent(new PointerEvent("pointermove", at));
}, 1000));
</script>
"""


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and re.search(r"Uncaught|[Ee]rror", line)]


def test_page_in_a_real_browser_draws_every_cell_without_errors(browser, page_inputs):
    table = page_inputs["table"].copy()
    table["sparse_um"] = np.where(np.arange(len(table)) % 4 == 0, np.nan, 1.0 + np.arange(len(table)))
    page = explorer.draw_explorer(table, page_inputs["folder"] / "browser" / "explorer.html")

    loaded = _open(browser, page, "--dump-dom")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    state = _page_state(loaded.stdout)
    assert state.get("ready") == "1", (state, loaded.stderr[-3000:])
    assert state["errors"] == "0", state.get("last-error")
    assert not _console_errors(loaded.stderr), _console_errors(loaded.stderr)
    assert state["cells"] == state["drawn"] == str(len(table)), state
    assert (state["x"], state["y"], state["colour"]) == ("reference_mu_2", "reference_mu_3", "structure")
    assert "selected" not in state

    # The address sets the pickers and finds a cell by part of its id: the callbacks run, and a cell without a
    # value on the chosen axis is not drawn (the count is of points on screen, not rows).
    wanted = table["cell_id"].iloc[13]
    moved = _open(browser, page, "--dump-dom", fragment="#x=sparse_um&y=target_mu_1&colour=split&cell=fov_01/14")
    state = _page_state(moved.stdout)
    assert state.get("ready") == "1" and state["errors"] == "0", (state, moved.stderr[-3000:])
    assert not _console_errors(moved.stderr), _console_errors(moved.stderr)
    assert (state["x"], state["y"], state["colour"]) == ("sparse_um", "target_mu_1", "split")
    assert state["drawn"] == str(int(table["sparse_um"].notna().sum())) != state["cells"]
    assert state["selected"] == wanted == "main/fov_01/14"  # written by the detail panel's callback

    screenshot = page.with_suffix(".png")
    shot = _open(browser, page, f"--screenshot={screenshot}", fragment=f"#cell={wanted}")
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-3000:]
    from PIL import Image

    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape == (900, 1400, 3)
    # The scatter's points are on screen in the structure palette (Category10's first colours, blended with white
    # at the alpha of points not selected).
    from bokeh.palettes import Category10

    for colour in Category10[3]:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        blended = 0.25 * rgb + 0.75 * 255
        near = np.abs(pixels - blended).max(axis=2) < 24
        assert near.sum() > 20, f"points of colour {colour} are drawn"
    # The found cell's enlarged views: a block of pure membrane colour (its rim, where no DNA overlaps).
    assert (np.abs(pixels - np.array(_rgb("membrane"))).max(axis=2) < 12).sum() > 500

    # Hovering a point (the pointer moved onto the first cell by a script added to a copy of the page) shows its
    # thumbnail: membrane-coloured pixels appear, with no cell selected, only in the tooltip.
    source = page.read_text()
    end = source.rindex("</body>")
    hovered = page.with_name("hovered.html")
    hovered.write_text(source[:end] + _HOVER_FIRST_CELL + source[end:])
    plain, hover = page.with_name("plain.png"), page.with_name("hover.png")
    for target, screenshot in ((page, plain), (hovered, hover)):
        done = _open(browser, target, f"--screenshot={screenshot}")
        assert done.returncode == 0 and screenshot.exists(), done.stderr[-3000:]
    magenta = []
    for screenshot in (plain, hover):
        with Image.open(screenshot) as image:
            pixels = np.asarray(image.convert("RGB")).astype(int)
        magenta.append(int((np.abs(pixels - np.array(_rgb("membrane"))).max(axis=2) < 12).sum()))
    assert magenta[0] == 0 and magenta[1] > 200, magenta


def test_screenshot_command_draws_the_page_as_it_first_opens(browser, page_inputs, tmp_path):
    """`statcell screenshot-explorer` (rule screenshot_explorer): the page as a PNG of the window's size, points on it."""
    from PIL import Image

    from statcell import cli

    page = explorer.draw_explorer(page_inputs["table"], tmp_path / "explorer.html")
    output = tmp_path / "figures" / "explorer.png"
    assert cli.main(["screenshot-explorer", "--page", str(page), "--browser", browser, "--output", str(output)]) == 0
    with Image.open(output) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape == (*explorer.SCREENSHOT_SIZE[::-1], 3)
    assert (pixels.std(axis=2) > 30).sum() > 1000, "coloured points and widgets, not a blank page"


def test_screenshot_without_a_browser_says_what_to_install(page_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on it
    page = explorer.draw_explorer(page_inputs["table"], tmp_path / "explorer.html")
    with pytest.raises(FileNotFoundError, match="apt-get install chromium.*figures.explorer.screenshot"):
        explorer.screenshot_page(page, tmp_path / "shot.png")


@pytest.mark.parametrize("screenshot", [True, False])
def test_the_screenshots_are_default_targets_as_figures_explorer_screenshot_says(tmp_path, screenshot):
    import sys

    import yaml

    from tests.test_workflow import TINY, copy_workflow

    folder = copy_workflow(tmp_path / "run")
    (folder / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "figures": {"explorer": {"screenshot": screenshot}}}))
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", "tiny.yaml"],
                         cwd=folder, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = set(re.findall(r"results/figures/explorer/\w+\.png", dry.stdout))
    assert planned == ({"results/figures/explorer/main.png", "results/figures/explorer/drugs.png"} if screenshot
                       else set())
