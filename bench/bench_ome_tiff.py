"""Writing and reading the OME-TIFFs statcell writes, at each deflate level, side by side in one run.

``io.write_ome_tiff`` writes the synthetic colony's raw FOVs and label images, the segmentations and the predicted
cells, compressed with deflate at ``io.OME_TIFF_DEFLATE_LEVEL``. This writes ``--fovs`` FOVs of the default synthetic
colony (``bench_preprocess.synthetic_fovs``: the raw image, and the cell and nucleus labels as the segmentation
writes them) at each level of ``--levels``, interleaved so that machine load affects the levels alike, and prints per
kind of image and level the median seconds to write one, to read it back with ``io.read_image``, and the file's size
against the raw bytes::

    python bench/bench_ome_tiff.py --fovs 4 --repeats 3 --levels 1 6 9
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_preprocess import synthetic_fovs

from statcell import io, synth


def time_levels(fovs: list[synth.SyntheticFov], spacing: tuple[float, float, float], levels: list[int],
                repeats: int, folder: Path) -> pd.DataFrame:
    """Median write and read seconds and the size of each kind of image at each level.

    Parameters
    ----------
    fovs : list of SyntheticFov
        The FOVs to write.
    spacing : tuple of float
        Their voxel size ``(z, y, x)`` in µm.
    levels : list of int
        Deflate levels to compare.
    repeats : int
        Writes (and reads) of each image at each level; the levels take turns.
    folder : Path
        Where the files go.

    Returns
    -------
    DataFrame
        One row per kind of image and level: ``write_s``, ``read_s`` (medians over FOVs and repeats), ``mb`` (mean
        file size) and ``ratio`` (raw bytes over file bytes).
    """
    images = {"raw FOV (3 channels)": [fov.image for fov in fovs],
              "labels (cells, nuclei)": [np.stack([fov.cell_labels, fov.nucleus_labels]) for fov in fovs]}
    timings: dict[tuple[str, int], dict[str, list[float]]] = {}
    for kind, arrays in images.items():
        for _ in range(repeats):
            for index, array in enumerate(arrays):
                for level in levels:
                    path = folder / f"{index}_{level}.ome.tiff"
                    started = time.perf_counter()
                    io.write_ome_tiff(path, array, channel_names=[f"c{c}" for c in range(len(array))],
                                      spacing=spacing, deflate_level=level)
                    written = time.perf_counter()
                    io.read_image(path)
                    read = time.perf_counter()
                    record = timings.setdefault((kind, level), {"write_s": [], "read_s": [], "bytes": [], "raw": []})
                    record["write_s"].append(written - started)
                    record["read_s"].append(read - written)
                    record["bytes"].append(path.stat().st_size)
                    record["raw"].append(array.nbytes)
    return pd.DataFrame([{"image": kind, "level": level, "write_s": statistics.median(record["write_s"]),
                          "read_s": statistics.median(record["read_s"]), "mb": np.mean(record["bytes"]) / 1e6,
                          "ratio": np.sum(record["raw"]) / np.sum(record["bytes"])}
                         for (kind, level), record in timings.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fovs", type=int, default=4, help="FOVs of the default colony to write")
    parser.add_argument("--repeats", type=int, default=3, help="writes of each FOV at each level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 6, 9], help="deflate levels (6: zlib's default)")
    args = parser.parse_args()
    fovs, spacing = synthetic_fovs(args.fovs)
    with tempfile.TemporaryDirectory() as folder:
        table = time_levels(fovs, spacing, args.levels, args.repeats, Path(folder))
    print(f"{args.fovs} FOVs of the default colony, {args.repeats} repeats; statcell writes at level "
          f"{io.OME_TIFF_DEFLATE_LEVEL}")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.3f}"))


if __name__ == "__main__":
    main()
