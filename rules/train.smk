"""Stage 4: the reference and target β-VAEs, trained independently (so both may run at once)."""


rule train_reference:
    input:
        store=f"results/{synth.MAIN_DATASET}/cells.zarr",
        cells=f"results/{synth.MAIN_DATASET}/cells.parquet",
    output:
        checkpoint="results/models/reference.ckpt",
        metrics="results/models/reference_metrics.csv",
    params:
        command="train-reference",
        settings=training_json("reference"),
        workdir="results/models/training",
    threads: 2
    resources:
        mem_mb=6000,
        runtime=600,
        gpu=0 if config["training"]["accelerator"] == "cpu" else config["training"]["devices"],
    log:
        "logs/train_reference.log",
    benchmark:
        "benchmarks/train_reference.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} {{params.command}} --settings {{params.settings:q}} --store {{input.store}} "
        "--cells {input.cells} "
        "--checkpoint {output.checkpoint} --metrics {output.metrics} --workdir {params.workdir} > {log} 2>&1"


use rule train_reference as train_target with:
    output:
        checkpoint="results/models/target.ckpt",
        metrics="results/models/target_metrics.csv",
    params:
        command="train-target",
        settings=training_json("target"),
        workdir="results/models/training",
    log:
        "logs/train_target.log",
    benchmark:
        "benchmarks/train_target.tsv"
