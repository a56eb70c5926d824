"""The ``statcell`` command: one subcommand per workflow rule, so every stage also runs by hand.

Each subcommand reads its settings either from a config file (``--config``, validated against the schema; the
default is the embedded ``config/config.yaml``) or, as the Snakemake rules do, from its config section as inline JSON
(``--settings``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from statcell.config import ConfigError, section_settings

log = logging.getLogger("statcell")


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="YAML", help="workflow config file (default: the embedded config)")
    source.add_argument("--settings", metavar="JSON", help="this stage's config section as JSON (used by the rules)")


def _synthesize(args: argparse.Namespace) -> None:
    from statcell import synth

    settings = synth.SynthSettings.from_config(
        section_settings("synthetic", config_path=args.config, inline_json=args.settings)
    )
    plans = synth.plan_fovs(settings)
    log.info("generating %d FOVs of %s voxels (Z, Y, X) into %s with %d worker(s)",
             len(plans), settings.fov_shape, args.outdir, args.threads)
    cells = synth.synthesize(settings, args.outdir, workers=args.threads)
    log.info("wrote %d FOVs holding %d cells (%d not touching the border)",
             len(plans), len(cells), int((~cells["touches_border"]).sum()))


def _plot_colony_overview(args: argparse.Namespace) -> None:
    from statcell import figures

    shown = figures.colony_overview(args.manifests, args.output)
    log.info("drew %d FOVs into %s", len(shown), args.output)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statcell",
        description="Statistical Cell: a generative model of 3D single-cell organization, stage by stage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synthesize = commands.add_parser(
        "synthesize",
        help="generate the embedded synthetic hiPSC colony (raw FOVs, manifests, ground truth)",
        description="Generate the synthetic colony: raw/{fov}.ome.tiff, ground_truth/{fov}_labels.ome.tiff, "
        "ground_truth/cells.parquet, main_manifest.csv and drugs_manifest.csv under OUTDIR.",
    )
    _add_settings_options(synthesize)
    synthesize.add_argument("--outdir", required=True, help="output folder, e.g. results/synthetic")
    synthesize.add_argument("--threads", type=int, default=1, help="worker processes (default 1)")
    synthesize.set_defaults(handler=_synthesize)

    overview = commands.add_parser(
        "plot-colony-overview",
        help="gallery of the first FOV of every structure and treatment",
        description="Draw max projections and an xz section of the first FOV of every (structure, treatment).",
    )
    overview.add_argument("manifests", nargs="+", help="FOV manifest CSV files")
    overview.add_argument("--output", required=True, help="PNG to write")
    overview.set_defaults(handler=_plot_colony_overview)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``statcell`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 for a configuration error, 1 for a data error.
    """
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    except (FileNotFoundError, ValueError) as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
