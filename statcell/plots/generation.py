"""Generated-cell figures (paper Fig 4A/B, S4, S5), drawn from the images ``generate-cells`` writes: each ``.npz``
holds its cells and ``spacing``, the voxel size (µm) of the store they come from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from statcell.analysis.localization import LOCALIZATION_REGIONS
from statcell.plots.style import CHANNEL_COLOURS, ROLES, pyplot, save, scale_bar, views

#: Least display maximum of a generated structure (of the store's 0-1): a fainter one is drawn faint, not stretched.
MIN_STRUCTURE_TOP = 0.05
#: Outline colours of the cell and its nucleus over a structure heat map.
OUTLINE_COLOURS: tuple[str, str] = ("lime", "cyan")
#: Bar colour of each localization region.
REGION_COLOURS: dict[str, str] = {"nucleus": "#3b6fd9", "cytoplasm": "#e0a526", "cell_edge": "#d94fd0",
                                  "outside": "#9a9a9a"}
#: Sources of ``localization.csv`` drawn as bars, and their labels.
LOCALIZATION_SOURCES: dict[str, str] = {"real": "real", "reconstruction": "reconstructed", "sample": "generated"}


def _legend(figure) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=CHANNEL_COLOURS[role], label=role.replace("dna", "DNA")) for role in ROLES]
    figure.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=8)


def _grid(rows: list[tuple[str, list[np.ndarray]]], output: str | Path, *, title: str, column_titles: list[str],
          pixel_um: float, dpi: int) -> None:
    """Panels in a grid, one labelled row per entry, a scale bar in the first panel; PNG at ``output``."""
    plt = pyplot()
    columns = max(len(panels) for _, panels in rows)
    height, width = rows[0][1][0].shape[:2]
    figure, axes = plt.subplots(len(rows), columns, squeeze=False,
                                figsize=(max(7.0, 1.8 + 1.5 * columns * width / height), 0.8 + 1.5 * len(rows)))
    for row, (label, panels) in enumerate(rows):
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(panels):
                axis.imshow(panels[column], interpolation="nearest")
            else:
                axis.set_axis_off()
            if row == 0 and column < len(column_titles):
                axis.set_title(column_titles[column], fontsize=7)
        axes[row, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    scale_bar(axes[0, 0], length_um=5.0, pixel_um=pixel_um, shape=(height, width))
    figure.suptitle(title, fontsize=10, wrap=True)  # narrow grids (few columns) wrap a long title
    _legend(figure)
    figure.tight_layout(rect=(0, 0.04, 1, 0.97))
    save(figure, output, dpi=dpi)


def shared_structure_top(images: np.ndarray, *, percentile: float = 99.8) -> float:
    """One display maximum for several generated structures: the ``percentile`` of their xy and xz maximum
    projections together (a generated structure is a mean image, fainter than a real one), between
    :data:`MIN_STRUCTURE_TOP` (so that a blank is never stretched into noise) and 1.

    Parameters
    ----------
    images : ndarray
        ``(..., Z, Y, X)`` structure channels, in [0, 1].
    percentile : float
        Percentile of the projections' voxels drawn at full brightness.

    Returns
    -------
    float
        The shared maximum.

    Examples
    --------
    >>> structures = np.zeros((2, 4, 4, 4)); structures[0, 1, 1, 1] = 0.25
    >>> shared_structure_top(structures, percentile=100)
    0.25
    >>> shared_structure_top(structures * 0.01, percentile=100)
    0.05
    """
    structure = np.asarray(images)
    projections = np.concatenate([structure.max(axis=-3).ravel(), structure.max(axis=-2).ravel()])
    top = float(np.percentile(projections, percentile)) if projections.size else 1.0
    return float(np.clip(top, MIN_STRUCTURE_TOP, 1.0))


def plot_generated_cells(prior: Mapping[str, np.ndarray], test_cells: Mapping[str, np.ndarray],
                         output: str | Path, *, columns: int = 8, dpi: int = 150) -> None:
    """Fig 4A: cells drawn from the reference prior beside real test cells (xy over xz maximum projections).

    Parameters
    ----------
    prior : mapping
        ``prior.npz``: ``images`` ``(N, 2, Z, Y, X)`` generated membrane and DNA, ``spacing`` (µm).
    test_cells : mapping
        ``test_cells.npz``: ``real`` ``(M, C, Z, Y, X)`` real test cells (the first two channels are shown).
    output : path
        PNG to write (an SVG is written beside it).
    columns : int
        Cells per row; two rows of each.
    dpi : int
        PNG resolution.
    """
    generated, real = prior["images"], test_cells["real"]
    count = min(columns, len(generated), len(real))
    rows = [(f"{name}\n{part + 1}", [views(image[:2]) for image in images[part * count:(part + 1) * count]])
            for name, images in (("real", real), ("generated\n(prior)", generated)) for part in range(2)
            if len(images) >= (part + 1) * count]
    _grid(rows, output, title="Real test cells and cells drawn from the reference model's prior "
          "(max projections: xy above, xz below)", column_titles=[], pixel_um=float(prior["spacing"][-1]), dpi=dpi)


def _stacked_views(volume: np.ndarray, reduce) -> np.ndarray:
    """xy (reduced along z) above xz (reduced along y, z upwards), a one-row gap between them, as :func:`views`."""
    xy, xz = reduce(volume, axis=0), reduce(volume, axis=1)[::-1]
    return np.concatenate([xy, np.zeros((1, volume.shape[-1]), xy.dtype), xz])


def _heat_panel(axis, structure: np.ndarray, masks: np.ndarray, *, top: float) -> None:
    """One cell as a heat map of its structure (max projections, 0 to ``top``) with its cell and nucleus outlined."""
    panel = _stacked_views(structure, np.max).astype(np.float32)
    panel[structure.shape[1]] = np.nan  # the gap between the views
    colours = pyplot().get_cmap("magma").with_extremes(bad=(0.5, 0.5, 0.5))
    axis.imshow(panel, cmap=colours, vmin=0.0, vmax=top, interpolation="nearest")
    for mask, colour in zip(masks, OUTLINE_COLOURS):
        outline = _stacked_views(mask.astype(np.float32), np.max)
        if 0 < outline.max() and outline.min() < 1:
            axis.contour(outline, levels=[0.5], colors=[colour], linewidths=0.7)


def _localization_bars(axis, profiles: pd.DataFrame) -> None:
    """Stacked horizontal bars: the fraction of each source's structure intensity in each region."""
    sources = [source for source in LOCALIZATION_SOURCES if source in set(profiles["source"])]
    if not sources:
        axis.text(0.5, 0.5, "no test cells of this class", ha="center", va="center", fontsize=6,
                  transform=axis.transAxes)
        axis.set_axis_off()
        return
    for row, source in enumerate(sources):
        profile = profiles[profiles["source"] == source].iloc[0]
        left = 0.0
        for region in LOCALIZATION_REGIONS:
            value = float(profile[region]) if np.isfinite(profile[region]) else 0.0
            axis.barh(row, value, left=left, color=REGION_COLOURS[region], height=0.7)
            left += value
        if not np.isfinite(profile[LOCALIZATION_REGIONS[0]]):
            axis.text(0.02, row, "no intensity", va="center", fontsize=6)
    axis.set_yticks(range(len(sources)), [LOCALIZATION_SOURCES[source] for source in sources], fontsize=6)
    axis.set_xlim(0, 1)
    axis.set_ylim(len(sources) - 0.5, -0.5)
    axis.tick_params(axis="x", labelsize=6)


def plot_structures_in_one_cell(in_one_cell: Mapping[str, np.ndarray], examples: Mapping[str, np.ndarray],
                                localization: pd.DataFrame, output: str | Path, *, dpi: int = 150) -> None:
    """Fig 4B / S5: every structure generated inside one real cell, as heat maps with the cell and nucleus outlined.

    Each row is a structure class: its expected image in the host cell (the mean of many prior draws: where the model
    puts it), single draws, a real cell of that class, and bars of where the structure's intensity lies in the test
    cells of that class (real, reconstructed, drawn from the prior in those cells' own membrane and DNA).

    Parameters
    ----------
    in_one_cell : mapping
        ``structures_in_one_cell.npz``: ``images`` ``(S, K, 3, Z, Y, X)`` (the host's membrane and DNA with a
        generated structure), ``expected`` ``(S, Z, Y, X)``, ``expected_draws``, ``host_masks`` ``(2, Z, Y, X)`` (cell,
        nucleus) and ``spacing`` (µm).
    examples : mapping
        ``structure_examples.npz``: ``images`` ``(S, E, 3, Z, Y, X)`` and ``masks`` ``(S, E, 2, Z, Y, X)`` of real
        cells per structure (the first is shown), ``counts`` and ``structures``, the S structure names.
    localization : DataFrame
        ``localization.csv`` of ``generate-cells`` (:func:`statcell.analysis.generation.localization_table`).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = pyplot()
    generated, expected, host_masks = in_one_cell["images"], in_one_cell["expected"], in_one_cell["host_masks"]
    structures = [str(name) for name in examples["structures"]]
    draws = generated.shape[1]
    columns = draws + 3
    depth, height, width = expected.shape[1:]
    panel_ratio = (height + 1 + depth) / width
    figure, axes = plt.subplots(len(structures), columns, squeeze=False, figsize=(
        1.8 + 1.3 * (columns - 1) + 2.2, 0.9 + 1.3 * panel_ratio * len(structures)),
        gridspec_kw={"width_ratios": [1.0] * (columns - 1) + [1.7]})
    for row, structure in enumerate(structures):
        top = shared_structure_top(np.concatenate([expected[row][None], generated[row, :, 2]]))
        panels = [(expected[row], host_masks, top)] + [(image[2], host_masks, top) for image in generated[row]]
        if examples["counts"][row] > 0:
            panels.append((examples["images"][row, 0, 2], examples["masks"][row, 0], 1.0))
        for column, axis in enumerate(axes[row, :-1]):
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(panels):
                channel, masks, panel_top = panels[column]
                _heat_panel(axis, channel, masks, top=panel_top)
            else:
                axis.set_axis_off()
        _localization_bars(axes[row, -1], localization[localization["structure"] == structure])
        axes[row, 0].set_ylabel(f"{structure.replace('_', ' ')}\n(generated: full at {top:.2g})", fontsize=8,
                                rotation=0, ha="right", va="center")
    titles = ([f"expected\n(mean of {int(in_one_cell['expected_draws'])} draws)"]
              + [f"draw {k + 1}" for k in range(draws)] + ["real example\n(full at 1)",
                                                          "where it lies in the test cells\n(fraction of intensity)"])
    for axis, title in zip(axes[0], titles):
        axis.set_title(title, fontsize=7)
    scale_bar(axes[0, 0], length_um=5.0, pixel_um=float(in_one_cell["spacing"][-1]),
              shape=(height + 1 + depth, width))
    figure.suptitle("Each structure generated inside one real test cell from the target model's prior; max "
                    "projections, xy above xz; outlines: cell and nucleus", fontsize=10, wrap=True)
    handles = ([Line2D([], [], color=colour, label=f"{name} outline")
                for name, colour in zip(("cell", "nucleus"), OUTLINE_COLOURS)]
               + [Patch(color=REGION_COLOURS[region], label=region.replace("_", " "))
                  for region in LOCALIZATION_REGIONS])
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=7)
    figure.tight_layout(rect=(0, 0.03, 1, 0.97))
    save(figure, output, dpi=dpi)


def plot_structure_examples(examples: Mapping[str, np.ndarray], output: str | Path, *, dpi: int = 150) -> None:
    """S4: real example cells of every structure.

    Parameters
    ----------
    examples : mapping
        ``structure_examples.npz``: ``images`` ``(S, E, 3, Z, Y, X)`` with ``counts[s]`` cells present in row s (the
        rest of a row stays empty), ``structures`` and ``spacing`` (µm).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    """
    images = examples["images"]
    rows = [(str(structure).replace("_", " "), [views(image) for image in cells[:count]])
            for structure, cells, count in zip(examples["structures"], images, examples["counts"])]
    _grid(rows, output, title="Real cells of every structure (xy above, xz below)",
          column_titles=[f"example {k + 1}" for k in range(images.shape[1])], pixel_um=float(examples["spacing"][-1]),
          dpi=dpi)


def plot_truncated_prior(truncated: Mapping[str, np.ndarray], output: str | Path, *, dpi: int = 150) -> None:
    """Cells from the reference prior decoded with only the top-k latent dimensions drawn, one row per k.

    Parameters
    ----------
    truncated : mapping
        ``truncated.npz`` of ``generate-cells``: ``images`` ``(K, N, 2, Z, Y, X)``, ``kept`` (the k of each row),
        ``order`` (the dimensions, most informative first) and ``spacing`` (µm).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    """
    images, kept = truncated["images"], [int(k) for k in truncated["kept"]]
    rows = [(f"top {k}" if k < len(truncated["order"]) else f"all {k}", [views(image[:2]) for image in row])
            for k, row in zip(kept, images)]
    _grid(rows, output, title="Latent-space truncation: the same prior draws decoded with only\nthe top-k reference "
          "dimensions drawn (by mean KL; the others at 0);\nmax projections, xy above xz",
          column_titles=[f"draw {n + 1}" for n in range(images.shape[1])], pixel_um=float(truncated["spacing"][-1]),
          dpi=dpi)


def plot_predicted_cells(predictions: Mapping[str, np.ndarray], output: str | Path, *, dpi: int = 150) -> None:
    """The integrated cell: every structure predicted (its mean prediction) in each chosen cell, one row per cell.

    Parameters
    ----------
    predictions : mapping
        ``predictions.npz`` of ``predict-cells``: ``images`` ``(N, S, 3, Z, Y, X)`` (the cell's membrane and DNA with
        one structure's mean prediction), ``structures`` (S names), ``cells`` (N ids), ``imaged`` (the structure
        imaged in each cell, empty for a generated or new one) and ``spacing`` (µm).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    """
    images = predictions["images"]
    rows = [(f"{cell}\n(imaged: {str(imaged).replace('_', ' ')})" if imaged else str(cell),
             [views(image) for image in cell_images])
            for cell, imaged, cell_images in zip(predictions["cells"], predictions["imaged"], images)]
    _grid(rows, output, title="Every structure predicted from each cell's membrane and DNA (mean prediction; "
          "xy above, xz below)", column_titles=[str(name).replace("_", " ") for name in predictions["structures"]],
          pixel_um=float(predictions["spacing"][-1]), dpi=dpi)


def plot_in_silico_perturbation(steps: Mapping[str, np.ndarray], output: str | Path, *, dpi: int = 150) -> None:
    """In-silico perturbation: a control cell's structure moved along each drug's latent shift, beside a real
    treated cell (one row per structure and drug).

    Parameters
    ----------
    steps : mapping
        ``steps.npz`` of ``perturb-cells``: ``images`` ``(P, S + 1, 3, Z, Y, X)`` (the cell's membrane and DNA with
        the structure decoded at each of S steps, then a real treated cell), ``pairs`` ``(P, 2)`` (structure,
        drug), ``alphas`` ``(S,)``, ``control`` and ``spacing`` (µm).
    output : path
        PNG to write (an SVG is written beside it).
    dpi : int
        PNG resolution.
    """
    images, alphas = steps["images"], [float(alpha) for alpha in steps["alphas"]]
    if not len(images):
        raise ValueError("steps.npz holds no (structure, drug) pair with control and treated cells: nothing to draw")
    rows = [(f"{str(structure).replace('_', ' ')}\n{str(drug).replace('_', ' ')}", [views(image) for image in row])
            for (structure, drug), row in zip(steps["pairs"], images)]
    _grid(rows, output, title=f"A {steps['control']} cell's structure moved along each drug's latent shift "
          "(α = fraction of the shift), beside a real treated cell", column_titles=[
              *(f"α = {alpha:g}" for alpha in alphas), "real treated"],
          pixel_um=float(steps["spacing"][-1]), dpi=dpi)
