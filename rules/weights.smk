# Pretrained weight files (evaluation networks; training losses and initialisations), fetched
# into the cache and verified (sha256 from config `weights:` over the package's table) on the
# machine running Snakemake: a local rule, so compute nodes without internet find them there.


rule weights:
    output:
        f"{CACHE}/weights/verified/{{weight}}.json",
    log:
        res("logs/weights/{weight}.log"),
    wildcard_constraints:
        weight=alternatives(WEIGHTS),
    localrule: True
    conda:
        "../envs/eval.yaml"
    params:
        cache=lambda wildcards, output: Path(output[0]).parents[2],
        pins=WEIGHT_PINS,
    shell:
        "ANIMBENCH_CACHE={params.cache:q} animbench weights fetch {wildcards.weight}"
        " --weight-pins {params.pins:q} --stamp {output:q} > {log:q} 2>&1"
