"""Pre-cropped single cells of the Allen Institute's datasets (data.source `allencell`; allencell.layout `pipeline4` or
`hipsc_single_cell`, declared in statcell.allencell.LAYOUTS): one job per `allencell.chunk_size` cells of the CSV;
they join at normalization."""


rule import_allencell:
    input:
        csv=lambda wildcards: config["allencell"]["csv"],
    output:
        crops="results/{dataset}/allencell/{chunk}.npz",
        table="results/{dataset}/allencell/{chunk}.parquet",
    params:
        settings=section_json("allencell"),
        crop_settings=section_json("crop"),
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "logs/import_allencell/{dataset}/{chunk}.log",
    benchmark:
        "benchmarks/import_allencell/{dataset}/{chunk}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        f"{STATCELL} import-allencell --settings {{params.settings:q}} --crop-settings {{params.crop_settings:q}} "
        "--chunk {wildcards.chunk} --crops {output.crops} --table {output.table} > {log} 2>&1"
