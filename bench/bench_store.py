"""Bytes per cell on disk and the training loader's cells/s for each encoding of ``cells.zarr``, side by side.

The store holds five channels per cell (membrane, DNA, structure in [0, 1] after normalization; the cell and nucleus
masks). ``normalize.store_dtype`` chooses how they are written: ``uint8`` (the default: 1/255 steps, as the Allen
Institute's own single-cell images), ``uint16`` (1/65535 steps) or ``float32`` (the layout before). Training serves
the values as stored and decodes them on the device (``CellDataset(decode=False)``, ``train.decode_images``); other
readers decode on the CPU (:func:`statcell.io.read_cells`). This writes the same cells in each encoding, at the
paper's crop size by default, and reads every cell back through the training's dataset class (``CellDataset``, not
cached, the target model's three channels) with a PyTorch ``DataLoader`` of N worker processes, both ways: decoded
to float32 in the loader, and served as stored (the training's way; the decoding then happens on the device, and
is not timed here)::

    python bench/bench_store.py --store results/main/cells.zarr --cells 64 --workers 0 1 2

Cells come from ``--store`` (a pipeline store; each cell is resampled to ``--crop`` with linear interpolation, so
it compresses as a real cell at that size would), or, without it, are stand-in ellipsoidal cells with random
intensities (``bench_train.masked_cell``; noise compresses worse than real cells). Each encoding's store is read
``--epochs`` times per worker count, after one untimed pass that warms the page cache, so the numbers are the
decompress-decode-collate cost a training epoch pays, not the disk's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from statcell import io
from statcell.vocabulary import CROP_CHANNELS

PAPER_CROP = (64, 96, 160)
ENCODINGS = ("float32", "uint16", "uint8")


def source_cells(store: Path | None, count: int, crop: tuple[int, ...]) -> np.ndarray:
    """``count`` cells ``(count, C, *crop)``, float32: a pipeline store's first cells resampled to ``crop``, or
    stand-ins."""
    if store is None:
        from bench_train import masked_cell

        rng = np.random.default_rng(0)
        return np.stack([masked_cell(rng, crop) for _ in range(count)])
    from scipy import ndimage

    available = io.open_cells(store).shape[0]
    cells = io.read_cells(store, np.arange(min(count, available)), channels=None)
    factors = [target / size for target, size in zip(crop, cells.shape[2:])]
    out = np.empty((len(cells), cells.shape[1], *crop), np.float32)
    for index, cell in enumerate(cells):
        for channel, image in enumerate(cell):
            resampled = ndimage.zoom(image, factors, order=1, grid_mode=True, mode="grid-constant")
            out[index, channel] = (resampled > 0.5) if channel >= 3 else np.clip(resampled, 0, 1)
    return out


def write_store(folder: Path, cells: np.ndarray, dtype: str) -> tuple[Path, float]:
    """Write ``cells`` as a pipeline store in ``dtype``; its path and the bytes per cell of its files on disk."""
    from statcell.normalize import create_cell_store

    path = folder / f"{dtype}.zarr"
    array = create_cell_store(path, cells.shape, voxel_um=1.0, dtype=dtype)
    for index, cell in enumerate(cells):
        array[index] = io.encode_cells(cell, dtype)
    size = sum(file.stat().st_size for file in (path / "0").rglob("*") if file.is_file())
    return path, size / len(cells)


def loader_rate(path: Path, count: int, *, workers: int, epochs: int, batch: int, decode: bool) -> float:
    """Cells per second through ``CellDataset`` (target model: all three intensity channels) and a DataLoader,
    decoding in the loader or serving the values as stored."""
    from torch.utils.data import DataLoader

    from statcell.train import CellDataset

    dataset = CellDataset(path, np.arange(count), kind="target", labels=np.zeros(count, dtype=np.int64),
                          decode=decode)
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:  # warm-up: page cache, worker start-up
        pass
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in loader:
            pass
    return epochs * count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="a pipeline cells.zarr to take cells from (else stand-ins)")
    parser.add_argument("--cells", type=int, default=64, help="cells per store")
    parser.add_argument("--crop", type=int, nargs=3, default=PAPER_CROP, metavar=("Z", "Y", "X"),
                        help="crop size (default: the paper's 64 96 160)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--epochs", type=int, default=2, help="timed passes over the store per worker count")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    crop = tuple(args.crop)
    cells = source_cells(args.store, args.cells, crop)
    raw = int(np.prod(crop)) * len(CROP_CHANNELS)
    print(f"{len(cells)} cells of {len(CROP_CHANNELS)} x {' x '.join(map(str, crop))} voxels "
          f"({'from ' + str(args.store) if args.store else 'stand-ins'}); float32 in memory: {raw * 4 / 1e6:.1f} MB "
          "per cell", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for dtype in ENCODINGS:
            path, per_cell = write_store(Path(folder), cells, dtype)
            decoded = io.read_cells(path, np.arange(len(cells)), channels=None)
            error = float(np.abs(decoded - cells).max())
            rates = [loader_rate(path, len(cells), workers=workers, epochs=args.epochs, batch=args.batch,
                                 decode=decode) for decode in (True, False) for workers in args.workers]
            rows.append((dtype, raw * np.dtype(dtype).itemsize, per_cell, error, rates))
            print(f"  {dtype}: done", flush=True)
    columns = [f"{way} {w}w" for way in ("decoded", "as stored") for w in args.workers]
    print("\ncells/s through the loader with N workers (w), decoded to float32 there or served as stored:")
    print(f"{'encoding':>9} {'raw MB/cell':>12} {'disk MB/cell':>13} {'max error':>10} "
          + " ".join(f"{column:>14}" for column in columns))
    for dtype, raw_bytes, per_cell, error, rates in rows:
        print(f"{dtype:>9} {raw_bytes / 1e6:12.2f} {per_cell / 1e6:13.3f} {error:10.2g} "
              + " ".join(f"{rate:14.1f}" for rate in rates))
    reference = rows[0][2]
    for dtype, _, per_cell, _, _ in rows[1:]:
        print(f"{dtype} on disk: {reference / per_cell:.1f}x smaller than float32")


if __name__ == "__main__":
    sys.exit(main())
