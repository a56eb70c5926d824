# Surface meshes for simulators: real test cells, their reconstructions, cells from the prior and the latent walks'
# representative cells (statcell.analysis.meshes).


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
