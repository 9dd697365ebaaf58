# animbench: datasets -> train -> reconstruct -> metrics -> Parquet tables -> report.html.
#   snakemake --cores N                          full paper reproduction (config.yaml)
#   snakemake --cores N tables                   every paper table (paper_tables too)
#   snakemake --profile profiles/ci              the small synthetic benchmark CI re-runs
#   snakemake --profile profiles/slurm           on a SLURM cluster
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.1")


configfile: "config.yaml"


# The package lives in workflow/animbench (never `import workflow`: it shadows Snakemake's global).
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from animbench.config import validate_config
from animbench.errors import ConfigError

try:
    _validated = validate_config(config)
except ConfigError as exc:
    sys.exit(f"animbench: {exc}")
config.clear()
config.update(_validated)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/reconstruct.smk"
include: "rules/submissions.smk"
include: "rules/weights.smk"
include: "rules/pose.smk"
include: "rules/metrics.smk"
include: "rules/seeds.smk"
include: "rules/tables.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        table1=res("table1.parquet"),
        table2=res("table2.parquet"),
        pairs=res("pairs.parquet"),
        report=res("report.html"),


# Every table of the seed papers: MTIA Tables 1 and 2 and each paper_tables entry (MTIA 4-6,
# FOMM 1 and 3, CPAB 1 and 2). Named, not the default: its ablations train many more models.
rule tables:
    input:
        table1=res("table1.parquet"),
        table2=res("table2.parquet"),
        paper_tables=expand(res("{table}.parquet"), table=PAPER_TABLES),
