# Video reconstruction of every test clip (source = frame 0, absolute motion). The whole folder
# is the output: a rerun starts from an empty folder, so no stale clips survive; frames.parquet
# is written last inside it. Baselines (source-copy) have no checkpoint.


rule reconstruct:
    input:
        unpack(reconstruct_inputs),
    output:
        directory(res("reconstruction/{dataset}/{method}")),
    log:
        res("logs/reconstruct/{dataset}/{method}.log"),
    benchmark:
        res("benchmarks/reconstruct/{dataset}/{method}.tsv")
    conda:
        "../envs/animbench.yaml"
    threads: job_resource("reconstruct", "threads")
    resources:
        gpu=job_resource("reconstruct", "gpu"),
        mem_mb=job_resource("reconstruct", "mem_mb"),
        runtime=job_resource("reconstruct", "runtime"),
    params:
        data=res("data/{dataset}/clips"),
        checkpoint=checkpoint_arg,
        device=config["device"],
        cache=CACHE,
        pins=WEIGHT_PINS,
        quantisation=config["reconstruction"]["quantisation"],
    shell:
        "ANIMBENCH_CACHE={params.cache:q} animbench reconstruct --threads {threads} --data {params.data:q} --method {wildcards.method}"
        " {params.checkpoint} --out {output:q} --device {params.device}"
        " --quantisation {params.quantisation} --weight-pins {params.pins:q} > {log:q} 2>&1"
