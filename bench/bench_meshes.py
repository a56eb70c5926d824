"""The meshes for simulators of a finished run: traced (marching cubes) against remeshed, side by side in one run.

``export_meshes`` traces each mask's surface and remeshes it into near-equilateral triangles
(``statcell.analysis.meshes.remesh_isotropic``). This script meshes a finished run's cells (the ones its
``export_meshes`` rule chose, from the same files) once per edge length asked for, 0 being the traced surfaces,
interleaved ``--repeats`` times so that machine load affects them alike::

    python bench/bench_meshes.py --run PATH/TO/A/FINISHED/RUN                 # edges 0 (traced) and auto
    python bench/bench_meshes.py --run RUN --edges 0 auto 0.4 --repeats 3

It prints, per edge length and part (cell, nucleus, structure): meshes, the share of their connected surfaces
remeshed, the smallest triangle angle (over all meshes, and the median of each mesh's smallest), the share of angles
under 10°, the volume / voxel volume range, the median edge, and the seconds of the whole export (median of the
repeats). The meshes are written under a temporary folder and dropped.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from statcell.analysis import meshes
from statcell.config import load_config


def summarize(quality: pd.DataFrame, angles: pd.DataFrame) -> pd.DataFrame:
    """One row per part of an export: meshes, remeshed share, angles, volume ratios and edges.

    Parameters
    ----------
    quality, angles : DataFrame
        The two tables of :func:`statcell.analysis.meshes.export_meshes`.
    """
    written = quality[quality["path"] != ""]
    small = angles[angles["bin_end_deg"] <= 10].groupby("part")["triangle_angles"].sum()
    every = angles.groupby("part")["triangle_angles"].sum()
    rows = []
    for part, group in written.groupby("part", sort=False):
        rows.append({"part": part, "meshes": len(group),
                     "remeshed": f"{group['remeshed_surfaces'].sum() / group['bodies'].sum():.0%}",
                     "min_angle": round(float(group["min_angle_deg"].min()), 2),
                     "median_min_angle": round(float(group["min_angle_deg"].median()), 1),
                     "angles_under_10": f"{small.get(part, 0) / every[part]:.2%}",
                     "volume_ratio": f"{group['volume_ratio'].min():.3f}-{group['volume_ratio'].max():.3f}",
                     "median_edge_um": round(float(group["median_edge_um"].median()), 2)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished workflow folder (results/ in it)")
    parser.add_argument("--configfile", type=Path, default=None, help="the run's config, if not config/config.yaml")
    parser.add_argument("--edges", nargs="+", default=["0", "auto"], help="edge lengths in µm; 0: traced; auto")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    config = load_config(args.configfile or args.run / "config" / "config.yaml")
    base = meshes.MeshSettings.from_section(config["meshes"])
    results = args.run / "results"
    generation = results / "analysis" / "generation"
    to_mesh, spacing = meshes.read_cells_to_mesh(
        store=results / "main" / "cells.zarr", cells=results / "main" / "cells.parquet",
        test_cells=generation / "test_cells.npz", prior=generation / "prior.npz",
        manifest=generation / "manifest.parquet", walks=results / "analysis" / "latent_space" / "walks.npz",
        settings=base)
    print(f"{len(to_mesh)} cells of {args.run}, voxel {spacing[0]:g} µm; median seconds of {args.repeats} interleaved")
    seconds: dict[str, list[float]] = {edge: [] for edge in args.edges}
    tables: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            for edge in args.edges:
                settings = meshes.MeshSettings.from_section({**config["meshes"], "edge_length_um": (
                    edge if edge == "auto" else float(edge))})
                start = time.perf_counter()
                quality, angles = meshes.export_meshes(to_mesh, spacing=spacing, formats=settings.formats,
                                                       outdir=Path(scratch) / edge,
                                                       edge_length_um=settings.edge_length(spacing))
                seconds[edge].append(time.perf_counter() - start)
                tables[edge] = summarize(quality, angles)
    for edge in args.edges:
        print(f"\nedge {edge} ({'traced' if edge == '0' else 'remeshed'}): {statistics.median(seconds[edge]):.1f} s")
        print(tables[edge].to_string(index=False))


if __name__ == "__main__":
    main()
