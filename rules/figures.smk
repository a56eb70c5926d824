"""Figures of the report: drawn from the tables and images of the earlier stages."""


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
