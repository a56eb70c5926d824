"""Figures of the report: drawn from the tables and images of the earlier stages."""


rule plot_model_check:
    input:
        reference=rules.train_reference.output.checkpoint,
        target=rules.train_target.output.checkpoint,
        store=rules.train_reference.input.store,
        cells=rules.train_reference.input.cells,
    output:
        figure=report(
            "results/figures/model_check.png",
            caption="../workflow/report/model_check.rst",
            category="Models",
        ),
        kl="results/models/kl_per_dimension.csv",
    log:
        "logs/plot_model_check.log",
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} plot-model-check --reference {{input.reference}} --target {{input.target}} "
        "--store {input.store} --cells {input.cells} --output {output.figure} --kl {output.kl} > {log} 2>&1"


rule plot_colony_overview:
    input:
        manifests=input_manifests,
    output:
        report(
            "results/figures/colony_overview.png",
            caption="../workflow/report/colony_overview.rst",
            category="Input data",
        ),
    log:
        "logs/plot_colony_overview.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-colony-overview {{input.manifests}} --output {{output}} > {{log}} 2>&1"


# --- embed and latent space figures ---
# --- end embed and latent space figures ---

# --- generation and features figures ---
# --- end generation and features figures ---

# --- beta sweep figures ---
# --- end beta sweep figures ---

# --- coupling figures ---
rule plot_coupling_cells:
    input:
        table=rules.measure_coupling.output.cells,
    output:
        figure=report(
            "results/figures/coupling_cells.png",
            caption="../workflow/report/coupling_cells.rst",
            category="Coupling",
        ),
        svg="results/figures/coupling_cells.svg",
    params:
        command="plot-coupling-cells",
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
        f"{STATCELL} {{params.command}} --settings {{params.settings:q}} --table {{input.table}} "
        "--output {output.figure} > {log} 2>&1"


use rule plot_coupling_cells as plot_coupling_structures with:
    input:
        table=rules.measure_coupling.output.structures,
    output:
        figure=report(
            "results/figures/coupling_structures.png",
            caption="../workflow/report/coupling_structures.rst",
            category="Coupling",
        ),
        svg="results/figures/coupling_structures.svg",
    params:
        command="plot-coupling-structures",
        settings=figure_settings("coupling_structures"),
    log:
        "logs/plot_coupling_structures.log",
# --- end coupling figures ---

# --- perturbation figures ---
# --- end perturbation figures ---
