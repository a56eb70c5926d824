"""Stage 4: the reference and target β-VAEs, trained independently (so both may run at once), or imported.

Each trained model is written three ways: `{model}.ckpt` (Lightning, for resuming and Lightning tools), and the
weights-only export every analysis loads, `{model}.pt` (tensors only) with its card `{model}.json`. A model named in
`models.<kind>` is imported instead (checked, loaded without executing pickles, copied as tensors): its training rule
is then never scheduled.
"""


rule train_reference:
    input:
        store=f"results/{vocabulary.MAIN_DATASET}/cells.zarr",
        cells=f"results/{vocabulary.MAIN_DATASET}/cells.parquet",
    output:
        checkpoint="results/models/reference.pt",
        card="results/models/reference.json",
        lightning="results/models/reference.ckpt",
        metrics="results/models/reference_metrics.csv",
    params:
        command="train-reference",
        settings=training_json("reference"),
        workdir="results/models/training",
    threads: paired_threads
    priority: PRIORITY["training"]
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
        checkpoint="results/models/target.pt",
        card="results/models/target.json",
        lightning="results/models/target.ckpt",
        metrics="results/models/target_metrics.csv",
    params:
        command="train-target",
        settings=training_json("target"),
        workdir="results/models/training",
    log:
        "logs/train_target.log",
    benchmark:
        "benchmarks/train_target.tsv"


if given_models():
    # imported only here: statcell.train imports torch, 2-4 s that every other parse of the workflow would pay
    from statcell import train

    # a model that cannot serve this run's crops stops it here, before any job, naming the key and what differs
    for _kind in given_models():
        train.check_given_model(config["models"][_kind], kind=_kind, crop=config["crop"])

    rule import_model:
        input:
            weights=lambda wildcards: config["models"][wildcards.model],
            card=lambda wildcards: str(Path(config["models"][wildcards.model]).with_suffix(".json")),
            store=rules.train_reference.input.store,
            cells=rules.train_reference.input.cells,
        output:
            checkpoint="results/models/{model}.pt",
            card="results/models/{model}.json",
        wildcard_constraints:
            model="|".join(given_models()),
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        log:
            "logs/import_model/{model}.log",
        conda:
            "../envs/torch.yaml"
        shell:
            f"{STATCELL} import-model --kind {{wildcards.model}} --weights {{input.weights}} --store {{input.store}} "
            "--cells {input.cells} --output {output.checkpoint} > {log} 2>&1"

    # A given model takes the place of training: results/models/{model}.pt is import_model's, not the training rule's.
    ruleorder: import_model > train_reference
    ruleorder: import_model > train_target
