"""A first look at the trained models: test cells beside their reconstructions, and each model's KL per dimension.

:func:`check_models` runs both models on the test cells; :func:`statcell.plots.models.plot_model_check` draws
the result from the table and images it returns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from statcell.io import read_cells

#: Store channels the models read: membrane and DNA (reference), structure (target).
_STORE_CHANNELS = [0, 1, 2]


def check_models(reference_checkpoint: str | Path, target_checkpoint: str | Path, *, store: str | Path,
                 cells: pd.DataFrame, count: int = 6) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Each model's mean KL per latent dimension on the test cells, and a few test cells with their reconstructions.

    Parameters
    ----------
    reference_checkpoint, target_checkpoint : path
        Trained models (``NAME.pt`` with its card, or a ``.ckpt``).
    store : path
        ``cells.zarr`` the models were trained on.
    cells : DataFrame
        Its ``cells.parquet``: test-split cells are shown (the first of each structure, up to ``count``) and all
        test cells enter the KL.
    count : int
        Cells shown.

    Returns
    -------
    kl : DataFrame
        Mean KL per latent dimension of each model (columns ``model``, ``dimension``, ``kl``), in decreasing order.
    images : dict of str to ndarray
        Maximum projections along z, clipped to [0, 1]: ``real`` ``(n, 3, Y, X)`` (membrane, DNA, structure),
        ``reference`` ``(n, 2, Y, X)`` and ``target`` ``(n, 1, Y, X)`` reconstructions from the posterior means,
        and ``structure``, the n cells' structure names.
    """
    import torch

    from statcell.models.loss import kl_per_dimension
    from statcell.train import load_model

    test = cells[cells["split"] == "test"].sort_values("store_index")
    images = torch.from_numpy(read_cells(store, test["store_index"].to_numpy(), channels=_STORE_CHANNELS))
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
        return volume.amax(dim=-3).clamp(0, 1).numpy().astype(np.float32)  # max projection along z

    return kl, {"real": projection(images[shown]), "reference": projection(ref_recon),
                "target": projection(tgt_recon), "structure": test["structure"].iloc[shown].to_numpy(dtype=str)}
