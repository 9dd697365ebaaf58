# animbench: datasets -> train -> reconstruct -> metrics -> Parquet tables.
#   snakemake --cores N                          full paper reproduction (config.yaml)
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
include: "rules/metrics.smk"
include: "rules/tables.smk"


rule all:
    default_target: True
    input:
        table1=res("table1.parquet"),
        table2=res("table2.parquet"),
