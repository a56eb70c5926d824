"""What every figure shares: the channel palette, display scaling, cell panels, a scale bar, one ``save``, and the
reader of a figure's settings.

Colours are fixed across figures: membrane magenta, DNA blue, structure yellow.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: RGB colour of each channel in composites.
CHANNEL_COLOURS: dict[str, tuple[float, float, float]] = {
    "membrane": (1.0, 0.2, 1.0),
    "dna": (0.15, 0.45, 1.0),
    "structure": (1.0, 0.9, 0.0),
}
#: Channel roles in the order of the store's first three channels.
ROLES: tuple[str, ...] = ("membrane", "dna", "structure")
#: Brightness of membrane and DNA in a panel that also shows a structure: dimmed to context, so that the structure,
#: at full brightness, is what the eye finds first (at full weight the membrane's and DNA's fill hid it).
REFERENCE_CONTEXT = 0.4


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Any, output: str | Path, *, dpi: int) -> None:
    """Write a figure as PNG at ``output`` and as SVG beside it (same name, ``.svg``), then close it.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The drawn figure.
    output : path
        PNG to write; its folder is created.
    dpi : int
        Resolution of the PNG.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=dpi)
    figure.savefig(output.with_suffix(".svg"), dpi=dpi)
    pyplot().close(figure)


def display_range(image: np.ndarray, *, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    """Scale intensities to [0, 1] between two percentiles, for display only.

    Parameters
    ----------
    image : ndarray
        Any intensities.
    low, high : float
        Percentiles mapped to 0 and 1.

    Returns
    -------
    ndarray
        float32 in [0, 1], same shape.

    Examples
    --------
    >>> display_range(np.array([0.0, 5.0, 10.0]), low=0, high=100).tolist()
    [0.0, 0.5, 1.0]
    """
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def composite(channels: Mapping[str, np.ndarray], *, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Additive RGB composite of 2D channels named as in :data:`CHANNEL_COLOURS` (each already in [0, 1]).

    Parameters
    ----------
    channels : mapping of str to ndarray
        ``(Y, X)`` images in [0, 1], keyed by channel role.
    weights : mapping of str to float, optional
        Brightness of each channel (1 where not given).

    Returns
    -------
    ndarray
        ``(Y, X, 3)`` RGB in [0, 1].
    """
    first = next(iter(channels.values()))
    rgb = np.zeros((*first.shape, 3), dtype=np.float32)
    for name, plane in channels.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        rgb += plane[..., None] * (weight * np.asarray(CHANNEL_COLOURS[name], dtype=np.float32))
    return np.clip(rgb, 0, 1)


def views(image: np.ndarray, *, structure_top: float = 1.0) -> np.ndarray:
    """RGB panel of one cell: maximum projection along z (xy, top) over maximum projection along y (xz, bottom).

    Parameters
    ----------
    image : ndarray
        ``(C, Z, Y, X)`` with C = 2 (membrane, DNA) or 3 (plus structure), intensities in [0, 1].
    structure_top : float
        Structure intensity drawn at full brightness (1, the store's scale, by default; a figure of generated
        structures passes one value shared by all its generated panels).

    Returns
    -------
    ndarray
        ``(Y + 1 + Z, X, 3)`` RGB in [0, 1], a one-pixel grey line between the views; the xz view shows z upwards.
        Membrane and DNA are stretched to their own 99.8th percentile (display only); with a structure, they are
        drawn at :data:`REFERENCE_CONTEXT`, and the structure on a fixed scale (0 to ``structure_top``, never
        stretched per panel), so that a faint or blank generated structure looks faint or blank.
    """
    weights = {"membrane": REFERENCE_CONTEXT, "dna": REFERENCE_CONTEXT} if image.shape[0] > 2 else None
    panels = []
    for axis in (1, 2):
        projection = image.max(axis=axis)
        channels = {role: np.clip(plane / structure_top, 0, 1) if role == "structure"
                    else display_range(plane, low=0.0, high=99.8) for role, plane in zip(ROLES, projection)}
        rgb = composite(channels, weights=weights)
        panels.append(rgb[::-1] if axis == 2 else rgb)
    line = np.full((1, image.shape[-1], 3), 0.5, np.float32)
    return np.concatenate([panels[0], line, panels[1]])


def scale_bar(axis: Any, *, length_um: float, pixel_um: float, shape: tuple[int, ...], fontsize: float = 6) -> None:
    """A white scale bar of ``length_um`` in the lower left of an image panel of ``shape`` (rows, columns, ...).

    Parameters
    ----------
    axis : matplotlib.axes.Axes
        The panel (image drawn in pixel coordinates, origin top left).
    length_um : float
        Length of the bar (µm).
    pixel_um : float
        Pixel edge (µm).
    shape : tuple of int
        Shape of the panel's image.
    fontsize : float
        Size of the label.
    """
    y, x0 = shape[0] * 0.92, shape[1] * 0.05
    axis.plot([x0, x0 + length_um / pixel_um], [y, y], color="white", linewidth=2, solid_capstyle="butt")
    axis.text(x0, y - shape[0] * 0.03, f"{length_um:g} µm", color="white", fontsize=fontsize)


def figure_settings(key: str, *, inline_json: str | None = None, config_path: str | Path | None = None) -> dict:
    """A figure's drawing settings, validated by the schema: ``figures.dpi`` and the entry ``figures.<key>``.

    The rules pass the part of the ``figures`` section the figure reads, ``{"dpi": ..., "<key>": {...}}``, as JSON
    (``figure_settings()`` in ``rules/common.smk``), so a change to one figure's entry redraws that figure alone; by
    hand, a config file (default: the embedded one) gives the same. A key the schema does not know is a
    :class:`~statcell.config.ConfigError` naming it.

    Parameters
    ----------
    key : str
        The figure's entry in the ``figures`` section, e.g. ``"latent_space"``.
    inline_json : str, optional
        JSON of ``{"dpi": ..., "<key>": {...}}`` (either part may be left out: defaults).
    config_path : path, optional
        A whole configuration file (when ``inline_json`` is not given).

    Returns
    -------
    dict
        ``dpi`` and the entry's settings, defaults filled in; an entry's own ``dpi`` (the image galleries') wins over
        ``figures.dpi``.
    """
    from statcell.config import section_settings

    section = section_settings("figures", config_path=config_path, inline_json=inline_json)
    return {"dpi": section["dpi"], **section.get(key, {})}
