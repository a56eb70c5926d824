"""Stage 5: analyses of the trained models. Every analysis writes tables; rules/figures.smk draws from them."""

# Each analysis keeps to its own block below.

# --- embed and latent space ---
# --- end embed and latent space ---

# --- generation and features ---
# --- end generation and features ---

# --- beta sweep ---
# --- end beta sweep ---

# --- coupling ---
COUPLING_DIR = "results/analysis/coupling"


rule measure_coupling:
    input:
        model=rules.train_target.output.checkpoint,
        store=rules.train_target.input.store,
        cells=rules.train_target.input.cells,
    output:
        cells=f"{COUPLING_DIR}/cells.parquet",
        structures=f"{COUPLING_DIR}/structures.csv",
        mitosis=f"{COUPLING_DIR}/mitosis_test.csv",
    params:
        settings=analysis_json(),
    threads: 2
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
        "--output-structures {output.structures} --output-mitosis {output.mitosis} > {log} 2>&1"
# --- end coupling ---

# --- perturbation ---
# --- end perturbation ---
GENERATION_DIR = "results/analysis/generation"


rule generate_cells:
    input:
        reference=rules.train_reference.output.checkpoint,
        target=rules.train_target.output.checkpoint,
        store=rules.train_reference.input.store,
        cells=rules.train_reference.input.cells,
    output:
        prior=f"{GENERATION_DIR}/prior.npz",
        test_cells=f"{GENERATION_DIR}/test_cells.npz",
        in_one_cell=f"{GENERATION_DIR}/structures_in_one_cell.npz",
        examples=f"{GENERATION_DIR}/structure_examples.npz",
        manifest=f"{GENERATION_DIR}/manifest.parquet",
    params:
        settings=analysis_json(),
        outdir=GENERATION_DIR,
    threads: 2
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
