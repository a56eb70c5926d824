# Using the trained Statistical Cell: every structure predicted in chosen cells (statcell.analysis.prediction),
# control cells moved along each drug's latent shift (statcell.analysis.in_silico), and
# surface meshes for simulators of real test cells, their reconstructions, cells from the prior and the latent walks'
# representative cells (statcell.analysis.meshes).
PREDICT_DIR = "results/predictions"


rule predict_cells:
    input:
        reference=model_file("reference"),
        target=model_file("target"),
        store=f"results/{predict_dataset()}/cells.zarr",
        cells=f"results/{predict_dataset()}/cells.parquet",
    output:
        cells=directory(f"{PREDICT_DIR}/cells"),
        table=f"{PREDICT_DIR}/predictions.csv",
        images=f"{PREDICT_DIR}/predictions.npz",
    params:
        settings=section_json("predict"),
        analysis=analysis_json(),
        outdir=lambda wildcards, output: os.path.dirname(output.table),
    threads: paired_threads
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=3000,
        runtime=30,
    log:
        "logs/predict_cells.log",
    benchmark:
        "benchmarks/predict_cells.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} predict-cells --settings {{params.settings:q}} --analysis-settings {{params.analysis:q}} "
        "--reference {input.reference} --target {input.target} --store {input.store} --cells {input.cells} "
        "--outdir {params.outdir} > {log} 2>&1"



rule perturb_cells:
    input:
        target=model_file("target"),
        embeddings=drug_embeddings("target"),
        dimensions=model_dimensions("target"),
        cells=f"results/{vocabulary.DRUG_DATASET}/cells.parquet",
        store=f"results/{vocabulary.DRUG_DATASET}/cells.zarr",
    output:
        features="results/analysis/in_silico/features.csv",
        summary=report(
            "results/analysis/in_silico/summary.csv",
            caption="../workflow/report/in_silico_summary.rst",
            category="Drug perturbations",
        ),
        images="results/analysis/in_silico/steps.npz",
    params:
        settings=section_json("in_silico"),
        analysis=analysis_json(),  # with active_kl_nats and control_treatment
    threads: paired_threads
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=3000,
        runtime=30,
    log:
        "logs/perturb_cells.log",
    benchmark:
        "benchmarks/perturb_cells.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        f"{STATCELL} perturb-cells --settings {{params.settings:q}} --analysis-settings {{params.analysis:q}} "
        "--target {input.target} --embeddings {input.embeddings} --dimensions {input.dimensions} "
        "--cells {input.cells} --store {input.store} --features {output.features} --summary {output.summary} "
        "--images {output.images} > {log} 2>&1"


rule export_meshes:
    input:
        store=rules.train_reference.input.store,
        cells=rules.train_reference.input.cells,
        test_cells=rules.generate_cells.output.test_cells,
        prior=rules.generate_cells.output.prior,
        manifest=rules.generate_cells.output.manifest,
        walks=rules.walk_latent_space.output[0],
    output:
        quality=report(
            "results/meshes/quality.csv",
            caption="../workflow/report/mesh_quality.rst",
            category="Meshes",
        ),
        angles="results/meshes/triangle_angles.csv",
    params:
        settings=section_json("meshes"),
    threads: 1
    priority: PRIORITY["after_training"]
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        "logs/export_meshes.log",
    benchmark:
        "benchmarks/export_meshes.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        f"{STATCELL} export-meshes --settings {{params.settings:q}} --store {{input.store}} --cells {{input.cells}} "
        "--test-cells {input.test_cells} --prior {input.prior} --manifest {input.manifest} --walks {input.walks} "
        "--quality {output.quality} --angles {output.angles} > {log} 2>&1"
