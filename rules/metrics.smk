# Per-video metrics of one reconstruction: L1 always, AKD/MKR with a keypoint detector, AED with
# an identity embedder (the backends are named per dataset in config).


rule metrics:
    input:
        gt=dataset_clips,
        pred=res("reconstruction/{dataset}/{method}"),
        pose_env=pose_env_input,
        weights=dataset_weights,
    output:
        res("metrics/{dataset}/{method}.parquet"),
    log:
        res("logs/metrics/{dataset}/{method}.log"),
    benchmark:
        res("benchmarks/metrics/{dataset}/{method}.tsv")
    conda:
        "../envs/animbench.yaml"
    threads: job_resource("metrics", "threads")
    resources:
        gpu=job_resource("metrics", "gpu"),
        mem_mb=job_resource("metrics", "mem_mb"),
        runtime=job_resource("metrics", "runtime"),
    params:
        gt=res("data/{dataset}/clips/test"),
        keypoints=dataset_value("keypoints"),
        identity=dataset_value("identity"),
        mkr=mkr_flag,
        cache=CACHE,
        pins=WEIGHT_PINS,
    shell:
        "ANIMBENCH_CACHE={params.cache:q} animbench metrics --threads {threads} --gt {params.gt:q} --pred {input.pred:q}"
        " --keypoints {params.keypoints} --identity {params.identity} {params.mkr}"
        " --dataset {wildcards.dataset} --method {wildcards.method} --out {output:q}"
        " --weight-pins {params.pins:q} > {log:q} 2>&1"
