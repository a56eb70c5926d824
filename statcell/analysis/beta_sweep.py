"""The β sweep: 2D reference models on maximum projections, trained at β evenly spaced in [0, 1] (paper Fig 3, S6, S8).

For each model, on the test cells (projected along z as in training):

- rate and distortion, the two terms of the ELBO (paper Fig 3A): the mean KL of ``q(z | x)`` from the prior, and the
  mean sum of squared reconstruction errors averaged over K latent draws (``analysis.elbo_samples``);
- the mean KL of every latent dimension, ranked (S6, S8a); dimensions above ``beta_sweep.important_kl_nats`` (0.6
  nats in the paper) are *important*;
- cells generated from the prior (Fig 3C), the same latent draws for every β.

Then the feature regression (S8b–d): the 14 features of the real cells' projections are z-scored and reduced by PCA,
and a linear regression from the important dimensions' latent means predicts each of the top
``beta_sweep.feature_pcs`` PCs. Unlike the original code, which fitted on every row (test cells included), the
z-scoring, the PCA, the choice of important dimensions and the regression are all fitted on the training cells
alone; R² is measured on the test cells only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from statcell.io import store_spacing
from statcell.normalize import imaged_cells
from statcell.seeding import integer_seed

if TYPE_CHECKING:  # torch is imported where it is used, so the workflow's rule files load fast
    import torch

#: Splits the analysis reads: the regression is fitted on ``train`` and scored on ``test``.
FIT_SPLIT, EVAL_SPLIT = "train", "test"


@dataclass(frozen=True)
class BetaSweepSettings:
    """The ``beta_sweep`` section of the configuration (see the schema for each field)."""

    count: int
    epochs: int
    important_kl_nats: float
    feature_pcs: int

    @classmethod
    def from_config(cls, section: Mapping) -> BetaSweepSettings:
        """Build settings from the validated ``beta_sweep`` config section."""
        return cls(**{name: section[name] for name in cls.__dataclass_fields__})


def beta_values(count: int, *, lowest: float = 0.01, highest: float = 0.99) -> np.ndarray:
    """The sweep's β values: ``count`` evenly spaced from ``lowest`` to ``highest``, both inside (0, 1).

    The grid is open, as the original code's (0.01 … 0.99): at β = 0 the KL is unpenalized and the best validation
    ELBO falls on the first epoch, and at β = 1 the reconstruction has no weight, so both ends would show failed
    training rather than the rate-distortion trade-off.

    Examples
    --------
    >>> beta_values(5).round(3).tolist()
    [0.01, 0.255, 0.5, 0.745, 0.99]
    """
    if count < 2:
        raise ValueError(f"a β sweep needs at least 2 values, got {count}")
    if not 0 < lowest < highest < 1:
        raise ValueError(f"the β grid must lie inside (0, 1) with lowest < highest, got {lowest} .. {highest}")
    return np.linspace(lowest, highest, count)


def training_section(training: Mapping, *, sweep: Mapping, index: int) -> dict:
    """The ``training`` config section of sweep model ``index``: 2D, its β, and the sweep's epoch count.

    Parameters
    ----------
    training : mapping
        The validated ``training`` section; every other setting (widths, latent size, optimizer, seed) is kept.
    sweep : mapping
        The validated ``beta_sweep`` section.
    index : int
        Position of the model on the β grid, ``0 .. count - 1``.

    Returns
    -------
    dict
        A new ``training`` section.

    Examples
    --------
    >>> section = training_section({"ndim": 3, "beta": 0.5, "epochs": 10, "latent_dim": 32},
    ...                            sweep={"count": 3, "lowest": 0.1, "highest": 0.9, "epochs": 20}, index=1)
    >>> section["ndim"], round(section["beta"], 3), section["epochs"], section["latent_dim"]
    (2, 0.5, 20, 32)
    """
    betas = beta_values(sweep["count"], lowest=sweep["lowest"], highest=sweep["highest"])
    if not 0 <= index < len(betas):
        raise ValueError(f"sweep index {index} is outside 0 .. {len(betas) - 1}")
    return {**training, "ndim": 2, "beta": float(betas[index]), "epochs": sweep["epochs"]}


class Evaluation(NamedTuple):
    """One model on a set of cells: latent means ``(N, D)``, KL per cell and dimension ``(N, D)``, and the K-draw
    mean sum of squared errors per cell ``(N,)``."""

    mean: np.ndarray
    kl: np.ndarray
    distortion: np.ndarray


def evaluate(model: torch.nn.Module, images: torch.Tensor, *, samples: int, batch_size: int,
             generator: torch.Generator | None = None) -> Evaluation:
    """Encode images with a reference model and measure its rate and distortion per cell.

    Parameters
    ----------
    model : ReferenceVAE
        A trained model in eval mode.
    images : Tensor
        ``(N, C, Y, X)`` (or 3D) images as the model was trained on.
    samples : int
        Latent draws K averaged in the distortion; 0 encodes only (the distortion is then NaN).
    batch_size : int
        Cells per forward pass (memory only).
    generator : torch.Generator, optional
        Source of the latent draws.

    Returns
    -------
    Evaluation
    """
    import torch

    from statcell.models.loss import elbo_estimate, kl_per_dimension

    means, kls, errors = [], [], []
    with torch.no_grad():
        for batch in torch.split(images, batch_size):
            code = model.encode(batch)
            means.append(code.mean)
            kls.append(kl_per_dimension(code.mean, code.log_var))
            if samples:
                _, error, _ = elbo_estimate(lambda code=code: code, model.decode, batch, samples=samples,
                                            generator=generator)
                errors.append(error)
    distortion = torch.cat(errors).numpy() if samples else np.full(len(images), np.nan, dtype=np.float32)
    return Evaluation(torch.cat(means).numpy(), torch.cat(kls).numpy(), distortion)


def ranked_kl(kl: np.ndarray) -> pd.DataFrame:
    """Mean KL of each latent dimension over cells, ranked from the largest.

    Parameters
    ----------
    kl : ndarray
        KL per cell and dimension, ``(N, D)``.

    Returns
    -------
    DataFrame
        Columns ``rank`` (0 = largest), ``dimension`` (index in the latent vector) and ``kl`` (nats).

    Examples
    --------
    >>> ranked_kl(np.array([[0.1, 2.0, 0.5], [0.3, 1.0, 0.5]])).to_dict("list")
    {'rank': [0, 1, 2], 'dimension': [1, 2, 0], 'kl': [1.5, 0.5, 0.2]}
    """
    mean = kl.mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    return pd.DataFrame({"rank": np.arange(len(order)), "dimension": order, "kl": mean[order]})


def important_dimensions(kl: np.ndarray, *, threshold: float) -> np.ndarray:
    """Latent dimensions whose mean KL over cells exceeds ``threshold`` nats, from the largest mean KL down.

    Examples
    --------
    >>> important_dimensions(np.array([[0.1, 2.0, 0.7], [0.3, 1.0, 0.7]]), threshold=0.6).tolist()
    [1, 2]
    """
    ranking = ranked_kl(kl)
    return ranking.loc[ranking["kl"] > threshold, "dimension"].to_numpy()


class FeaturePCA(NamedTuple):
    """Z-scoring and PCA of the features, fitted on the training cells.

    ``center`` and ``scale`` ``(F,)`` z-score the features; ``components`` ``(P, F)`` are the loadings of the top P
    PCs and ``explained_variance_ratio`` ``(P,)`` their share of the training cells' variance.
    """

    center: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, features: np.ndarray) -> np.ndarray:
        """PC scores ``(N, P)`` of features ``(N, F)``."""
        return ((features - self.center) / self.scale) @ self.components.T


def fit_feature_pca(features: np.ndarray, *, components: int) -> FeaturePCA:
    """Z-score features and fit their PCA.

    Parameters
    ----------
    features : ndarray
        ``(N, F)`` features of the fitting cells (no NaN).
    components : int
        PCs kept (at most ``min(N, F)``).

    Returns
    -------
    FeaturePCA
        Constant features are centred but not scaled.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    pca = PCA(n_components=min(components, *features.shape)).fit(scaler.transform(features))
    return FeaturePCA(scaler.mean_, scaler.scale_, pca.components_, pca.explained_variance_ratio_)


class Regression(NamedTuple):
    """Linear maps from latent means to PC scores, fitted on one set of cells and scored on another.

    ``coefficients`` ``(P, D)`` and ``intercepts`` ``(P,)``, one regression per PC; ``r2`` ``(P,)`` the coefficient
    of determination of each PC on the scoring cells.
    """

    coefficients: np.ndarray
    intercepts: np.ndarray
    r2: np.ndarray


def fit_regression(latent_fit: np.ndarray, scores_fit: np.ndarray, latent_eval: np.ndarray,
                   scores_eval: np.ndarray) -> Regression:
    """Least-squares regression of each PC on the latent dimensions, fitted on one set of cells, scored on another.

    Parameters
    ----------
    latent_fit, scores_fit : ndarray
        ``(N, D)`` latent means and ``(N, P)`` PC scores of the fitting cells. ``D`` may be 0 (no important
        dimension): each PC is then predicted by its mean over the fitting cells.
    latent_eval, scores_eval : ndarray
        The same for the scoring cells, which never enter the fit.

    Returns
    -------
    Regression
        R² is ``1 - SS_res / SS_tot`` on the scoring cells (negative when worse than their own mean).

    Examples
    --------
    >>> z = np.arange(6.0)[:, None]
    >>> fit = fit_regression(z[:4], 2 * z[:4] + 1, z[4:], 2 * z[4:] + 1)
    >>> np.round(fit.coefficients, 6).tolist(), np.round(fit.r2, 6).tolist()
    ([[2.0]], [1.0])
    """
    from sklearn.metrics import r2_score

    design = np.column_stack([np.ones(len(latent_fit)), latent_fit])
    solution, *_ = np.linalg.lstsq(design, scores_fit, rcond=None)
    predicted = np.column_stack([np.ones(len(latent_eval)), latent_eval]) @ solution
    r2 = np.atleast_1d(r2_score(scores_eval, predicted, multioutput="raw_values"))
    return Regression(coefficients=solution[1:].T, intercepts=solution[0], r2=r2)


def reference_images(store: str | Path, indices: np.ndarray, *, ndim: int) -> torch.Tensor:
    """Membrane and DNA images of cells of a store, as a model of ``ndim`` spatial dimensions was trained on.

    Parameters
    ----------
    store : path
        ``cells.zarr``.
    indices : ndarray of int
        Store indices.
    ndim : {2, 3}
        3: the stored ``(N, 2, Z, Y, X)`` volumes; 2: their maximum projections along z, ``(N, 2, Y, X)``.

    Returns
    -------
    Tensor
        float32 images, in the order of ``indices``.
    """
    import torch

    from statcell.train import CellDataset

    dataset = CellDataset(store, indices, kind="reference", cache_in_memory=True, project=ndim == 2)
    if not len(dataset):
        return torch.empty(0)
    return torch.stack([dataset[item][0] for item in range(len(dataset))])


class SweepResult(NamedTuple):
    """The tables and generated cells of a β sweep (see :func:`analyze_beta_sweep`)."""

    rate_distortion: pd.DataFrame
    kl_per_dimension: pd.DataFrame
    regression: pd.DataFrame
    feature_pcs: pd.DataFrame
    features: pd.DataFrame
    generated: np.ndarray
    generated_features: pd.DataFrame


def _cell_features(store: str | Path, cells: pd.DataFrame, images: torch.Tensor, *, pca_components: int
                   ) -> tuple[pd.DataFrame, FeaturePCA]:
    """Features and PC scores of the real cells' projections, with the PCA fitted on the training cells."""
    from statcell.analysis.features import FEATURE_NAMES, feature_table

    spacing = store_spacing(store)[-(images.ndim - 2):]
    features = feature_table(images.numpy(), spacing=spacing)
    names = list(FEATURE_NAMES)
    complete = features[names].notna().all(axis=1).to_numpy()
    fit_rows = complete & (cells["split"].to_numpy() == FIT_SPLIT)
    pca = fit_feature_pca(features.loc[fit_rows, names].to_numpy(), components=pca_components)
    scores = np.full((len(features), len(pca.components)), np.nan)
    scores[complete] = pca.transform(features.loc[complete, names].to_numpy())
    table = pd.concat([cells[["cell_id", "split"]].reset_index(drop=True), features,
                       pd.DataFrame(scores, columns=[f"pc_{k + 1}" for k in range(scores.shape[1])])], axis=1)
    return table, pca


def analyze_beta_sweep(checkpoints: Sequence[str | Path], *, store: str | Path, cells: pd.DataFrame,
                       settings: BetaSweepSettings, samples: int, batch_size: int, generated: int,
                       seed: int) -> SweepResult:
    """Rate, distortion, KL per dimension, generated cells and feature regression of every model of a β sweep.

    Parameters
    ----------
    checkpoints : sequence of path
        The sweep's trained 2D reference models (any order; tables are sorted by β).
    store : path
        ``cells.zarr`` the models were trained on.
    cells : DataFrame
        ``cells.parquet`` beside it; its ``train`` cells fit the feature PCA and the regressions, its ``test``
        cells give rate, distortion, KL and R², the controls built from other cells left out
        (:func:`statcell.normalize.imaged_cells`: their membrane and DNA are their source cell's).
    settings : BetaSweepSettings
        Threshold of important dimensions and number of feature PCs.
    samples : int
        Latent draws K of the distortion estimate.
    batch_size : int
        Cells per forward pass (memory only).
    generated : int
        Cells drawn from each model's prior; every model decodes the same latent draws when the latent sizes agree.
    seed : int
        Seed of the latent draws; every β draws the same noise, so cells compare across β.

    Returns
    -------
    SweepResult
        ``rate_distortion``: one row per model (``beta, rate, distortion, elbo, important_dims, latent_dim``), rate
        and distortion in nats and squared intensity units, means over test cells; ``kl_per_dimension``: ranked
        mean KL per dimension of each model on the train and test cells (``beta, split, rank, dimension, kl``);
        ``regression``: one row per model and PC (``beta, pc, r2, explained_variance_ratio, dimensions,
        fit_cells, scored_cells``), R² on the test cells, and a ``pc = 0`` row per model whose ``r2`` is the
        variance-weighted total ``sum_k r2_k * ratio_k`` (the paper's black dotted line, S8d);
        ``feature_pcs``: loadings (``pc, feature, loading, explained_variance_ratio``); ``features``: the 14
        features and PC scores of every train and test cell; ``generated``: ``(models, generated, 2, Y, X)``;
        ``generated_features``: the 14 features of every generated cell (``beta, cell`` and the features; ``cell``
        is the index of the latent draw, the same draw at every β, so a cell can be followed across β: Fig 3D, S7).
    """
    import torch

    from statcell.analysis.features import FEATURE_NAMES, feature_table
    from statcell.train import load_model

    imaged = imaged_cells(cells)
    chosen = imaged[imaged["split"].isin([FIT_SPLIT, EVAL_SPLIT])].reset_index(drop=True)
    splits = chosen["split"].to_numpy()
    models = sorted((load_model(path) for path in checkpoints), key=lambda loaded: loaded[1]["beta"])
    ndims = {len(hparams["config"]["image_shape"]) for _, hparams in models}
    if len(ndims) != 1:
        raise ValueError(f"the sweep's models mix {sorted(ndims)}-dimensional inputs")
    images = reference_images(store, chosen["store_index"].to_numpy(), ndim=ndims.pop())
    features, pca = _cell_features(store, chosen, images, pca_components=settings.feature_pcs)
    scores = features[[f"pc_{k + 1}" for k in range(len(pca.components))]].to_numpy()
    rows = {split: np.flatnonzero(splits == split) for split in (FIT_SPLIT, EVAL_SPLIT)}
    scored = {split: ~np.isnan(scores[index]).any(axis=1) for split, index in rows.items()}
    threshold = settings.important_kl_nats

    summary, kl_tables, regressions, samples_out, generated_features = [], [], [], [], []
    spacing = store_spacing(store)[-(images.ndim - 2):]
    for model, hparams in models:
        beta = float(hparams["beta"])
        embedding_noise = torch.Generator().manual_seed(integer_seed(seed, "beta sweep", "embedding"))
        result = {split: evaluate(model, images[index], samples=samples if split == EVAL_SPLIT else 0,
                                  batch_size=batch_size, generator=embedding_noise)
                  for split, index in rows.items()}  # the distortion is needed on the test cells only
        for split, values in result.items():
            kl_tables.append(ranked_kl(values.kl).assign(beta=beta, split=split))
        test = result[EVAL_SPLIT]
        rate, distortion = float(test.kl.sum(axis=1).mean()), float(test.distortion.mean())
        summary.append({"beta": beta, "rate": rate, "distortion": distortion, "elbo": -(rate + distortion),
                        "important_dims": len(important_dimensions(test.kl, threshold=threshold)),
                        "latent_dim": test.kl.shape[1], "test_cells": len(rows[EVAL_SPLIT])})
        dims = important_dimensions(result[FIT_SPLIT].kl, threshold=threshold)
        fit_eval = [(result[split].mean[scored[split]][:, dims], scores[rows[split]][scored[split]])
                    for split in (FIT_SPLIT, EVAL_SPLIT)]
        fit = fit_regression(*fit_eval[0], *fit_eval[1])
        ratio = pca.explained_variance_ratio
        regressions.append(pd.DataFrame({
            "beta": beta, "pc": np.arange(len(fit.r2) + 1), "r2": [float(fit.r2 @ ratio), *fit.r2],
            "explained_variance_ratio": [float(ratio.sum()), *ratio], "dimensions": len(dims),
            "fit_cells": int(scored[FIT_SPLIT].sum()), "scored_cells": int(scored[EVAL_SPLIT].sum())}))
        with torch.no_grad():
            prior_noise = torch.Generator().manual_seed(integer_seed(seed, "beta sweep", "generation"))
            samples_out.append(model.sample(generated, generator=prior_noise).numpy())
        measured = feature_table(samples_out[-1], spacing=spacing)
        generated_features.append(pd.concat([pd.DataFrame({"beta": beta, "cell": np.arange(len(measured))}),
                                             measured[list(FEATURE_NAMES)]], axis=1))

    loadings = pd.DataFrame([{"pc": k + 1, "feature": name, "loading": float(pca.components[k, f]),
                              "explained_variance_ratio": float(pca.explained_variance_ratio[k])}
                             for k in range(len(pca.components)) for f, name in enumerate(FEATURE_NAMES)])
    kl_table = pd.concat(kl_tables, ignore_index=True)[["beta", "split", "rank", "dimension", "kl"]]
    return SweepResult(pd.DataFrame(summary), kl_table, pd.concat(regressions, ignore_index=True), loadings,
                       features, np.stack(samples_out), pd.concat(generated_features, ignore_index=True))

