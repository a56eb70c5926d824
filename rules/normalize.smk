"""Stage 3: every crop of a dataset normalized into one chunked Zarr store, with the per-cell table."""


rule normalize_cells:
    input:
        crops=dataset_crops,
        tables=dataset_tables,
        annotations=ground_truth_table,
        cell_annotations=cell_annotations,
    output:
        store=directory("results/{dataset}/cells.zarr"),
        cells="results/{dataset}/cells.parquet",
        rejects="results/{dataset}/rejects.parquet",
    params:
        settings=section_json("normalize"),
        voxel_um=config["crop"]["voxel_size_um"],
        annotations=lambda wildcards, input: f"--annotations {input.annotations}" if input.annotations else "",
        cell_annotations=lambda wildcards, input: (f"--cell-annotations {input.cell_annotations}"
                                                   if input.cell_annotations else ""),
        controls=control_options,
    threads: 2
    priority: PRIORITY["store"]
    resources:
        mem_mb=lambda wildcards, threads: 1000 + 500 * threads,
        runtime=30,
    log:
        "logs/normalize_cells/{dataset}.log",
    benchmark:
        "benchmarks/normalize_cells/{dataset}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        f"{STATCELL} normalize-cells --crops {{input.crops}} --tables {{input.tables}} --dataset {{wildcards.dataset}} "
        "--voxel-um {params.voxel_um} {params.annotations} {params.cell_annotations} {params.controls} "
        "--settings {params.settings:q} "
        "--store {output.store} "
        "--cells {output.cells} --rejects {output.rejects} --threads {threads} > {log} 2>&1"
