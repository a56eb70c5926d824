"""Throughput and memory of the preprocessing stages: cropping, and normalization into the Zarr store.

Run from the repository root after ``snakemake`` has produced ``results/main/segmentation`` (or any time: FOVs are
taken from the synthetic colony and segmented here if needed)::

    python bench/bench_preprocess.py --fovs 6 --cells 400

It prints, side by side in one run:

* segmentation: seconds per FOV on the FOV's own grid and on a 0.4 µm working grid (``segmentation.working_voxel_um``),
  and the median IoU of each true cell and nucleus with its best-matching label, so speed and accuracy are seen
  together;
* cropping: cells per second on ``--fovs`` FOVs (segmentation excluded);
* normalization: cells per second with 1 and 2 Dask threads, and the speedup;
* normalization: peak RSS of the process at ``--cells`` and at 4x that many cells, each in a fresh subprocess, to
  show that memory does not grow with the number of cells (the crops are streamed FOV by FOV into the store);
* reading one time point of a ``--frames``-frame OME-TIFF movie of a FOV: the whole movie read and one frame kept
  (how the reader worked before) against ``io.read_image``, which reads that frame's pages only;
* preprocessing jobs as the workflow runs them, each a fresh Python process on FOV OME-TIFFs with one thread (as
  Snakemake starts a 1-thread job): segmentation and cropping as two processes per FOV (how the rules ran until the
  twelfth session: each imported the imaging stack and read the FOV), one ``statcell preprocess-fov`` process per FOV
  (``data.fovs_per_job: 1``), and one ``preprocess-fov`` process for every FOV in turn (a group of
  ``preprocess_fovs_<dataset>_<group>``: the imports paid once), and that group again with glibc's memory defaults
  (``STATCELL_KEEP_FREED_MEMORY=0``; ``statcell`` keeps freed memory for reuse, :mod:`statcell.memory`); seconds per
  FOV, the median of ``--rounds`` runs of each, the layouts in turn, and a check that all four write the same labels
  and crops. ``--jobs-only`` times these jobs alone::

    python bench/bench_preprocess.py --jobs-only --fovs 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from statcell import crop, io, normalize, segment, synth
from statcell.config import validate_config
from statcell.memory import OPT_OUT_VARIABLE
from bench_run import timed_run  # bench/ is on the path of a script run from it

ROOT = Path(__file__).resolve().parents[1]


def synthetic_fovs(count: int) -> tuple[list[synth.SyntheticFov], tuple[float, float, float]]:
    """``count`` synthetic training FOVs, spread over the colony's plan, and their voxel size."""
    settings = synth.SynthSettings.from_config(validate_config({})["synthetic"])
    plans = synth.plan_fovs(settings)
    chosen = plans[:: max(1, len(plans) // count)][:count]
    return [synth.synthesize_fov(plan, settings) for plan in chosen], settings.pixel_size_um


def bench_segmentation(fovs: list[synth.SyntheticFov], spacing: tuple[float, float, float]) -> None:
    """Print seconds per FOV and median IoU against the ground truth, on the full and on the working grid."""
    default = segment.SegmentationSettings.from_config(validate_config({})["segmentation"])
    for name, settings in (("full grid", replace(default, working_voxel_um=0.0)),
                           ("working grid 0.4 um", replace(default, working_voxel_um=0.4))):
        start, nucleus_iou, cell_iou = time.perf_counter(), [], []
        for fov in fovs:
            channels = fov.image.astype(np.float32)
            nuclei = segment.segment_nuclei(channels[1], spacing=spacing, settings=settings)
            cells = segment.segment_cells(channels[0], nuclei, spacing=spacing, settings=settings)
            nucleus_iou.extend(segment.match_labels(fov.nucleus_labels, nuclei)["iou"])
            cell_iou.extend(segment.match_labels(fov.cell_labels, cells)["iou"])
        seconds = (time.perf_counter() - start) / len(fovs)
        print(f"segmentation    {name:>24}  {seconds:6.2f} s/FOV  median IoU nuclei {np.median(nucleus_iou):.3f}, "
              f"cells {np.median(cell_iou):.3f} ({len(cell_iou)} true cells)")


def _fov_inputs(fovs: list[synth.SyntheticFov], spacing: tuple[float, float, float]
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """(channels, cell labels, nucleus labels, spacing) of each FOV, segmented with the default settings."""
    inputs = []
    for fov in fovs:
        channels = fov.image.astype(np.float32)
        nuclei = segment.segment_nuclei(channels[1], spacing=spacing)
        cells = segment.segment_cells(channels[0], nuclei, spacing=spacing)
        inputs.append((channels, cells, nuclei, spacing))
    return inputs


def bench_cropping(inputs) -> tuple[int, float, list[np.ndarray]]:
    settings = crop.CropSettings.from_config(validate_config({})["crop"])
    start, stacks = time.perf_counter(), []
    for channels, cells, nuclei, spacing in inputs:
        stacks.append(crop.crop_cells(channels, cells, nuclei, spacing=spacing, settings=settings)[0])
    return sum(len(s) for s in stacks), time.perf_counter() - start, stacks


def _write_dataset(folder: Path, stacks: list[np.ndarray], cells: int) -> tuple[list[Path], list[Path]]:
    """Per-FOV crop archives and tables holding ``cells`` cells, recycling the given crops."""
    pool = np.concatenate(stacks)
    per_fov = max(1, int(np.median([len(s) for s in stacks])))
    crop_files, table_files = [], []
    for index, first in enumerate(range(0, cells, per_fov)):
        count = min(per_fov, cells - first)
        chosen = pool[np.arange(first, first + count) % len(pool)]
        name = f"fov_{index:04d}"
        io.write_crops(folder / f"{name}.npz", chosen)
        io.write_table(pd.DataFrame({"fov_id": name, "label": np.arange(1, count + 1), "nucleus_label": 1,
                                     "reject_reason": "", "crop_index": np.arange(count)}), folder / f"{name}.parquet")
        crop_files.append(folder / f"{name}.npz")
        table_files.append(folder / f"{name}.parquet")
    return crop_files, table_files


def normalize_once(crop_files, table_files, out: Path, threads: int) -> float:
    start = time.perf_counter()
    normalize.normalize_cells(crop_files, table_files, store=out / "cells.zarr", cells_table=out / "cells.parquet",
                              rejects_table=out / "rejects.parquet", dataset="bench", voxel_um=0.5,
                              settings=normalize.NormalizeSettings(), threads=threads)
    return time.perf_counter() - start


def _peak_rss_child(folder: Path, threads: int) -> float:
    """Peak RSS (MiB) of a fresh process that normalizes the dataset in ``folder``."""
    code = (
        "import json, resource, sys; from pathlib import Path; sys.path.insert(0, 'bench');"
        "import bench_preprocess as b; f = Path(sys.argv[1]);"
        "c = sorted(f.glob('fov_*.npz')); t = [p.with_suffix('.parquet') for p in c];"
        "b.normalize_once(c, t, f / 'out', int(sys.argv[2]));"
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(folder), str(threads)], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return float(run.stdout.strip().splitlines()[-1])


def bench_timepoint_read(fov: synth.SyntheticFov, frames: int) -> None:
    """Print seconds to read the middle time point of a ``frames``-frame movie, whole movie first and frame alone."""
    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "movie.ome.tiff"
        tifffile.imwrite(path, np.stack([fov.image] * frames), ome=True, compression="zlib",
                         metadata={"axes": "TCZYX"})
        timepoint = frames // 2
        start = time.perf_counter()
        with tifffile.TiffFile(path) as tiff:
            whole = tiff.series[0].asarray()[timepoint]
        whole_seconds = time.perf_counter() - start
        start = time.perf_counter()
        alone = io.read_image(path, timepoint=timepoint).data
        alone_seconds = time.perf_counter() - start
    if not np.array_equal(whole, alone):
        raise AssertionError("the two reads of one time point differ")
    print(f"time point read {frames:6d} frames  whole movie {whole_seconds:6.2f} s, the frame alone "
          f"{alone_seconds:6.2f} s ({whole_seconds / alone_seconds:.1f}x)")


#: The two jobs per FOV that rules ``segment_fov`` and ``crop_cells`` ran before they became one: each a
#: process that paid the CLI's imports, its stage's and a read of the FOV (argv: FOV record JSON, then the paths).
_SEGMENT_JOB = """
import json, sys
import numpy as np
import statcell.cli
from statcell import io, segment
from statcell.config import validate_config
record = io.FovRecord.from_row(json.loads(sys.argv[1]))
settings = segment.SegmentationSettings.from_config(validate_config({})["segmentation"])
channels = io.read_fov(record, warn_voxel_size=False)
nuclei = segment.segment_nuclei(channels[1], spacing=record.spacing, settings=settings)
cells = segment.segment_cells(channels[0], nuclei, spacing=record.spacing, settings=settings)
io.write_ome_tiff(sys.argv[2], np.stack([cells, nuclei]).astype(np.uint16), channel_names=["cells", "nuclei"],
                  spacing=record.spacing)
"""
_CROP_JOB = """
import json, sys
import statcell.cli
from statcell import crop, io
from statcell.config import validate_config
record = io.FovRecord.from_row(json.loads(sys.argv[1]))
settings = crop.CropSettings.from_config(validate_config({})["crop"])
channels = io.read_fov(record)
labels = io.read_image(sys.argv[2]).data
crops, table = crop.crop_cells(channels, labels[0], labels[1], spacing=record.spacing, settings=settings)
io.write_crops(sys.argv[3], crops)
io.write_table(table, sys.argv[4])
"""

#: The thread settings Snakemake gives a job of 1 thread (``snakemake/shell.py``).
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
FOV_JOB_LAYOUTS = ("two processes", "one process", "one process for all", "one for all, malloc system")
#: The environment each layout's processes run in beside ``_ONE_THREAD``: the last takes memory with glibc's defaults
#: instead of keeping freed blocks for reuse, as ``statcell`` does (``statcell.memory``).
_LAYOUT_ENVIRONMENT = {layout: {} for layout in FOV_JOB_LAYOUTS} | {
    "one for all, malloc system": {OPT_OUT_VARIABLE: "0"}}


def bench_fov_jobs(fovs: list[synth.SyntheticFov], spacing: tuple[float, float, float], rounds: int = 1) -> None:
    """Print seconds per FOV of segmentation and cropping as two processes, as one, with every FOV in one process,
    and so again with glibc's memory defaults, each layout ``rounds`` times in turn (the median printed), and check
    that all of them agree."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        records = []
        for index, fov in enumerate(fovs):
            path = folder / f"fov_{index}.ome.tiff"
            io.write_ome_tiff(path, fov.image, channel_names=["membrane", "dna", "structure"], spacing=spacing)
            records.append(json.dumps({"fov_id": f"fov_{index}", "path": str(path), "membrane_channel": 0,
                                       "dna_channel": 1, "structure_channel": 2, "structure": "bench",
                                       "pixel_size_z_um": spacing[0], "pixel_size_y_um": spacing[1],
                                       "pixel_size_x_um": spacing[2]}))
        times: dict[str, list[float]] = {layout: [] for layout in FOV_JOB_LAYOUTS}
        for layout in [layout for _ in range(rounds) for layout in FOV_JOB_LAYOUTS]:
            out = folder / _folder_name(layout)
            out.mkdir(exist_ok=True)
            start = time.perf_counter()
            commands, group = [], []
            for index, record in enumerate(records):
                labels, crops, table = (str(out / f"fov_{index}{suffix}") for suffix in (".tiff", ".npz", ".parquet"))
                options = ["--fov-record", record, "--labels", labels, "--crops", crops, "--table", table]
                if layout == "two processes":
                    commands += [[sys.executable, "-c", _SEGMENT_JOB, record, labels],
                                 [sys.executable, "-c", _CROP_JOB, record, labels, crops, table]]
                elif layout == "one process":
                    commands.append([sys.executable, "-m", "statcell", "preprocess-fov", *options])
                else:  # one process for all, either way of taking memory
                    group += options
            if group:
                commands.append([sys.executable, "-m", "statcell", "preprocess-fov", *group])
            for command in commands:
                _, done = timed_run(command, cwd=ROOT, env=_ONE_THREAD | _LAYOUT_ENVIRONMENT[layout])
                if done.returncode != 0:
                    raise RuntimeError(f"per-FOV jobs, {layout}: a job failed:\n{done.stderr[-3000:]}")
            times[layout].append((time.perf_counter() - start) / len(records))
            print(f"per-FOV jobs    {layout:>26}  {times[layout][-1]:6.2f} s/FOV", flush=True)
        for index in range(len(records)):
            first, *others = (folder / _folder_name(layout) / f"fov_{index}" for layout in FOV_JOB_LAYOUTS)
            for other in others:
                if not (np.array_equal(io.read_image(f"{first}.tiff").data, io.read_image(f"{other}.tiff").data)
                        and np.array_equal(*(np.load(f"{path}.npz")["crops"] for path in (first, other)))):
                    raise AssertionError(f"FOV {index}: {first.parent.name} and {other.parent.name} wrote different "
                                         "labels or crops")
    seconds = {layout: float(np.median(values)) for layout, values in times.items()}
    print(f"per-FOV jobs (median of {rounds}): one process {seconds['two processes'] / seconds['one process']:.2f}x "
          f"as fast as two; all FOVs in one process {seconds['one process'] / seconds['one process for all']:.2f}x as "
          f"fast as one process per FOV, {seconds['one for all, malloc system'] / seconds['one process for all']:.2f}x "
          "as fast as with glibc's memory defaults; the same labels and crops")


def _folder_name(layout: str) -> str:
    return layout.replace(",", "").replace(" ", "_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fovs", type=int, default=6, help="FOVs to segment and crop (default 6)")
    parser.add_argument("--cells", type=int, default=400, help="cells of the smaller normalization run (default 400)")
    parser.add_argument("--frames", type=int, default=12, help="time points of the movie read (default 12)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times each layout of the per-FOV jobs runs, the layouts in turn (default 1)")
    parser.add_argument("--jobs-only", action="store_true", help="time the per-FOV jobs only")
    args = parser.parse_args()

    fovs, spacing = synthetic_fovs(args.fovs)
    if args.jobs_only:
        bench_fov_jobs(fovs, spacing, args.rounds)
        return
    bench_segmentation(fovs, spacing)
    inputs = _fov_inputs(fovs, spacing)
    count, seconds, stacks = bench_cropping(inputs)
    print(f"cropping        {count:6d} cells  {seconds:7.2f} s  {count / seconds:7.1f} cells/s")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "small"
        folder.mkdir()
        crop_files, table_files = _write_dataset(folder, stacks, args.cells)
        rates = {}
        for threads in (1, 2):
            seconds = normalize_once(crop_files, table_files, Path(tmp) / f"out{threads}", threads)
            rates[threads] = args.cells / seconds
            print(f"normalization   {args.cells:6d} cells  {seconds:7.2f} s  {rates[threads]:7.1f} cells/s "
                  f"({threads} thread{'s' if threads > 1 else ''})")
        print(f"normalization speedup, 2 threads vs 1: {rates[2] / rates[1]:.2f}x")

        large = Path(tmp) / "large"
        large.mkdir()
        _write_dataset(large, stacks, 4 * args.cells)
        small_rss, large_rss = _peak_rss_child(folder, 2), _peak_rss_child(large, 2)
        print(f"normalization peak RSS: {small_rss:.0f} MiB at {args.cells} cells, {large_rss:.0f} MiB at "
              f"{4 * args.cells} cells (ratio {large_rss / small_rss:.2f})")
    bench_timepoint_read(fovs[0], args.frames)
    bench_fov_jobs(fovs, spacing, args.rounds)


if __name__ == "__main__":
    main()
