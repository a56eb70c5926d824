"""Figures of the report, one rule per figure of the registry (statcell/plots/registry.py): each draws from the tables
and images of the analysis rules, in envs/plots.yaml (no torch, no zarr), and writes a PNG (`figure`, in the report)
and its SVG (`svg`). tests/test_figures.py checks that these rules, the registry and the CLI agree."""

# Input data and models
rule plot_colony_overview:
    input:
        fovs=rules.project_colony.output[0],
    output:
        figure=report(
            "results/figures/colony_overview.png",
            caption="../workflow/report/colony_overview.rst",
            category="Input data",
        ),
        svg="results/figures/colony_overview.svg",
    params:
        settings=figure_settings("colony_overview"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_colony_overview.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-colony-overview --settings {{params.settings:q}} "
        "--fovs {input.fovs} --output {output.figure} > {log} 2>&1"


rule plot_model_check:
    input:
        kl=rules.check_models.output.kl,
        images=rules.check_models.output.images,
    output:
        figure=report(
            "results/figures/model_check.png",
            caption="../workflow/report/model_check.rst",
            category="Models",
        ),
        svg="results/figures/model_check.svg",
    params:
        settings=figure_settings("model_check"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_model_check.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-model-check --settings {{params.settings:q}} "
        "--kl {input.kl} --images {input.images} --output {output.figure} > {log} 2>&1"

# Embed and latent space figures
rule plot_latent_scatter:
    input:
        embeddings=rules.correlate_latent_space.input.reference,
        dimensions=rules.correlate_latent_space.input.dimensions,
        cells=rules.correlate_latent_space.input.cells,
    output:
        figure=report(
            "results/figures/latent_scatter.png",
            caption="../workflow/report/latent_scatter.rst",
            category="Latent space",
        ),
        svg="results/figures/latent_scatter.svg",
    params:
        settings=figure_settings("latent_space"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_latent_scatter.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-latent-scatter --settings {{params.settings:q}} "
        "--embeddings {input.embeddings} --dimensions {input.dimensions} --cells {input.cells} "
        "--output {output.figure} > {log} 2>&1"


rule plot_latent_examples:
    input:
        embeddings=rules.correlate_latent_space.input.reference,
        cells=rules.correlate_latent_space.input.cells,
        thumbnails="results/main/thumbnails.parquet",
        dimensions=rules.correlate_latent_space.input.dimensions,
    output:
        figure=report(
            "results/figures/latent_examples.png",
            caption="../workflow/report/latent_examples.rst",
            category="Latent space",
        ),
        svg="results/figures/latent_examples.svg",
    params:
        settings=figure_settings("latent_examples"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_latent_examples.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-latent-examples --settings {{params.settings:q}} "
        "--embeddings {input.embeddings} --cells {input.cells} --thumbnails {input.thumbnails} "
        "--dimensions {input.dimensions} --output {output.figure} > {log} 2>&1"


rule plot_latent_pairs:
    input:
        embeddings=rules.correlate_latent_space.input.reference,
        dimensions=rules.correlate_latent_space.input.dimensions,
    output:
        figure=report(
            "results/figures/latent_pairs.png",
            caption="../workflow/report/latent_pairs.rst",
            category="Latent space",
        ),
        svg="results/figures/latent_pairs.svg",
    params:
        settings=figure_settings("latent_space"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_latent_pairs.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-latent-pairs --settings {{params.settings:q}} "
        "--embeddings {input.embeddings} --dimensions {input.dimensions} --output {output.figure} > {log} 2>&1"


rule plot_latent_walks:
    input:
        walks=rules.walk_latent_space.output[0],
        correlations=rules.correlate_latent_space.output.correlations,
    output:
        figure=report(
            "results/figures/latent_walks.png",
            caption="../workflow/report/latent_walks.rst",
            category="Latent space",
        ),
        svg="results/figures/latent_walks.svg",
    params:
        settings=figure_settings("latent_walks"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_latent_walks.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-latent-walks --settings {{params.settings:q}} "
        "--walks {input.walks} --correlations {input.correlations} --output {output.figure} > {log} 2>&1"


rule plot_latent_correlations:
    input:
        correlations=rules.correlate_latent_space.output.correlations,
        dimensions=rules.correlate_latent_space.input.dimensions,
        pca=rules.correlate_latent_space.output.pca,
        dimension_correlations=rules.correlate_latent_space.output.dimension_correlations,
    output:
        figure=report(
            "results/figures/latent_correlations.png",
            caption="../workflow/report/latent_correlations.rst",
            category="Latent space",
        ),
        svg="results/figures/latent_correlations.svg",
    params:
        settings=figure_settings("latent_correlations"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_latent_correlations.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-latent-correlations --settings {{params.settings:q}} "
        "--correlations {input.correlations} --dimensions {input.dimensions} --pca {input.pca} "
        "--dimension-correlations {input.dimension_correlations} --output {output.figure} > {log} 2>&1"


rule plot_kl_per_dimension:
    input:
        kl=rules.correlate_latent_space.output.kl,
    output:
        figure=report(
            "results/figures/kl_per_dimension.png",
            caption="../workflow/report/kl_per_dimension.rst",
            category="Latent space",
        ),
        svg="results/figures/kl_per_dimension.svg",
    params:
        settings=figure_settings("kl_per_dimension"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_kl_per_dimension.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-kl-per-dimension --settings {{params.settings:q}} "
        "--kl {input.kl} --output {output.figure} > {log} 2>&1"

# Generation and features figures
rule plot_generated_cells:
    input:
        prior=rules.generate_cells.output.prior,
        test_cells=rules.generate_cells.output.test_cells,
    output:
        figure=report(
            "results/figures/generated_cells.png",
            caption="../workflow/report/generated_cells.rst",
            category="Generation",
        ),
        svg="results/figures/generated_cells.svg",
    params:
        settings=figure_settings("generated_cells"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_generated_cells.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-generated-cells --settings {{params.settings:q}} "
        "--prior {input.prior} --test-cells {input.test_cells} --output {output.figure} > {log} 2>&1"


rule plot_structures_in_one_cell:
    input:
        in_one_cell=rules.generate_cells.output.in_one_cell,
        examples=rules.generate_cells.output.examples,
        localization=rules.generate_cells.output.localization,
    output:
        figure=report(
            "results/figures/structures_in_one_cell.png",
            caption="../workflow/report/structures_in_one_cell.rst",
            category="Generation",
        ),
        svg="results/figures/structures_in_one_cell.svg",
    params:
        settings=figure_settings("structures_in_one_cell"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_structures_in_one_cell.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-structures-in-one-cell --settings {{params.settings:q}} "
        "--in-one-cell {input.in_one_cell} --examples {input.examples} --localization {input.localization} "
        "--output {output.figure} > {log} 2>&1"


rule plot_predicted_cells:
    input:
        predictions=rules.predict_cells.output.images,
    output:
        figure=report(
            "results/figures/predicted_cells.png",
            caption="../workflow/report/predicted_cells.rst",
            category="Generation",
        ),
        svg="results/figures/predicted_cells.svg",
    params:
        settings=figure_settings("predicted_cells"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_predicted_cells.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-predicted-cells --settings {{params.settings:q}} "
        "--predictions {input.predictions} --output {output.figure} > {log} 2>&1"


rule plot_in_silico_perturbation:
    input:
        steps=rules.perturb_cells.output.images,
    output:
        figure=report(
            "results/figures/in_silico_perturbation.png",
            caption="../workflow/report/in_silico_perturbation.rst",
            category="Drug perturbations",
        ),
        svg="results/figures/in_silico_perturbation.svg",
    params:
        settings=figure_settings("in_silico_perturbation"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_in_silico_perturbation.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-in-silico-perturbation --settings {{params.settings:q}} "
        "--steps {input.steps} --output {output.figure} > {log} 2>&1"


rule plot_structure_examples:
    input:
        examples=rules.generate_cells.output.examples,
    output:
        figure=report(
            "results/figures/structure_examples.png",
            caption="../workflow/report/structure_examples.rst",
            category="Generation",
        ),
        svg="results/figures/structure_examples.svg",
    params:
        settings=figure_settings("structure_examples"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_structure_examples.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-structure-examples --settings {{params.settings:q}} "
        "--examples {input.examples} --output {output.figure} > {log} 2>&1"


rule plot_truncated_prior:
    input:
        truncated=rules.generate_cells.output.truncated,
    output:
        figure=report(
            "results/figures/truncated_prior.png",
            caption="../workflow/report/truncated_prior.rst",
            category="Generation",
        ),
        svg="results/figures/truncated_prior.svg",
    params:
        settings=figure_settings("truncated_prior"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_truncated_prior.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-truncated-prior --settings {{params.settings:q}} "
        "--truncated {input.truncated} --output {output.figure} > {log} 2>&1"


rule plot_feature_violins:
    input:
        features=rules.measure_features.output[0],
    output:
        figure=report(
            "results/figures/feature_violins.png",
            caption="../workflow/report/feature_violins.rst",
            category="Generation",
        ),
        svg="results/figures/feature_violins.svg",
    params:
        settings=figure_settings("feature_violins"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_feature_violins.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-feature-violins --settings {{params.settings:q}} "
        "--features {input.features} --output {output.figure} > {log} 2>&1"

# Beta sweep figures
rule plot_beta_rate_distortion:
    input:
        rate_distortion=rules.analyze_beta_sweep.output.rate_distortion,
    output:
        figure=report(
            "results/figures/beta_rate_distortion.png",
            caption="../workflow/report/beta_rate_distortion.rst",
            category="β sweep",
        ),
        svg="results/figures/beta_rate_distortion.svg",
    params:
        settings=figure_settings("beta_rate_distortion"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_beta_rate_distortion.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-beta-rate-distortion --settings {{params.settings:q}} "
        "--rate-distortion {input.rate_distortion} --output {output.figure} > {log} 2>&1"


rule plot_beta_generated:
    input:
        generated=rules.analyze_beta_sweep.output.generated,
        rate_distortion=rules.analyze_beta_sweep.output.rate_distortion,
    output:
        figure=report(
            "results/figures/beta_generated.png",
            caption="../workflow/report/beta_generated.rst",
            category="β sweep",
        ),
        svg="results/figures/beta_generated.svg",
    params:
        settings=figure_settings("beta_generated"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_beta_generated.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-beta-generated --settings {{params.settings:q}} "
        "--generated {input.generated} --rate-distortion {input.rate_distortion} "
        "--output {output.figure} > {log} 2>&1"


rule plot_beta_kl:
    input:
        kl=rules.analyze_beta_sweep.output.kl,
    output:
        figure=report(
            "results/figures/beta_kl.png",
            caption="../workflow/report/beta_kl.rst",
            category="β sweep",
        ),
        svg="results/figures/beta_kl.svg",
    params:
        settings=figure_settings("beta_kl"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_beta_kl.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-beta-kl --settings {{params.settings:q}} "
        "--kl {input.kl} --output {output.figure} > {log} 2>&1"


rule plot_beta_features:
    input:
        generated_features=rules.analyze_beta_sweep.output.generated_features,
        features=rules.analyze_beta_sweep.output.features,
    output:
        figure=report(
            "results/figures/beta_features.png",
            caption="../workflow/report/beta_features.rst",
            category="β sweep",
        ),
        svg="results/figures/beta_features.svg",
    params:
        settings=figure_settings("beta_features"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_beta_features.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-beta-features --settings {{params.settings:q}} "
        "--generated-features {input.generated_features} --features {input.features} "
        "--output {output.figure} > {log} 2>&1"


rule plot_beta_regression:
    input:
        kl=rules.analyze_beta_sweep.output.kl,
        regression=rules.analyze_beta_sweep.output.regression,
        feature_pcs=rules.analyze_beta_sweep.output.feature_pcs,
    output:
        figure=report(
            "results/figures/beta_regression.png",
            caption="../workflow/report/beta_regression.rst",
            category="β sweep",
        ),
        svg="results/figures/beta_regression.svg",
    params:
        settings=figure_settings("beta_regression"),
        sweep=section_json("beta_sweep"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_beta_regression.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-beta-regression --settings {{params.settings:q}} --sweep-settings {{params.sweep:q}} "
        "--kl {input.kl} --regression {input.regression} --feature-pcs {input.feature_pcs} "
        "--output {output.figure} > {log} 2>&1"

# Coupling figures
rule plot_coupling_cells:
    input:
        per_cell=rules.measure_coupling.output.cells,
    output:
        figure=report(
            "results/figures/coupling_cells.png",
            caption="../workflow/report/coupling_cells.rst",
            category="Coupling",
        ),
        svg="results/figures/coupling_cells.svg",
    params:
        settings=figure_settings("coupling_cells"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_coupling_cells.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-coupling-cells --settings {{params.settings:q}} "
        "--per-cell {input.per_cell} --output {output.figure} > {log} 2>&1"


rule plot_coupling_structures:
    input:
        summary=rules.measure_coupling.output.structures,
    output:
        figure=report(
            "results/figures/coupling_structures.png",
            caption="../workflow/report/coupling_structures.rst",
            category="Coupling",
        ),
        svg="results/figures/coupling_structures.svg",
    params:
        settings=figure_settings("coupling_structures"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_coupling_structures.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-coupling-structures --settings {{params.settings:q}} "
        "--summary {input.summary} --output {output.figure} > {log} 2>&1"

# Perturbation figures
rule plot_drug_reference_latents:
    input:
        embeddings=rules.drug_shifts.input.reference,
        dimensions=rules.drug_shifts.input.reference_dimensions,
        cells=rules.drug_shifts.input.cells,
        shifts=rules.drug_shifts.output[0],
    output:
        figure=report(
            "results/figures/drug_reference_latents.png",
            caption="../workflow/report/drug_reference_latents.rst",
            category="Drug perturbations",
        ),
        svg="results/figures/drug_reference_latents.svg",
    params:
        settings=figure_settings("drug_reference_latents"),
        analysis=section_json("analysis"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_drug_reference_latents.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-drug-reference-latents --settings {{params.settings:q}} "
        "--analysis-settings {params.analysis:q} "
        "--embeddings {input.embeddings} --dimensions {input.dimensions} --cells {input.cells} "
        "--shifts {input.shifts} --output {output.figure} > {log} 2>&1"


rule plot_drug_target_latents:
    input:
        embeddings=rules.drug_shifts.input.target,
        dimensions=rules.drug_shifts.input.target_dimensions,
        cells=rules.drug_shifts.input.cells,
        shifts=rules.drug_shifts.output[0],
    output:
        figure=report(
            "results/figures/drug_target_latents.png",
            caption="../workflow/report/drug_target_latents.rst",
            category="Drug perturbations",
        ),
        svg="results/figures/drug_target_latents.svg",
    params:
        settings=figure_settings("drug_target_latents"),
        analysis=section_json("analysis"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/plot_drug_target_latents.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-drug-target-latents --settings {{params.settings:q}} "
        "--analysis-settings {params.analysis:q} "
        "--embeddings {input.embeddings} --dimensions {input.dimensions} --cells {input.cells} "
        "--shifts {input.shifts} --output {output.figure} > {log} 2>&1"


rule plot_drug_trajectory:
    input:
        trajectory=rules.drug_trajectory.output.table,
        images=rules.drug_trajectory.output.images,
        shifts=rules.drug_shifts.output[0],
    output:
        figure=report(
            "results/figures/drug_trajectory.png",
            caption="../workflow/report/drug_trajectory.rst",
            category="Drug perturbations",
        ),
        svg="results/figures/drug_trajectory.svg",
    params:
        settings=figure_settings("drug_trajectory"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_drug_trajectory.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-drug-trajectory --settings {{params.settings:q}} "
        "--trajectory {input.trajectory} --images {input.images} --shifts {input.shifts} "
        "--output {output.figure} > {log} 2>&1"
