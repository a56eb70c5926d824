"""Stage 2: quality control, single-cell crops and measurements (one job per FOV)."""


rule crop_cells:
    input:
        image=raw_image,
        labels=rules.segment_fov.output[0],
        truth=truth_labels,
    output:
        crops="results/{dataset}/crops/{fov}.npz",
        table="results/{dataset}/crops/{fov}.parquet",
    params:
        record=fov_record_json,
        settings=section_json("crop"),
        truth=lambda wildcards, input: f"--truth-labels {input.truth}" if input.truth else "",
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        "logs/crop_cells/{dataset}/{fov}.log",
    benchmark:
        "benchmarks/crop_cells/{dataset}/{fov}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        f"{STATCELL} crop-cells --fov-record {{params.record:q}} --settings {{params.settings:q}} "
        "--labels {input.labels} {params.truth} --crops {output.crops} --table {output.table} > {log} 2>&1"
