"""Stages 1 and 2: each field of view's nuclei and cells, then its cells' quality control, crops and measurements.

One job segments and crops a group of `data.fovs_per_job` FOVs in turn (`fov_groups`), so that the imaging stack is
imported once per group and each FOV read once (`bench/bench_preprocess.py` times one process per FOV against one for
several). Each group is a rule of its own, `preprocess_fovs_<dataset>_<group>`, so that every FOV keeps its own output
files (FOV_OUTPUTS); `set-resources` for `preprocess_fovs` reaches them all. A change to `segmentation` or `crop` reruns
every group; a changed FOV, its group.
"""


for preprocessed_dataset in preprocessed_datasets():
    for group_index, group_fovs in enumerate(fov_groups(preprocessed_dataset)):

        rule:
            name:
                f"preprocess_fovs_{preprocessed_dataset}_{group_index:03d}"
            input:
                images=[path for fov in group_fovs for path in raw_image(preprocessed_dataset, fov)],
                truth=[path for fov in group_fovs for path in truth_labels(preprocessed_dataset, fov)],
            output:
                **{kind: [fov_output(kind, preprocessed_dataset, fov) for fov in group_fovs] for kind in FOV_OUTPUTS},
            params:
                fovs=preprocess_arguments(preprocessed_dataset, group_fovs),
                segmentation=section_json("segmentation"),
                crop=section_json("crop"),
            resources:
                **stage_resources("preprocess_fovs", mem_mb=3000, runtime=30 * len(group_fovs)),
            log:
                f"logs/preprocess_fovs/{preprocessed_dataset}/{group_index:03d}.log",
            benchmark:
                f"benchmarks/preprocess_fovs/{preprocessed_dataset}/{group_index:03d}.tsv"
            conda:
                "../envs/imaging.yaml"
            shell:
                f"{STATCELL} preprocess-fov {{params.fovs}} --settings {{params.segmentation:q}} "
                "--crop-settings {params.crop:q} > {log} 2>&1"
