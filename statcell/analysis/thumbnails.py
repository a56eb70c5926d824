"""Small per-cell thumbnails for the explorer of the cells: xy and xz maximum projections in the channel colours.

For every cell of a ``cells.zarr`` store, the membrane, DNA and structure channels are projected along z (the xy view)
and along y (the xz view), each channel scaled to [0, 1] between percentiles of its two projections together
(:func:`display_range`, so both views of a cell share one scale) and composited additively in the palette of every
figure (membrane magenta, DNA blue, structure yellow). The xz view is drawn with z pointing up (the coverslip at the
bottom row) and stretched to the voxel's physical aspect where the store's voxels are not cubic. A view larger than
``size`` pixels along either side is shrunk to fit; smaller views are kept at the store's resolution (the explorer
enlarges them without smoothing), so a default 16 x 16 x 24 voxel cell costs about 0.5 kB per view.

Each view is stored as PNG bytes, one row per cell: what the explorer page draws needs no access to the store.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from statcell import io
from statcell.plots.style import composite, display_range  # the one palette (CHANNEL_COLOURS) of every figure

#: Channels drawn, by the palette's name; their position in the store comes from its metadata where it names them.
THUMBNAIL_CHANNELS: tuple[str, ...] = ("membrane", "dna", "structure")
#: Columns of the thumbnail table.
THUMBNAIL_COLUMNS: tuple[str, ...] = ("cell_id", "store_index", "xy_png", "xz_png")
_BATCH = 256  # cells read from the store at a time


def project_cell(cell: np.ndarray, *, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The xy and xz maximum projections of one cell as RGB composites.

    Parameters
    ----------
    cell : ndarray
        ``(3, Z, Y, X)`` membrane, DNA and structure intensities (any scale; each channel is stretched to [0, 1]).
    spacing : tuple of float
        Voxel size ``(z, y, x)`` in µm: the views are stretched to the physical aspect (nearest neighbour).
    size : int
        Largest side of a view in pixels; larger views are shrunk (linear interpolation), smaller ones kept.

    Returns
    -------
    xy, xz : ndarray
        uint8 RGB images ``(Y', X', 3)`` and ``(Z', X', 3)``; row 0 of ``xz`` is the top of the cell (highest z).

    Examples
    --------
    >>> cell = np.zeros((3, 4, 5, 6), dtype=np.float32)
    >>> cell[2, 1, 3, 4] = 1.0  # one bright structure voxel at z=1, y=3, x=4
    >>> xy, xz = project_cell(cell)
    >>> xy.shape, xz.shape
    ((5, 6, 3), (4, 6, 3))
    >>> xy[3, 4].tolist(), xz[4 - 1 - 1, 4].tolist()  # yellow, at (y, x) and at (z, x) with z pointing up
    ([255, 230, 0], [255, 230, 0])
    """
    cell = np.asarray(cell, dtype=np.float32)
    if cell.ndim != 4 or cell.shape[0] != len(THUMBNAIL_CHANNELS):
        raise ValueError(f"a cell to project is (3, Z, Y, X) membrane, DNA, structure; got shape {cell.shape}")
    xy_planes, xz_planes = {}, {}
    for name, volume in zip(THUMBNAIL_CHANNELS, cell):
        xy, xz = volume.max(axis=0), volume.max(axis=1)[::-1]
        scaled = display_range(np.concatenate([xy.ravel(), xz.ravel()]))
        xy_planes[name], xz_planes[name] = scaled[:xy.size].reshape(xy.shape), scaled[xy.size:].reshape(xz.shape)
    z_um, y_um, x_um = spacing
    views = []
    for planes, (row_um, column_um) in ((xy_planes, (y_um, x_um)), (xz_planes, (z_um, x_um))):
        rgb = _to_aspect(composite(planes), row_um / column_um)
        views.append(np.round(_shrink(rgb, size) * 255).astype(np.uint8))
    return views[0], views[1]


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit RGB image ``(H, W, 3)`` (zlib only: no imaging library needed).

    Examples
    --------
    >>> encode_png(np.zeros((2, 3, 3), dtype=np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"a PNG is written from an (H, W, 3) RGB image, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rgb.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + chunk(b"IEND", b""))


def make_thumbnails(store: str | Path, cells: pd.DataFrame, *, size: int = 64) -> pd.DataFrame:
    """Thumbnails of every cell of a table, read from its store.

    Parameters
    ----------
    store : path
        ``cells.zarr``: array ``0`` of shape ``(N, C, Z, Y, X)``.
    cells : DataFrame
        ``cells.parquet`` of the store (``cell_id``, ``store_index``).
    size : int
        Largest side of a view in pixels (see :func:`project_cell`).

    Returns
    -------
    DataFrame
        One row per cell, in the order of ``cells``: :data:`THUMBNAIL_COLUMNS` (the views as PNG bytes).
    """
    missing = {"cell_id", "store_index"} - set(cells.columns)
    if missing:
        raise ValueError(f"the cells table lacks column(s) {sorted(missing)}")
    array, channels, spacing = _open_store(store)
    indices = cells["store_index"].to_numpy(dtype=np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= array.shape[0]):
        raise ValueError(f"store_index outside the store's {array.shape[0]} cells: {store}")
    xy_png, xz_png = [], []
    for start in range(0, len(indices), _BATCH):
        batch = io.read_cells(array, indices[start:start + _BATCH], channels=channels)
        for cell in batch:
            xy, xz = project_cell(cell, spacing=spacing, size=size)
            xy_png.append(encode_png(xy))
            xz_png.append(encode_png(xz))
    return pd.DataFrame({"cell_id": cells["cell_id"].to_numpy(), "store_index": indices,
                         "xy_png": xy_png, "xz_png": xz_png}, columns=list(THUMBNAIL_COLUMNS))


def _open_store(store: str | Path) -> tuple:
    """The store's array ``0``, the positions of :data:`THUMBNAIL_CHANNELS` in it, and its voxel size ``(z, y, x)``.

    Channels are found by the names the store gives them (:func:`statcell.io.store_metadata`) where it names them,
    else taken as the first three (the order of :data:`statcell.vocabulary.CROP_CHANNELS`); the voxel size defaults to
    cubic where the store does not state it."""
    metadata = io.store_metadata(store)
    if metadata.channels:
        names = [name.lower() for name in metadata.channels]
        absent = [name for name in THUMBNAIL_CHANNELS if name not in names]
        if absent:
            raise ValueError(f"{store} names its channels {list(metadata.channels)}, without {absent}")
        channels = [names.index(name) for name in THUMBNAIL_CHANNELS]
    else:
        channels = list(range(len(THUMBNAIL_CHANNELS)))
    return io.open_cells(store), channels, metadata.spacing or (1.0, 1.0, 1.0)


def _to_aspect(image: np.ndarray, ratio: float) -> np.ndarray:
    """Rows repeated (nearest neighbour) so that a pixel is square when a row is ``ratio`` times a column's step."""
    if abs(ratio - 1) < 1e-3:
        return image
    rows = max(1, int(round(image.shape[0] * ratio)))
    return image[np.minimum((np.arange(rows) + 0.5) / ratio, image.shape[0] - 1).astype(int)]


def _shrink(image: np.ndarray, size: int) -> np.ndarray:
    """An ``(H, W, 3)`` image shrunk (linear interpolation) so that its longer side is at most ``size``."""
    scale = size / max(image.shape[:2])
    if scale >= 1:
        return image
    from scipy import ndimage

    shape = [max(1, int(round(side * scale))) for side in image.shape[:2]]
    zoom = [new / old for new, old in zip(shape, image.shape[:2])]
    return np.clip(ndimage.zoom(image, (*zoom, 1), order=1, grid_mode=True, mode="nearest"), 0, 1)
