# lead: LEAD distillation for dense retrieval, from data to a results table.
#
#   data -> tokenization (teacher and student separately) -> negatives -> warm-ups
#   -> [teacher layer cache] -> distillation (methods x variants x seeds) -> encoding
#   -> retrieval -> scoring (every collection) -> report
#
# Run: snakemake [--configfile config/msmarco-passage.yaml] [--config key=value ...]
# Without --configfile the embedded default is loaded and --config values go on top of it;
# with one or more --configfile the run uses those files only (merged in order).
from snakemake.utils import min_version

from lead import config as lead_config

min_version("9.0")


# The description at the top of `snakemake --report report.html`.
report: "workflow/report/workflow.rst"


if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/default.yaml"


# A config file's `extends` (the files it is layered on) go underneath it.
lead_config.bases_underneath(
    config, workflow.overwrite_configfiles, workflow.config_settings.config
)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/negatives.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        report=f"{RESULTS}/report.md",
