"""Throughput and memory of importing pre-cropped cells (hiPSC single-cell layout) against cropping FOVs.

Run from the repository root::

    python bench/bench_import.py --fovs 3

It writes the whole cells of ``--fovs`` synthetic FOVs (default colony settings, 48 µm wide) as the hiPSC Single-Cell
Image Dataset stores them (per cell a raw and a mask OME-TIFF, ``(Z, C, Y, X)``, at the dataset's native isotropic
0.108333 µm, bounding boxes with neighbours; tests/real_layouts.py), once uncompressed and once zlib-compressed, and
as FOV OME-TIFFs (zlib, as statcell writes them) with their label images (the manifest path). Then, side by side in
one run and each in a fresh subprocess (so peak memory is that path's alone):

* import: ``allencell.read_cell_table`` + ``allencell.import_chunk`` of all cells (reading the two files per cell,
  resampling to the crop voxel size, aligning, masking, measuring), from the uncompressed and the zlib crops;
* FOV path: reading each FOV and its labels and ``crop.crop_cells`` (QC, alignment, masking, measuring; segmentation
  excluded), counting the same cells.

Both use the default ``crop`` settings. It prints cells per second, seconds per cell, and the child's peak RSS and
its growth over the RSS after imports.

``--table-rows N`` measures instead what every import job pays before it reads a cell: the dataset's CSV, here the
written one's rows repeated to ``N`` cells (the real hiPSC dataset holds ~215,000), read whole (as a workflow's
plan does, checking every row) and for one chunk (as each import job does), median of ``--repeats``::

    python bench/bench_import.py --fovs 1 --table-rows 215000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM its peak; unlike ru_maxrss, VmHWM
    is not inherited from the parent across exec)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    return _status_mb("VmHWM")


def _child_import(folder: Path) -> dict:
    from statcell import allencell, crop
    from statcell.config import validate_config

    config = validate_config({"allencell": {"csv": str(folder / "metadata.csv"), "layout": "hipsc_single_cell"}})
    baseline = _rss_mb()
    start = time.perf_counter()
    settings = allencell.AllenCellSettings.from_config(config["allencell"])
    cells = allencell.read_cell_table(settings)
    crops, table = allencell.import_chunk(cells, settings=settings,
                                          crop_settings=crop.CropSettings.from_config(config["crop"]))
    return {"cells": int(len(crops)), "seconds": time.perf_counter() - start, "baseline_mb": baseline,
            "peak_mb": _peak_mb()}


def _child_fovs(folder: Path) -> dict:
    from statcell import crop, io
    from statcell.config import validate_config

    settings = crop.CropSettings.from_config(validate_config({})["crop"])
    wanted = pd.read_csv(folder / "fovs.csv")
    baseline = _rss_mb()
    start, count = time.perf_counter(), 0
    for row in wanted.itertuples():
        image = io.read_image(row.path)
        labels = io.read_image(row.labels).data
        spacing = (row.spacing_z, row.spacing_y, row.spacing_x)
        _, table = crop.crop_cells(image.data.astype(np.float32), labels[0], labels[1], spacing=spacing,
                                   settings=settings)
        count += int((table["crop_index"] >= 0).sum())
    return {"cells": count, "seconds": time.perf_counter() - start, "baseline_mb": baseline, "peak_mb": _peak_mb()}


def _write(folder: Path, fovs: int) -> tuple[int, float, float]:
    from statcell import io
    from tests import real_layouts

    structures = ("nucleoli", "mitochondria", "golgi", "nuclear_envelope", "microtubules", "tight_junctions")
    settings, colony = real_layouts.synthetic_colony(structures[:fovs], fov_um=48.0, seed=0)
    spacing = settings.pixel_size_um
    _, written = real_layouts.write_hipsc(folder / "zlib", colony, spacing=spacing, bad_rows=False)
    real_layouts.write_hipsc(folder / "raw", colony, spacing=spacing, bad_rows=False, compression=None)
    rows = []
    for fov_id, fov in colony.items():
        # Only the cells the dataset holds (whole cells), so both paths handle the same cells.
        keep = np.isin(fov.cell_labels, written.loc[written["fov_id"] == fov_id, "label"])
        cells = np.where(keep, fov.cell_labels, 0)
        nuclei = np.where(np.isin(fov.nucleus_labels, np.unique(cells)), fov.nucleus_labels, 0)
        io.write_ome_tiff(folder / "zlib" / "fovs" / f"{fov_id}.ome.tiff", fov.image,
                          channel_names=["membrane", "dna", "structure"], spacing=spacing)
        io.write_ome_tiff(folder / "zlib" / "fovs" / f"{fov_id}_labels.ome.tiff", np.stack([cells, nuclei]),
                          channel_names=["cell_labels", "nucleus_labels"], spacing=spacing)
        rows.append({"path": folder / "zlib" / "fovs" / f"{fov_id}.ome.tiff",
                     "labels": folder / "zlib" / "fovs" / f"{fov_id}_labels.ome.tiff",
                     "spacing_z": spacing[0], "spacing_y": spacing[1], "spacing_x": spacing[2]})
    pd.DataFrame(rows).to_csv(folder / "zlib" / "fovs.csv", index=False)
    sizes = {kind: np.mean([p.stat().st_size for p in (folder / kind / "crop_raw").glob("*.tif")]) / 2**20
             for kind in ("zlib", "raw")}
    return len(written), sizes["zlib"], sizes["raw"]


def _table_reading(folder: Path, rows: int, repeats: int) -> None:
    from statcell import allencell
    from statcell.config import validate_config

    written = pd.read_csv(folder / "metadata.csv", dtype=str, keep_default_na=False)
    table = written.iloc[np.arange(rows) % len(written)].assign(CellId=[str(10**7 + row) for row in range(rows)])
    table.to_csv(folder / "large.csv", index=False)
    settings = allencell.AllenCellSettings.from_config(validate_config(
        {"allencell": {"csv": str(folder / "large.csv"), "layout": "hipsc_single_cell"}})["allencell"])
    middle = f"allencell_{rows // settings.chunk_size // 2:05d}"
    for label, chunk in (("whole table (the plan)", None), (f"one chunk ({middle})", middle)):
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            cells = allencell.read_cell_table(settings, chunk=chunk)
            seconds.append(time.perf_counter() - start)
        print(f"{rows} rows, {label:28s} {len(cells):7d} cells read in {np.median(seconds):6.2f} s "
              f"(median of {repeats})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fovs", type=int, default=3, help="synthetic FOVs (one structure each) to draw cells from")
    parser.add_argument("--table-rows", type=int, help="time reading a CSV of this many cells instead (see above)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of --table-rows' readings")
    parser.add_argument("--child", choices=["import", "fovs"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps((_child_import if args.child == "import" else _child_fovs)(args.folder)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cells, zlib_mb, raw_mb = _write(folder, args.fovs)
        print(f"{cells} cells from {args.fovs} FOVs; hiPSC crop_raw files (0.108333 µm voxels) {raw_mb:.1f} MB each "
              f"uncompressed, {zlib_mb:.1f} MB zlib-compressed, on average")
        if args.table_rows:
            _table_reading(folder / "raw", args.table_rows, args.repeats)
            return
        runs = (("import", folder / "raw", "hiPSC import, uncompressed"),
                ("import", folder / "zlib", "hiPSC import, zlib"), ("fovs", folder / "zlib", "FOV path (crop_cells)"))
        for name, data, label in runs:
            run = subprocess.run([sys.executable, __file__, "--child", name, "--folder", str(data)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            result = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{label:27s} {result['cells']:4d} cells  {result['cells'] / result['seconds']:6.2f} cells/s  "
                  f"{result['seconds'] / max(result['cells'], 1):6.3f} s/cell  peak RSS {result['peak_mb']:7.1f} MB "
                  f"(+{result['peak_mb'] - result['baseline_mb']:.1f} MB over {result['baseline_mb']:.1f} MB after "
                  "imports)")


if __name__ == "__main__":
    main()
