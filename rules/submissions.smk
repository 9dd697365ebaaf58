# Predictions made elsewhere (config `submissions:`), put in the reconstruction layout: the
# folder is validated against the test split (missing/extra clips, frame counts and sizes,
# lossy formats warned) and its PNG clips, per-frame L1 and content digest written where
# `reconstruct` writes; the metrics rule then scores it like any method.


rule submission:
    input:
        gt=dataset_clips,
        predictions=submission_predictions,
        weights=lpips_weights,
    output:
        directory(res("reconstruction/{dataset}/{method}")),
    log:
        res("logs/submission/{dataset}/{method}.log"),
    wildcard_constraints:
        method=alternatives(SUBMISSIONS),
    conda:
        "../envs/animbench.yaml"
    threads: job_resource("reconstruct", "threads")
    resources:
        gpu=job_resource("reconstruct", "gpu"),
        mem_mb=job_resource("reconstruct", "mem_mb"),
        runtime=job_resource("reconstruct", "runtime"),
    params:
        gt=res("data/{dataset}/clips/test"),
        device=config["device"],
        cache=CACHE,
        pins=WEIGHT_PINS,
    shell:
        "ANIMBENCH_CACHE={params.cache:q} animbench submission --threads {threads} --gt {params.gt:q}"
        " --pred {input.predictions:q} --method {wildcards.method} --out {output:q}"
        " --device {params.device} --weight-pins {params.pins:q} > {log:q} 2>&1"


ruleorder: submission > reconstruct
