# Pretrained weight files (evaluation networks; training losses and initialisations), fetched
# into the cache and verified (sha256 from config `weights:` over the package's table) on the
# machine running Snakemake: a local rule, so compute nodes without internet find them there.
#
# Every job on a compute node (the SLURM profile's and any other remote executor's) runs with
# downloads switched off: the job's own Snakemake process sets ANIMBENCH_OFFLINE=1 here, and the
# job's commands inherit it, so a file the local rules did not fetch stops the job at once with
# its URL named (animbench.downloads) instead of hanging on a node without internet. Export
# ANIMBENCH_OFFLINE=0 before starting Snakemake to let jobs download (sbatch --export=ALL).
import os

if workflow.remote_exec:
    os.environ.setdefault("ANIMBENCH_OFFLINE", "1")


rule weights:
    output:
        f"{CACHE}/weights/verified/{{weight}}.json",
    log:
        res("logs/weights/{weight}.log"),
    wildcard_constraints:
        weight=alternatives(WEIGHTS),
    localrule: True
    conda:
        "../envs/animbench.yaml"
    params:
        cache=lambda wildcards, output: Path(output[0]).parents[2],
        pins=WEIGHT_PINS,
    shell:
        "ANIMBENCH_CACHE={params.cache:q} animbench weights fetch {wildcards.weight}"
        " --weight-pins {params.pins:q} --stamp {output:q} > {log:q} 2>&1"
