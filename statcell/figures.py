"""Figures for the Snakemake report. Colours are fixed across figures: membrane magenta, DNA blue, structure yellow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from statcell import io

#: RGB colour of each channel in composites.
CHANNEL_COLOURS: dict[str, tuple[float, float, float]] = {
    "membrane": (1.0, 0.2, 1.0),
    "dna": (0.15, 0.45, 1.0),
    "structure": (1.0, 0.9, 0.0),
}


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


def composite(channels: dict[str, np.ndarray]) -> np.ndarray:
    """Additive RGB composite of 2D channels named as in :data:`CHANNEL_COLOURS` (each already in [0, 1]).

    Parameters
    ----------
    channels : dict of str to ndarray
        ``(Y, X)`` images in [0, 1], keyed by channel role.

    Returns
    -------
    ndarray
        ``(Y, X, 3)`` RGB in [0, 1].
    """
    first = next(iter(channels.values()))
    rgb = np.zeros((*first.shape, 3), dtype=np.float32)
    for name, plane in channels.items():
        rgb += plane[..., None] * np.asarray(CHANNEL_COLOURS[name], dtype=np.float32)
    return np.clip(rgb, 0, 1)


def _scale_bar(axis, length_um: float, pixel_um: float, shape: tuple[int, int]) -> None:
    y = shape[0] * 0.92
    x0 = shape[1] * 0.05
    axis.plot([x0, x0 + length_um / pixel_um], [y, y], color="white", linewidth=3, solid_capstyle="butt")
    axis.text(x0, y - shape[0] * 0.03, f"{length_um:g} µm", color="white", fontsize=8)


def colony_overview(manifests: list[str | Path], output: str | Path) -> pd.DataFrame:
    """Gallery of the first FOV of every (structure, treatment): composite and structure max projections, xz section.

    Parameters
    ----------
    manifests : list of path
        FOV manifests (e.g. the synthetic training and drug sets).
    output : path
        PNG to write.

    Returns
    -------
    DataFrame
        The FOVs shown, one row per panel row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.concat([io.read_manifest(path) for path in manifests], ignore_index=True)
    shown = table.groupby(["structure", "drug"], sort=False).head(1).reset_index(drop=True)
    figure, axes = plt.subplots(len(shown), 3, figsize=(10.5, 3.3 * len(shown)), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 1, 1.4]})
    for row, fov in zip(axes, shown.itertuples()):
        image = io.read_image(fov.path).data.astype(np.float32)
        roles = {"membrane": fov.membrane_channel, "dna": fov.dna_channel, "structure": fov.structure_channel}
        projection = {role: display_range(image[index].max(axis=0)) for role, index in roles.items()}
        centre = image.shape[2] // 2
        section = {role: display_range(image[index][:, centre, :]) for role, index in roles.items()}
        treatment = f", {fov.drug} {fov.concentration_um:g} µM" if fov.drug else ""
        row[0].imshow(composite(projection))
        row[0].set_title(f"{fov.structure}{treatment}\nmax projection (z)", fontsize=9)
        row[1].imshow(projection["structure"], cmap="gray")
        row[1].set_title("structure channel, max projection", fontsize=9)
        row[2].imshow(composite(section), aspect=fov.pixel_size_z_um / fov.pixel_size_x_um, origin="lower")
        row[2].set_title(f"xz section at y = {centre * fov.pixel_size_y_um:.0f} µm", fontsize=9)
        for axis in row[:2]:
            _scale_bar(axis, 10, fov.pixel_size_x_um, projection["structure"].shape)
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle("Input FOVs: membrane (magenta), DNA (blue), structure (yellow)", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / figure.get_figheight()))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=60)
    plt.close(figure)
    return shown


def model_check(reference_checkpoint: str | Path, target_checkpoint: str | Path, store: str | Path,
                cells: str | Path, output: str | Path, *, count: int = 6) -> pd.DataFrame:
    """Test cells beside their reconstructions by both models, and each model's KL per latent dimension.

    Parameters
    ----------
    reference_checkpoint, target_checkpoint : path
        Trained models.
    store, cells : path
        ``cells.zarr`` and ``cells.parquet``; test-split cells are shown (one per structure, up to ``count``) and
        all test cells enter the KL.
    output : path
        PNG to write.
    count : int
        Cells shown.

    Returns
    -------
    DataFrame
        Mean KL per latent dimension of each model on the test cells (columns ``model``, ``dimension``, ``kl``),
        in decreasing order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    import zarr

    from statcell.models.loss import kl_per_dimension
    from statcell.train import load_model

    table = pd.read_parquet(cells)
    test = table[table["split"] == "test"].sort_values("store_index")
    array = zarr.open_array(Path(store) / "0", mode="r")
    images = torch.from_numpy(np.array(array.get_orthogonal_selection((test["store_index"].to_numpy(), [0, 1, 2]))))
    reference, _ = load_model(reference_checkpoint)
    target, hparams = load_model(target_checkpoint)
    labels = torch.tensor(test["structure"].map({s: i for i, s in enumerate(hparams["structures"])}).to_numpy())
    with torch.no_grad():
        ref_code = reference.encode(images[:, :2])
        tgt_code = target.encode(images[:, 2:], images[:, :2], labels)
        shown = test.reset_index(drop=True).groupby("structure").head(1).index[:count].to_numpy(copy=True)
        ref_recon = reference.decode(ref_code.mean[shown])
        tgt_recon = target.decode(tgt_code.mean[shown], images[shown, :2], labels[shown])
    kl = pd.concat([pd.DataFrame({"model": name, "dimension": np.arange(code.mean.shape[1]),
                                  "kl": kl_per_dimension(code.mean, code.log_var).mean(dim=0).numpy()})
                    .sort_values("kl", ascending=False) for name, code in (("reference", ref_code),
                                                                            ("target", tgt_code))])

    def projection(volume: torch.Tensor) -> np.ndarray:
        return volume.amax(dim=-3).clamp(0, 1).numpy()  # max projection along z

    figure = plt.figure(figsize=(11, 2.0 * len(shown) + 3.2))
    grid = figure.add_gridspec(len(shown) + 1, 4, height_ratios=[1.0] * len(shown) + [1.6])
    titles = ("input: membrane, DNA", "reference model", "input: structure", "target model")
    for row, index in enumerate(shown):
        real, rebuilt = projection(images[index]), (projection(ref_recon[row]), projection(tgt_recon[row]))
        panels = (composite({"membrane": real[0], "dna": real[1]}),
                  composite({"membrane": rebuilt[0][0], "dna": rebuilt[0][1]}), real[2], rebuilt[1][0])
        for column, panel in enumerate(panels):
            axis = figure.add_subplot(grid[row, column])
            axis.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=9)
            if column == 0:
                axis.set_ylabel(test["structure"].iloc[index], fontsize=8)
    for column, name in enumerate(("reference", "target")):
        axis = figure.add_subplot(grid[-1, 2 * column:2 * column + 2])
        values = kl.loc[kl["model"] == name, "kl"].to_numpy()
        axis.bar(np.arange(len(values)), values, color="0.3")
        axis.set_yscale("log")
        axis.set_xlabel("latent dimension (ranked by KL)")
        axis.set_ylabel("mean KL on test cells (nats)")
        axis.set_title(f"{name} model: {int((values > 0.6).sum())} of {len(values)} dimensions above 0.6 nats",
                       fontsize=9)
    figure.suptitle("Test cells (max projections along z, after normalization) and their reconstructions "
                    "from the posterior mean", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=80)
    plt.close(figure)
    return kl
