"""Stage 5: analyses of the trained models. Every analysis writes tables; rules/figures.smk draws from them."""

# One block per analysis, in the order of the paper.

# Input data and models at a glance
rule project_colony:
    input:
        manifests=input_manifests,
    output:
        "results/analysis/overview/colony_projections.npz",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        "logs/project_colony.log",
    conda:
        "../envs/imaging.yaml"
    shell:
        f"{STATCELL} project-colony {{input.manifests}} --output {{output}} > {{log}} 2>&1"


rule check_models:
    input:
        reference=model_file("reference"),
        target=model_file("target"),
        store=rules.train_reference.input.store,
        cells=rules.train_reference.input.cells,
    output:
        kl="results/models/kl_per_dimension.csv",
        images="results/models/model_check.npz",
        reconstruction=report(
            "results/models/reconstruction.csv",
            caption="../workflow/report/reconstruction.rst",
            category="Models",
        ),
    params:
        settings=analysis_json(),
    threads: 1
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        "logs/check_models.log",
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} check-models --settings {{params.settings:q}} --reference {{input.reference}} "
        "--target {input.target} --store {input.store} --cells {input.cells} --kl {output.kl} --images {output.images} "
        "--reconstruction {output.reconstruction} > {log} 2>&1"


# Embed and latent space
LATENT_DIR = "results/analysis/latent_space"


rule embed_cells:
    input:
        # the weights-only export and its card (trained, or imported from `models`), checked against the data
        checkpoint="results/models/{model}.pt",
        card="results/models/{model}.json",
        store="results/{dataset}/cells.zarr",
        cells="results/{dataset}/cells.parquet",
    output:
        embeddings="results/{dataset}/embeddings/{model}.parquet",
        dimensions="results/{dataset}/embeddings/{model}_dimensions.csv",
    wildcard_constraints:
        model="reference|target",
    params:
        settings=analysis_json(),
        # the training dataset's dimensions are ranked on its held-out cells; other datasets on all their cells
        rank_on=lambda wildcards: "test" if wildcards.dataset == vocabulary.MAIN_DATASET else "all",
    threads: paired_threads
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=3000,
        runtime=60,
    log:
        "logs/embed_cells/{dataset}_{model}.log",
    benchmark:
        "benchmarks/embed_cells/{dataset}_{model}.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} embed-cells --settings {{params.settings:q}} --checkpoint {{input.checkpoint}} "
        "--store {input.store} --cells {input.cells} --rank-on {params.rank_on} "
        "--embeddings {output.embeddings} --dimensions {output.dimensions} > {log} 2>&1"


rule correlate_latent_space:
    input:
        reference=f"results/{vocabulary.MAIN_DATASET}/embeddings/reference.parquet",
        target=f"results/{vocabulary.MAIN_DATASET}/embeddings/target.parquet",
        dimensions=f"results/{vocabulary.MAIN_DATASET}/embeddings/reference_dimensions.csv",
        cells=f"results/{vocabulary.MAIN_DATASET}/cells.parquet",
    output:
        correlations=f"{LATENT_DIR}/feature_correlations.csv",
        recovery=f"{LATENT_DIR}/measurement_recovery.csv",
        pca=f"{LATENT_DIR}/feature_pca.csv",
        dimension_correlations=f"{LATENT_DIR}/dimension_correlations.csv",
        kl=f"{LATENT_DIR}/kl_ranked.csv",
    params:
        settings=analysis_json(),
        outdir=lambda wildcards, output: os.path.dirname(output.correlations),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/correlate_latent_space.log",
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} correlate-latent-space --settings {{params.settings:q}} --reference {{input.reference}} "
        "--target {input.target} --dimensions {input.dimensions} --cells {input.cells} --outdir {params.outdir} "
        "> {log} 2>&1"


rule walk_latent_space:
    input:
        checkpoint=model_file("reference"),
        embeddings=f"results/{vocabulary.MAIN_DATASET}/embeddings/reference.parquet",
        dimensions=f"results/{vocabulary.MAIN_DATASET}/embeddings/reference_dimensions.csv",
    output:
        f"{LATENT_DIR}/walks.npz",
    params:
        settings=analysis_json(),
    threads: paired_threads
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/walk_latent_space.log",
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} walk-latent-space --settings {{params.settings:q}} --checkpoint {{input.checkpoint}} "
        "--embeddings {input.embeddings} --dimensions {input.dimensions} --output {output} > {log} 2>&1"

# Generation and features
GENERATION_DIR = "results/analysis/generation"


rule generate_cells:
    input:
        reference=model_file("reference"),
        target=model_file("target"),
        store=rules.train_reference.input.store,
        cells=rules.train_reference.input.cells,
    output:
        prior=f"{GENERATION_DIR}/prior.npz",
        test_cells=f"{GENERATION_DIR}/test_cells.npz",
        in_one_cell=f"{GENERATION_DIR}/structures_in_one_cell.npz",
        examples=f"{GENERATION_DIR}/structure_examples.npz",
        truncated=f"{GENERATION_DIR}/truncated.npz",
        localization=f"{GENERATION_DIR}/localization.csv",
        manifest=f"{GENERATION_DIR}/manifest.parquet",
    params:
        settings=analysis_json(),
        outdir=lambda wildcards, output: os.path.dirname(output.manifest),
    threads: paired_threads
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/generate_cells.log",
    benchmark:
        "benchmarks/generate_cells.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} generate-cells --settings {{params.settings:q}} --reference {{input.reference}} "
        "--target {input.target} --store {input.store} --cells {input.cells} --outdir {params.outdir} > {log} 2>&1"


rule measure_features:
    input:
        test_cells=rules.generate_cells.output.test_cells,
        prior=rules.generate_cells.output.prior,
        manifest=rules.generate_cells.output.manifest,
        store=rules.generate_cells.input.store,
    output:
        "results/analysis/features/features.parquet",
    threads: 1
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "logs/measure_features.log",
    benchmark:
        "benchmarks/measure_features.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} measure-features --test-cells {{input.test_cells}} --prior {{input.prior}} "
        "--manifest {input.manifest} --store {input.store} --output {output} > {log} 2>&1"

# Beta sweep
BETA_SWEEP_DIR = "results/analysis/beta_sweep"


use rule train_reference as train_beta_sweep with:
    output:  # what training writes, as for the main models: the weights-only export the analysis loads, and more
        checkpoint="results/beta_sweep/beta_{index}.pt",
        card="results/beta_sweep/beta_{index}.json",
        lightning="results/beta_sweep/beta_{index}.ckpt",
        metrics="results/beta_sweep/beta_{index}_metrics.csv",
    params:
        command="train-reference",
        settings=beta_sweep_training_json,
        workdir="results/beta_sweep/training",
    priority: PRIORITY["after_training"]  # not the trainings' priority, which `use rule` would inherit
    wildcard_constraints:
        index=r"\d+",
    log:
        "logs/train_beta_sweep/{index}.log",
    benchmark:
        "benchmarks/train_beta_sweep/{index}.tsv"


rule analyze_beta_sweep:
    input:
        checkpoints=beta_sweep_checkpoints,
        store=rules.train_reference.input.store,
        cells=rules.train_reference.input.cells,
    output:
        rate_distortion=f"{BETA_SWEEP_DIR}/rate_distortion.csv",
        kl=f"{BETA_SWEEP_DIR}/kl_per_dimension.csv",
        regression=f"{BETA_SWEEP_DIR}/regression.csv",
        feature_pcs=f"{BETA_SWEEP_DIR}/feature_pcs.csv",
        features=f"{BETA_SWEEP_DIR}/features.parquet",
        generated=f"{BETA_SWEEP_DIR}/generated.npz",
        generated_features=f"{BETA_SWEEP_DIR}/generated_features.parquet",
    params:
        settings=analysis_json(),
        sweep=section_json("beta_sweep"),
    threads: paired_threads
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/analyze_beta_sweep.log",
    benchmark:
        "benchmarks/analyze_beta_sweep.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} analyze-beta-sweep --settings {{params.settings:q}} --sweep-settings {{params.sweep:q}} "
        "--checkpoints {input.checkpoints} --store {input.store} --cells {input.cells} "
        "--rate-distortion {output.rate_distortion} --kl {output.kl} --regression {output.regression} "
        "--feature-pcs {output.feature_pcs} --features {output.features} --generated {output.generated} "
        "--generated-features {output.generated_features} > {log} 2>&1"

# Coupling
COUPLING_DIR = "results/analysis/coupling"


rule measure_coupling:
    input:
        model=model_file("target"),
        store=rules.train_target.input.store,
        cells=rules.train_target.input.cells,
    output:
        cells=f"{COUPLING_DIR}/cells.parquet",
        structures=f"{COUPLING_DIR}/structures.csv",
        mitosis=f"{COUPLING_DIR}/mitosis_test.csv",
        calibration=f"{COUPLING_DIR}/calibration.csv",
    params:
        settings=analysis_json(),
    threads: paired_threads
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=3000,
        runtime=120,
    log:
        "logs/measure_coupling.log",
    benchmark:
        "benchmarks/measure_coupling.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} measure-coupling --settings {{params.settings:q}} --model {{input.model}} "
        "--store {input.store} --cells {input.cells} --output-cells {output.cells} "
        "--output-structures {output.structures} --output-mitosis {output.mitosis} "
        "--output-calibration {output.calibration} > {log} 2>&1"

# Perturbation
PERTURBATION_DIR = "results/analysis/perturbation"


rule drug_shifts:
    input:
        target=drug_embeddings("target"),
        reference=drug_embeddings("reference"),
        target_dimensions=model_dimensions("target"),
        reference_dimensions=model_dimensions("reference"),
        cells=f"results/{vocabulary.DRUG_DATASET}/cells.parquet",
    output:
        f"{PERTURBATION_DIR}/shifts.csv",
    params:
        settings=analysis_json(),  # with active_kl_nats and control_treatment
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        "logs/drug_shifts.log",
    benchmark:
        "benchmarks/drug_shifts.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} drug-shifts --settings {{params.settings:q}} "
        "--target-embeddings {input.target} --reference-embeddings {input.reference} "
        "--target-dimensions {input.target_dimensions} --reference-dimensions {input.reference_dimensions} "
        "--cells {input.cells} --output {output} > {log} 2>&1"


rule drug_trajectory:
    input:
        embeddings=rules.drug_shifts.input.target,
        dimensions=rules.drug_shifts.input.target_dimensions,
        cells=rules.drug_shifts.input.cells,
        store=f"results/{vocabulary.DRUG_DATASET}/cells.zarr",
    output:
        table=f"{PERTURBATION_DIR}/trajectory.csv",
        images=f"{PERTURBATION_DIR}/trajectory.npz",
    params:
        settings=analysis_json(),  # with trajectory_steps, active_kl_nats and control_treatment
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/drug_trajectory.log",
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} drug-trajectory --settings {{params.settings:q}} "
        "--embeddings {input.embeddings} --dimensions {input.dimensions} --cells {input.cells} "
        "--store {input.store} --output {output.table} --images {output.images} > {log} 2>&1"


rule check_ground_truth:
    input:
        coupling=rules.measure_coupling.output.structures,
        measurements=rules.correlate_latent_space.output.recovery,
        shifts=drug_shift_table,
    output:
        report(
            "results/analysis/ground_truth_recovery.csv",
            caption="../workflow/report/ground_truth_recovery.rst",
            category="Ground truth",
        ),
    params:
        settings=analysis_json(),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/check_ground_truth.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} check-ground-truth --settings {{params.settings:q}} --coupling {{input.coupling}} "
        "--measurements {input.measurements} --shifts {input.shifts} --output {output} > {log} 2>&1"
