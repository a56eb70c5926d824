"""Stage 1: nuclei and cells of each field of view (one job per FOV)."""


rule segment_fov:
    input:
        image=raw_image,
    output:
        "results/{dataset}/segmentation/{fov}.ome.tiff",
    params:
        record=fov_record_json,
        settings=section_json("segmentation"),
    resources:
        mem_mb=3000,
        runtime=20,
    log:
        "logs/segment_fov/{dataset}/{fov}.log",
    benchmark:
        "benchmarks/segment_fov/{dataset}/{fov}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        f"{STATCELL} segment-fov --fov-record {{params.record:q}} --settings {{params.settings:q}} "
        "--output {output} > {log} 2>&1"
