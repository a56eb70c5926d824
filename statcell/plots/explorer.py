"""The explorer of the cells: one self-contained, interactive HTML page (Bokeh) to browse every cell of a dataset.

A scatter of all cells, with pickers for its axes (the latent means of the reference and target models, the measured
features of the cells) and its colour (structure, mitotic stage, treatment, split). Hovering a point shows the cell's
thumbnail (xy and xz maximum projections in the channel colours, from :mod:`statcell.analysis.thumbnails`); clicking
it, or finding it by its id in the search box, shows it larger with its id and measurements.

The page carries Bokeh's JavaScript inline and the thumbnails as ``data:`` URIs: it opens from ``file://`` with no
server and no network. Its state can be set from the address (``explorer.html#x=cell_volume_um3&y=reference_mu_2&
colour=split&cell=main/fov_00/3``), so a view can be shared as a link. Once drawn, the page writes on its ``<html>``
element ``data-explorer-ready``, ``data-explorer-cells`` (rows of its table), ``data-explorer-drawn`` (points the
scatter drew on screen), ``data-explorer-x``/``-y``/``-colour`` (the axes and colouring shown),
``data-explorer-selected`` (the cell shown large) and ``data-explorer-errors`` (JavaScript errors seen): what the
browser test reads.

Drawing only: the tables come in computed (never imports torch or zarr).
"""

from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from statcell.analysis.perturbation import UNTREATED, UNTREATED_LABEL, conditions

#: Categorical columns the points can be coloured by, with their labels, in the picker's order.
COLOUR_KEYS: dict[str, str] = {"structure": "structure", "mitotic_stage": "mitotic stage", "drug": "treatment",
                               "split": "split"}
#: The colouring the page opens with: the first of these that tells the cells apart.
_FIRST_COLOUR = ("structure", "drug", "mitotic_stage", "split")
#: Numeric columns of the cells table that identify rather than measure (never offered as axes).
_NOT_MEASURED = re.compile(r"(^|_)(index|label|id|seed)$")
_UNITS = {"um3": "µm³", "um2": "µm²", "um": "µm"}
_LABELS = {"concentration_um": "drug concentration (µM)"}  # where the suffix is not a length
#: Names a Chromium-family browser is installed under (Debian's ``chromium``, other distributions', Google's builds).
BROWSERS: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Window of the screenshot, CSS pixels (width, height): the scatter, its pickers and the selected cell's panel.
SCREENSHOT_SIZE: tuple[int, int] = (1400, 900)
_THUMB_PX = 96  # width of the hover thumbnail on screen (CSS pixels; the PNGs are enlarged without smoothing)
_LARGE_PX = 288  # width of the clicked cell's views

# Written into <head> before Bokeh runs: every error the page meets is counted on <html data-explorer-errors>.
_ERROR_RECORDER = """
<script>
(function () {
  const root = document.documentElement;
  root.dataset.explorerErrors = "0";
  const record = (message) => {
    root.dataset.explorerErrors = String(Number(root.dataset.explorerErrors) + 1);
    root.dataset.explorerLastError = String(message).slice(0, 500);
  };
  window.addEventListener("error", (event) => record(event.message || event.error));
  window.addEventListener("unhandledrejection", (event) => record(event.reason));
  const error = console.error.bind(console);
  console.error = (...args) => { record(args.join(" ")); error(...args); };
})();
</script>
"""
_TEMPLATE = """{% extends base %}
{% block preamble %}""" + _ERROR_RECORDER + """{% endblock %}
"""


def explorer_table(cells: pd.DataFrame, embeddings: Mapping[str, pd.DataFrame], thumbnails: pd.DataFrame | None = None,
                   features: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell with everything the page shows: categories, measurements, latent means and thumbnails.

    Parameters
    ----------
    cells : DataFrame
        ``cells.parquet``: ``cell_id``, ``structure``, ``split``, and where present ``mitotic_stage`` or
        ``is_mitotic``, ``drug`` and measurements (numeric columns).
    embeddings : mapping of str to DataFrame
        Per model name (``reference``, ``target``): its embedding table (``cell_id``, ``mu_0``, ...). Column
        ``mu_i`` becomes ``<model>_mu_i``.
    thumbnails : DataFrame, optional
        :func:`statcell.analysis.thumbnails.make_thumbnails`'s table (``cell_id``, ``xy_png``, ``xz_png``).
    features : DataFrame, optional
        A per-cell feature table (``cell_id``, numeric columns; with a ``source`` column only its ``real`` rows),
        columns prefixed ``feature_``; cells it lacks get NaN.

    Returns
    -------
    DataFrame
        In the order of ``cells``: ``cell_id``, the colour keys (as text; missing ones left out, ``drug`` the cell's
        condition, :func:`~statcell.analysis.perturbation.conditions`, empty as ``untreated``, ``mitotic_stage``
        from ``is_mitotic`` where only that is given), measurement columns,
        ``<model>_mu_i`` and ``xy``, ``xz`` (PNG ``data:`` URIs, empty where a cell has no thumbnail).
    """
    if "cell_id" not in cells.columns:
        raise ValueError("the cells table lacks column 'cell_id'")
    if cells["cell_id"].duplicated().any():
        raise ValueError("the cells table holds duplicate cell ids")
    table = pd.DataFrame({"cell_id": cells["cell_id"].astype(str).to_numpy()})
    for key in COLOUR_KEYS:
        if key == "drug" and key in cells.columns:  # the condition the drug analyses test: a dose series dose by dose
            table[key] = conditions(cells).replace(UNTREATED, UNTREATED_LABEL).to_numpy()
        elif key in cells.columns:
            table[key] = cells[key].astype("string").fillna("").to_numpy()
        elif key == "mitotic_stage" and "is_mitotic" in cells.columns:
            table[key] = np.where(cells["is_mitotic"].fillna(False).astype(bool), "mitotic", "interphase")
    if "mitotic_stage" in table.columns:
        table["mitotic_stage"] = table["mitotic_stage"].replace("", "unknown")
    for column in measurement_columns(cells):
        table[column] = cells[column].to_numpy(dtype=np.float64)
    for model, embedding in embeddings.items():
        means = [column for column in embedding.columns if re.fullmatch(r"mu_\d+", column)]
        if not means:
            raise ValueError(f"the {model} embedding table has no mu_* columns")
        part = embedding.set_index("cell_id")[means].rename(columns=lambda column: f"{model}_{column}")
        table = table.join(part, on="cell_id")
    if features is not None:
        rows = features[features["source"] == "real"] if "source" in features.columns else features
        part = rows.drop_duplicates("cell_id").set_index("cell_id")[measurement_columns(rows)]
        table = table.join(part.add_prefix("feature_"), on="cell_id")
    for view in ("xy", "xz"):
        uris = pd.Series("", index=table.index)
        if thumbnails is not None and len(thumbnails):
            encoded = thumbnails.set_index("cell_id")[f"{view}_png"].map(
                lambda png: "data:image/png;base64," + base64.b64encode(bytes(png)).decode("ascii"))
            uris = table["cell_id"].map(encoded).fillna("")
        table[view] = uris.to_numpy()
    return table


def measurement_columns(cells: pd.DataFrame) -> list[str]:
    """Numeric, non-boolean columns of a cells table that measure something (ids, indices and labels left out)."""
    return [column for column in cells.columns
            if pd.api.types.is_numeric_dtype(cells[column]) and not pd.api.types.is_bool_dtype(cells[column])
            and not _NOT_MEASURED.search(str(column)) and column != "cell_id"]


def axis_options(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The axis pickers' choices ``(column, label)``: latent means first (model by model), then measurements.
    A column without a single value (a ground-truth column of a colony that lacks it) is no choice."""
    latent = [column for column in table.columns if re.fullmatch(r"\w+_mu_\d+", column)]
    measured = [column for column in table.columns if column not in latent and column != "cell_id"
                and column not in COLOUR_KEYS and column not in ("xy", "xz")
                and pd.api.types.is_numeric_dtype(table[column]) and table[column].notna().any()]
    return [(column, _label(column)) for column in (*latent, *measured)]


def draw_explorer(table: pd.DataFrame, output: str | Path, *, title: str = "Statistical Cell: explorer of the cells",
                  x: str | None = None, y: str | None = None) -> Path:
    """Write the explorer page of an :func:`explorer_table`: :func:`explorer_document` as one self-contained HTML
    file (Bokeh's JavaScript inline).

    Parameters
    ----------
    table : DataFrame
        :func:`explorer_table`'s output.
    output : path
        HTML file to write.
    title, x, y
        As in :func:`explorer_document`.

    Returns
    -------
    Path
        ``output``.
    """
    from bokeh.embed import file_html
    from bokeh.resources import INLINE
    from jinja2 import Template

    document = explorer_document(table, title=title, x=x, y=y)
    page = file_html(document, INLINE, title, template=Template(_TEMPLATE),
                     template_variables={"base": _base_template()})
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(output)
    return output


def explorer_document(table: pd.DataFrame, *, title: str = "Statistical Cell: explorer of the cells",
                      x: str | None = None, y: str | None = None):
    """The explorer of an :func:`explorer_table` as a Bokeh document (the scatter, its pickers, search and panels).

    Parameters
    ----------
    table : DataFrame
        :func:`explorer_table`'s output.
    title : str
        Page title.
    x, y : str, optional
        Columns on the axes at first. Default: the two reference latent dimensions with the largest mean absolute
        deviation from 0 on the test cells (as in the latent scatter), else the first two axis choices.

    Returns
    -------
    bokeh.document.Document
        One root; the scatter's renderer is named ``cells``, the pickers are its ``Select`` widgets.
    """
    from bokeh.document import Document
    from bokeh.events import DocumentReady
    from bokeh.layouts import column, row
    from bokeh.models import AutocompleteInput, ColumnDataSource, CustomJS, Div, HoverTool, Select, TapTool
    from bokeh.plotting import figure

    options = axis_options(table)
    if len(options) < 2:
        raise ValueError("the explorer needs at least two numeric columns (latent means or measurements)")
    labels = dict(options)
    x, y = _default_axes(table, options) if x is None and y is None else (x or options[0][0], y or options[1][0])
    for chosen in (x, y):
        if chosen not in labels:
            raise ValueError(f"{chosen!r} is not an axis choice; choose from {list(labels)}")
    keys = [key for key in COLOUR_KEYS if key in table.columns]
    numeric = [column for column, _ in options]
    # Numbers travel as float32 (half the page's bytes per number; ample for display), the rest as text.
    data = {column: table[column].to_numpy(dtype=np.float32) if column in numeric else table[column].to_numpy()
            for column in table.columns}
    legends = {}
    for key in keys:
        colours, legends[key] = _colours(table[key])
        data[f"_colour_{key}"] = colours
    # at first: structure, or, where every cell has the same (a drug set of one structure), the treatment
    distinct = [key for key in _FIRST_COLOUR if key in keys and table[key].nunique() > 1]
    colour_key = distinct[0] if distinct else (keys[0] if keys else "")
    # What is drawn: _x, _y, _colour (copies of the chosen columns; the pickers swap them in the browser)
    data["_colour"] = data[f"_colour_{colour_key}"] if keys else np.full(len(table), "#1f77b4")
    data["_x"], data["_y"] = data[x], data[y]
    source = ColumnDataSource(data)

    plot = figure(width=760, height=640, tools="pan,wheel_zoom,box_zoom,reset,save", active_scroll="wheel_zoom",
                  x_axis_label=labels[x], y_axis_label=labels[y], toolbar_location="above")
    points = plot.scatter("_x", "_y", source=source, size=7, fill_color="_colour", line_color="_colour", fill_alpha=0.7,
                          line_alpha=0.9, selection_line_color="black", selection_fill_alpha=1.0,
                          nonselection_fill_alpha=0.25, nonselection_line_alpha=0.25)
    points.name = "cells"
    shown = "".join(f"<div>{html.escape(COLOUR_KEYS[key])}: @{key}</div>" for key in keys if key != "structure")
    plot.add_tools(
        HoverTool(renderers=[points], tooltips=(
            f'<div style="width:{_THUMB_PX + 48}px">'
            f'<img src="@xy" alt="" style="width:{_THUMB_PX}px;image-rendering:pixelated;display:block">'
            f'<img src="@xz" alt="" style="width:{_THUMB_PX}px;image-rendering:pixelated;display:block;'
            'margin-top:2px"><div style="font-size:11px;word-break:break-all"><b>@cell_id</b></div>'
            f'<div style="font-size:11px">{"@structure" if "structure" in keys else ""}{shown}</div></div>')),
        TapTool(renderers=[points]))

    picker = {"width": 250}
    x_select = Select(title="x axis", value=x, options=options, **picker)
    y_select = Select(title="y axis", value=y, options=options, **picker)
    colour_select = Select(title="colour by", value=colour_key, options=[(key, COLOUR_KEYS[key]) for key in keys],
                           disabled=not keys, **picker)
    search = AutocompleteInput(title="find a cell by id", placeholder="cell id (or part of one), then Enter",
                               completions=table["cell_id"].tolist(), search_strategy="includes",
                               case_sensitive=False, restrict=False, max_completions=20, **picker)
    legend = Div(text=legends.get(colour_key, ""), width=250)
    detail = Div(text="<i>Click a cell, or find one by its id, to see it here.</i>", width=_LARGE_PX + 40)
    header = Div(text=f"<h2 style='margin:4px 0'>{html.escape(title)}</h2><div>{len(table)} cells; hover a point "
                 "for its thumbnail (xy and xz maximum projections: membrane magenta, DNA blue, structure yellow), "
                 "click it for details.</div>")
    shown_columns = [(key, COLOUR_KEYS[key]) for key in keys]
    shown_columns += [(column, label) for column, label in options if not re.fullmatch(r"\w+_mu_\d+", column)]

    for select, coordinate, axis in ((x_select, "x", plot.xaxis[0]), (y_select, "y", plot.yaxis[0])):
        select.js_on_change("value", CustomJS(args=dict(source=source, select=select, axis=axis, labels=labels,
                                                        coordinate=coordinate), code=_JS_AXIS))
    colour_select.js_on_change("value", CustomJS(args=dict(source=source, select=colour_select, legend=legend,
                                                           legends=legends), code=_JS_COLOUR))
    source.selected.js_on_change("indices", CustomJS(
        args=dict(source=source, detail=detail, columns=shown_columns, labels=labels, x_select=x_select,
                  y_select=y_select, width=_LARGE_PX), code=_JS_DETAIL))
    search.js_on_change("value", CustomJS(args=dict(source=source, detail=detail), code=_JS_SEARCH))

    layout = column(header, row(column(x_select, y_select, colour_select, search, legend), plot, detail))
    document = Document()
    document.add_root(layout)
    document.title = title
    document.js_on_event(DocumentReady, CustomJS(
        args=dict(source=source, renderer=points, x_select=x_select, y_select=y_select, colour_select=colour_select,
                  search=search), code=_JS_READY))
    return document


def _base_template():
    from bokeh.core.templates import FILE

    return FILE


def _default_axes(table: pd.DataFrame, options: list[tuple[str, str]]) -> tuple[str, str]:
    """The two reference dimensions with the largest mean absolute deviation from 0 on the test cells (all cells
    where none is marked test), as in the latent scatter; else the first two choices."""
    reference = [column for column, _ in options if column.startswith("reference_mu_")]
    if len(reference) < 2:
        return options[0][0], options[1][0]
    test = table[table["split"] == "test"] if "split" in table.columns else table
    deviation = (test if len(test) else table)[reference].abs().mean().fillna(0)
    first, second = deviation.sort_values(ascending=False, kind="stable").index[:2]
    return tuple(sorted((first, second), key=reference.index))


def _colours(values: pd.Series) -> tuple[np.ndarray, str]:
    """A colour per value (one per category, in sorted order) and the legend's HTML."""
    from bokeh.palettes import Category10, Category20, turbo

    categories = sorted(pd.unique(values.astype(str)))
    count = len(categories)
    palette = (Category10[10][:max(count, 3)] if count <= 10 else Category20[20] if count <= 20 else turbo(count))
    lookup = {category: palette[index] for index, category in enumerate(categories)}
    swatches = "".join(f'<div style="font-size:12px"><span style="display:inline-block;width:10px;height:10px;'
                       f'background:{lookup[category]};margin-right:6px"></span>{html.escape(category or "(none)")}'
                       f'</div>' for category in categories)
    return values.astype(str).map(lookup).to_numpy(), swatches


def _label(column: str) -> str:
    """An axis label: ``reference_mu_3`` -> ``reference latent 3 (mu_3)``, ``cell_volume_um3`` -> ``cell volume
    (µm³)``."""
    if column in _LABELS:
        return _LABELS[column]
    latent = re.fullmatch(r"(\w+)_mu_(\d+)", column)
    if latent:
        return f"{latent.group(1)} latent {latent.group(2)} (mu_{latent.group(2)})"
    words = column.split("_")
    if words[-1] in _UNITS and len(words) > 1:
        return f"{' '.join(words[:-1])} ({_UNITS[words[-1]]})"
    return " ".join(words)


_JS_AXIS = """
const data = Object.assign({}, source.data);
data["_" + coordinate] = source.data[select.value];
source.data = data;
axis.axis_label = labels[select.value];
document.documentElement.dataset["explorer" + coordinate.toUpperCase()] = select.value;
"""

_JS_COLOUR = """
const data = Object.assign({}, source.data);
data._colour = source.data["_colour_" + select.value];
source.data = data;
legend.text = legends[select.value];
document.documentElement.dataset.explorerColour = select.value;
"""

_JS_DETAIL = """
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                                     '"': "&quot;", "'": "&#39;"}[c]));
const format = (value) => typeof value === "number" ? (Number.isFinite(value) ? value.toPrecision(4) : "n/a")
                                                    : escape(value);
const indices = source.selected.indices;
if (indices.length === 0) {
  detail.text = "<i>Click a cell, or find one by its id, to see it here.</i>";
  delete document.documentElement.dataset.explorerSelected;
} else {
  const i = indices[0];
  const data = source.data;
  const image = (view) => data[view][i] ? `<img src="${data[view][i]}" alt="${view}" style="width:${width}px;` +
    `image-rendering:pixelated;display:block;margin-bottom:3px">` : "";
  const line = (label, value) => `<tr><td>${escape(label)}</td><td>${format(value)}</td></tr>`;
  const rows = columns.map(([column, label]) => line(label, data[column][i]));
  for (const select of [x_select, y_select]) {
    if (!columns.some(([column]) => column === select.value)) {
      rows.push(line(labels[select.value], data[select.value][i]));
    }
  }
  detail.text = `<div style="font-size:12px"><b style="word-break:break-all">${escape(data.cell_id[i])}</b>` +
    `${indices.length > 1 ? ` (first of ${indices.length} selected)` : ""}</div>` + image("xy") + image("xz") +
    `<table style="font-size:12px">${rows.join("")}</table>`;
  document.documentElement.dataset.explorerSelected = data.cell_id[i];
}
"""

_JS_SEARCH = """
const wanted = String(cb_obj.value || "").trim().toLowerCase();
if (wanted) {
  const ids = source.data.cell_id;
  let found = ids.findIndex((id) => String(id).toLowerCase() === wanted);
  if (found < 0) found = ids.findIndex((id) => String(id).toLowerCase().includes(wanted));
  if (found < 0) {
    source.selected.indices = [];
    detail.text = `<i>No cell id contains "${wanted.replace(/[&<>"']/g, "")}".</i>`;
  } else {
    source.selected.indices = [found];
  }
}
"""

# At load: apply the address's state (#x=..&y=..&colour=..&cell=..), then, once the scatter is on screen, report.
_JS_READY = """
const root = document.documentElement;
const state = new URLSearchParams(window.location.hash.replace(/^#/, ""));
const choose = (select, value) => {
  if (value && select.options.some((option) => (Array.isArray(option) ? option[0] : option) === value)) {
    select.value = value;
  }
};
choose(x_select, state.get("x"));
choose(y_select, state.get("y"));
choose(colour_select, state.get("colour"));
if (state.get("cell")) search.value = state.get("cell");
root.dataset.explorerX = x_select.value;
root.dataset.explorerY = y_select.value;
root.dataset.explorerColour = colour_select.value;
root.dataset.explorerCells = String(source.get_length());
// Points drawn = screen coordinates the scatter's view computed that are finite (NaN values are not drawn). Counted
// once the view holds the current data (the same missing values as the chosen columns) and has painted it.
const current = (glyph) => {
  if (glyph == null || glyph.x == null || glyph.sx == null) return false;
  const n = source.get_length();
  if (glyph.x.length !== n || glyph.sx.length !== n) return false;
  const x = source.data._x, y = source.data._y;
  for (let i = 0; i < n; i++) {
    const same = Number.isFinite(glyph.x[i]) === Number.isFinite(x[i]);
    if (!same || Number.isFinite(glyph.y[i]) !== Number.isFinite(y[i])) return false;
  }
  return true;
};
const count = (glyph) => {
  let drawn = 0;
  for (let i = 0; i < glyph.sx.length; i++) {
    if (Number.isFinite(glyph.sx[i]) && Number.isFinite(glyph.sy[i])) drawn++;
  }
  return drawn;
};
const report = (attempt) => {
  const view = typeof Bokeh.index.find_one === "function" ? Bokeh.index.find_one(renderer) : null;
  const glyph = view == null ? null : view.glyph;
  if (!current(glyph) && attempt < 100) { setTimeout(() => report(attempt + 1), 50); return; }
  setTimeout(() => {  // a paint later
    root.dataset.explorerDrawn = String(glyph == null || glyph.sx == null ? 0 : count(glyph));
    root.dataset.explorerReady = current(glyph) ? "1" : `stale after ${attempt} checks`;
  }, 100);
};
setTimeout(() => report(0), 0);
"""


def find_browser() -> str | None:
    """The path of a Chromium-family browser on the ``PATH`` (the first of :data:`BROWSERS`), or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def browser_command(browser: str, page: str | Path, *arguments: str, profile: str | Path, fragment: str = "",
                    size: tuple[int, int] = SCREENSHOT_SIZE) -> list[str]:
    """The command line that opens ``page`` in headless ``browser``, offline, with ``arguments`` (e.g. ``--dump-dom``).

    Parameters
    ----------
    browser : str
        A Chromium-family executable (:func:`find_browser`).
    page : path
        The HTML page.
    *arguments : str
        What to do with it: ``--dump-dom``, ``--screenshot=<png>``.
    profile : path
        A folder for the browser's own files (a fresh one per run keeps runs independent).
    fragment : str
        Appended to the page's address (``#cell=...``: the page's state).
    size : (int, int)
        Window width and height, CSS pixels.

    Returns
    -------
    list of str
        The command; name resolution is blocked (the page needs no network) and virtual time lets Bokeh draw.
    """
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--hide-scrollbars", f"--window-size={size[0]},{size[1]}", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=15000", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
            *arguments, Path(page).resolve().as_uri() + fragment]


def screenshot_page(page: str | Path, output: str | Path, *, browser: str | None = None,
                    size: tuple[int, int] = SCREENSHOT_SIZE, timeout_s: float = 180) -> Path:
    """Draw the explorer page in headless Chromium and save what it shows as a PNG.

    Parameters
    ----------
    page : path
        The explorer page (:func:`draw_explorer`).
    output : path
        PNG to write.
    browser : str, optional
        The browser executable; the first of :data:`BROWSERS` on the ``PATH`` by default.
    size : (int, int)
        Window width and height, CSS pixels.
    timeout_s : float
        Longest wait for the browser.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    FileNotFoundError
        ``page`` does not exist (the browser would draw its error page instead), or no browser given and none of
        :data:`BROWSERS` on the ``PATH``.
    RuntimeError
        The browser failed or wrote no image (its last output is in the message).
    """
    if not Path(page).is_file():
        raise FileNotFoundError(f"explorer page not found: {page} (plot-explorer writes it)")
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError(f"no Chromium-family browser on the PATH (looked for {', '.join(BROWSERS)}): install "
                                "one (Debian: apt-get install chromium) or set figures.explorer.screenshot: false")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="statcell-browser-") as profile:
        done = subprocess.run(browser_command(browser, page, f"--screenshot={output.resolve()}", profile=profile,
                                              size=size), capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not output.exists():
        raise RuntimeError(f"{browser} could not draw {page} (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return output
