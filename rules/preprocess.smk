"""Stages 1 and 2: each field of view's nuclei and cells, then its cells' quality control, crops and measurements.

One job per FOV does both, so that the imaging stack is imported and the FOV read once (`bench/bench_preprocess.py`
times the two stages as one process against two). A change to `segmentation` or `crop` reruns the FOV's job.
"""


rule preprocess_fov:
    input:
        image=raw_image,
        truth=truth_labels,
    output:
        labels="results/{dataset}/segmentation/{fov}.ome.tiff",
        crops="results/{dataset}/crops/{fov}.npz",
        table="results/{dataset}/crops/{fov}.parquet",
    params:
        record=fov_record_json,
        segmentation=section_json("segmentation"),
        crop=section_json("crop"),
        truth=lambda wildcards, input: f"--truth-labels {input.truth}" if input.truth else "",
    resources:
        mem_mb=3000,
        runtime=30,
    log:
        "logs/preprocess_fov/{dataset}/{fov}.log",
    benchmark:
        "benchmarks/preprocess_fov/{dataset}/{fov}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        f"{STATCELL} preprocess-fov --fov-record {{params.record:q}} --settings {{params.segmentation:q}} "
        "--crop-settings {params.crop:q} {params.truth} --labels {output.labels} --crops {output.crops} "
        "--table {output.table} > {log} 2>&1"
