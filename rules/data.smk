# Datasets: pinned metadata -> download -> crop (real sources), or render (synthetic).
# Every dataset root is results/data/<dataset>/clips/{train,test}/<clip>/ (frame folders).
# Downloads (raw/) and clips (clips/) of real datasets are not declared outputs: they take days,
# so Snakemake must never delete them; the small tables written last are the outputs.


rule metadata:
    output:
        res("data/{dataset}/{pinned_file}"),
    log:
        res("logs/metadata/{dataset}/{pinned_file}.log"),
    wildcard_constraints:
        dataset=alternatives(REAL_DATASETS),
        pinned_file=alternatives(PINNED_FILES),
    retries: 2
    localrule: True
    conda:
        "../envs/animbench.yaml"
    threads: rule_resource("metadata", "threads")
    resources:
        downloads=1,
        mem_mb=rule_resource("metadata", "mem_mb"),
        runtime=rule_resource("metadata", "runtime"),
    params:
        spec=pinned_spec,
    shell:
        "animbench data metadata --dataset {wildcards.dataset} --spec {params.spec:q}"
        " --out {output:q} > {log:q} 2>&1"


rule download:
    input:
        unpack(download_inputs),
    output:
        availability=res("data/{dataset}/availability.parquet"),
    log:
        res("logs/download/{dataset}.log"),
    benchmark:
        res("benchmarks/download/{dataset}.tsv")
    wildcard_constraints:
        dataset=alternatives(REAL_DATASETS),
    retries: 2
    localrule: True
    conda:
        "../envs/animbench.yaml"
    threads: rule_resource("download", "threads")
    resources:
        downloads=1,
        mem_mb=rule_resource("download", "mem_mb"),
        runtime=rule_resource("download", "runtime"),
    params:
        spec=dataset_spec,
        inputs=input_args,
    shell:
        "animbench data download --threads {threads} --dataset {wildcards.dataset}"
        " --spec {params.spec:q} {params.inputs} --out {output.availability:q} > {log:q} 2>&1"


rule crop:
    input:
        unpack(crop_inputs),
    output:
        index=res("data/{dataset}/clips.parquet"),
    log:
        res("logs/crop/{dataset}.log"),
    benchmark:
        res("benchmarks/crop/{dataset}.tsv")
    wildcard_constraints:
        dataset=alternatives(REAL_DATASETS),
    conda:
        "../envs/animbench.yaml"
    threads: job_resource("crop", "threads")
    resources:
        mem_mb=job_resource("crop", "mem_mb"),
        runtime=job_resource("crop", "runtime"),
    params:
        spec=dataset_spec,
        inputs=input_args,
    shell:
        "animbench data crop --threads {threads} --dataset {wildcards.dataset}"
        " --spec {params.spec:q} {params.inputs} --out {output.index:q} > {log:q} 2>&1"


rule synthetic:
    output:
        directory(res("data/{dataset}/clips")),
    log:
        res("logs/synthetic/{dataset}.log"),
    benchmark:
        res("benchmarks/synthetic/{dataset}.tsv")
    wildcard_constraints:
        dataset=alternatives(SYNTHETIC_DATASETS),
    priority: 1000  # the data first: every training job waits for it
    conda:
        "../envs/animbench.yaml"
    threads: rule_resource("synthetic", "threads")
    resources:
        mem_mb=rule_resource("synthetic", "mem_mb"),
        runtime=rule_resource("synthetic", "runtime"),
    params:
        kind=dataset_value("kind"),
        seed=dataset_value("seed"),
        num_train=dataset_value("num_train"),
        num_test=dataset_value("num_test"),
        frames=dataset_value("frames"),
        size=dataset_value("size"),
    shell:
        "animbench synthetic --kind {params.kind} --out {output:q} --seed {params.seed}"
        " --num-train {params.num_train} --num-test {params.num_test}"
        " --frames {params.frames} --size {params.size} > {log:q} 2>&1"
