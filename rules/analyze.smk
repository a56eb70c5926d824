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
