"""The explorer of the cells: per dataset, small thumbnails of every cell, then one self-contained HTML page."""


rule make_thumbnails:
    input:
        store="results/{dataset}/cells.zarr",
        cells="results/{dataset}/cells.parquet",
    output:
        "results/{dataset}/thumbnails.parquet",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "logs/make_thumbnails/{dataset}.log",
    benchmark:
        "benchmarks/make_thumbnails/{dataset}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        f"{STATCELL} make-thumbnails --store {{input.store}} --cells {{input.cells}} --output {{output}} "
        "> {log} 2>&1"


rule plot_explorer:
    input:
        cells="results/{dataset}/cells.parquet",
        embeddings=expand("results/{{dataset}}/embeddings/{model}.parquet", model=["reference", "target"]),
        thumbnails=rules.make_thumbnails.output[0],
    output:
        report(
            "results/figures/explorer/{dataset}.html",
            caption="../workflow/report/explorer.rst",
            category="Explorer of the cells",
        ),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        "logs/plot_explorer/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    shell:
        f"{STATCELL} plot-explorer --cells {{input.cells}} --embeddings {{input.embeddings}} "
        "--thumbnails {input.thumbnails} --title 'Statistical Cell: cells of the {wildcards.dataset} dataset' "
        "--output {output} > {log} 2>&1"


rule screenshot_explorer:
    input:
        rules.plot_explorer.output[0],
    output:
        report(
            "results/figures/explorer/{dataset}.png",
            caption="../workflow/report/explorer_screenshot.rst",
            category="Explorer of the cells",
        ),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/screenshot_explorer/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    shell:
        # The browser is the machine's own (no conda package has one): figures.explorer.screenshot says when to ask.
        f"{STATCELL} screenshot-explorer --page {{input}} --output {{output}} > {{log}} 2>&1"
