# Training. The run folder keeps intermediate checkpoints so an interrupted job resumes; only
# model.pt (written at the very end) is the declared output, so Snakemake never deletes the run.


rule train:
    input:
        data=dataset_clips,
    output:
        model=res("runs/{dataset}/{method}/model.pt"),
    log:
        res("logs/train/{dataset}/{method}.log"),
    benchmark:
        res("benchmarks/train/{dataset}/{method}.tsv")
    wildcard_constraints:
        method=alternatives(TRAINED_METHODS),
    conda:
        "../envs/torch.yaml"
    threads: rule_resource("train", "threads")
    resources:
        gpu=rule_resource("train", "gpu"),
        mem_mb=rule_resource("train", "mem_mb"),
        runtime=rule_resource("train", "runtime"),
    params:
        data=res("data/{dataset}/clips"),
        preset=train_preset,
        overrides=train_overrides,
        run_dir=res("runs/{dataset}/{method}"),
        device=config["device"],
        seed=config["seed"],
    shell:
        "animbench train --threads {threads} --data {params.data:q} --method {wildcards.method}"
        " --preset {params.preset} --overrides {params.overrides:q} --out {params.run_dir:q}"
        " --device {params.device} --seed {params.seed} > {log:q} 2>&1"


# Released checkpoints (config: methods.<method>.checkpoints.<dataset>) are imported strictly
# into the preset's model and evaluated instead of a model trained here.
rule import_checkpoint:
    input:
        release_input,
    output:
        model=res("runs/{dataset}/{method}/imported.pt"),
    log:
        res("logs/import/{dataset}/{method}.log"),
    wildcard_constraints:
        method=alternatives(TRAINED_METHODS),
    conda:
        "../envs/torch.yaml"
    resources:
        downloads=1,
    params:
        preset=train_preset,
        release=release_args,
    shell:
        "animbench checkpoint import --preset {params.preset} {params.release}"
        " -o {output.model:q} > {log:q} 2>&1"
