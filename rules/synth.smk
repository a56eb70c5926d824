"""Stage 0: the embedded synthetic hiPSC colony (used when data.source is `synthetic`)."""


rule synthesize:
    output:
        manifests=expand(f"{SYNTHETIC_DIR}/{{dataset}}_manifest.csv", dataset=DATASETS),
        ground_truth=f"{SYNTHETIC_DIR}/ground_truth/cells.parquet",
        images=expand(f"{SYNTHETIC_DIR}/raw/{{fov}}.ome.tiff", fov=synthetic_fov_ids()),
        labels=expand(f"{SYNTHETIC_DIR}/ground_truth/{{fov}}_labels.ome.tiff", fov=synthetic_fov_ids()),
    params:
        settings=section_json("synthetic"),
        outdir=lambda wildcards, output: Path(output.ground_truth).parent.parent,
    threads: 4
    resources:
        mem_mb=lambda wildcards, threads: 1000 + 1200 * threads,
        runtime=30,
    log:
        "logs/synthesize.log",
    benchmark:
        "benchmarks/synthesize.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        f"{STATCELL} synthesize --settings {{params.settings:q}} --outdir {{params.outdir}} --threads {{threads}} "
        "> {log} 2>&1"
