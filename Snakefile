"""statcell: the Statistical Cell workflow, from raw 3D fields of view to the paper's figure book.

Run `snakemake` for the embedded synthetic colony; see README.md for real data and clusters.
"""

from snakemake.utils import min_version

from statcell.config import check_workflow_config, validate_config

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# One schema for every key (workflow/schemas/config.schema.yaml): defaults filled in, a bad key or value stops the
# run here, before any job, with a message naming the key.
config.update(validate_config(config))
check_workflow_config(config)


include: "rules/common.smk"
include: "rules/synth.smk"
include: "rules/preprocess.smk"
include: "rules/allencell.smk"
include: "rules/normalize.smk"
include: "rules/train.smk"
include: "rules/analyze.smk"
include: "rules/use.smk"
include: "rules/figures.smk"
include: "rules/explorer.smk"


# Every structure of the datasets the target model embeds must be one it has a label for: checked here, not at the
# embedding job after all of their preprocessing.
check_embedded_structures()


rule all:
    input:
        final_targets(),
    default_target: True
