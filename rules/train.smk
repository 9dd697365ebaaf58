# Training. The run folder keeps intermediate checkpoints so an interrupted job resumes; only
# model.pt (written at the very end) is the declared output, so Snakemake never deletes the run.
# A job with gpu > 1 (config resources.train) runs one torchrun process per GPU. `exec`: the
# trainer replaces the shell, so a SIGTERM (SLURM's time limit or preemption) reaches the
# trainer, which saves checkpoint-last.pt, rather than killing the shell that waits for it.
# The pretrained files a preset trains with (VGG19, HRNet, DINO, SAM) are inputs, fetched by
# the local `weights` rule (rules/weights.smk), unless training.allow_random_weights.


rule train:
    input:
        data=dataset_clips,
        weights=train_weights,
    output:
        model=res("runs/{dataset}/{method}/model.pt"),
    log:
        res("logs/train/{dataset}/{method}.log"),
    benchmark:
        res("benchmarks/train/{dataset}/{method}.tsv")
    wildcard_constraints:
        method=alternatives(TRAINED_METHODS),
    priority: train_priority
    conda:
        "../envs/animbench.yaml"
    threads: job_resource("train", "threads")
    resources:
        gpu=job_resource("train", "gpu"),
        mem_mb=job_resource("train", "mem_mb"),
        runtime=job_resource("train", "runtime"),
    params:
        launcher=train_launcher,
        options=train_options,
        threads=train_threads,
        data=res("data/{dataset}/clips"),
        preset=train_preset,
        overrides=train_overrides,
        run_dir=res("runs/{dataset}/{method}"),
        device=config["device"],
        seed=SEEDS[0],
        cache=CACHE,
        pins=WEIGHT_PINS,
    shell:
        "exec {params.launcher} train --threads {params.threads} --data {params.data:q}"
        " --method {wildcards.method} --preset {params.preset} --overrides {params.overrides:q} --out {params.run_dir:q}"
        " --device {params.device} --seed {params.seed} {params.options}"
        " --cache {params.cache:q} --weight-pins {params.pins:q} > {log:q} 2>&1"


# Released checkpoints (config: methods.<method>.checkpoints.<dataset>) are imported strictly
# into the preset's model and evaluated instead of a model trained here. A local rule: a release
# given by URL is downloaded by the job, so it runs where Snakemake runs (compute nodes may have
# no internet, and their jobs run with ANIMBENCH_OFFLINE); the import itself is a CPU load.
rule import_checkpoint:
    input:
        release_input,
    output:
        model=res("runs/{dataset}/{method}/imported.pt"),
    log:
        res("logs/import/{dataset}/{method}.log"),
    wildcard_constraints:
        method=alternatives(TRAINED_METHODS),
    localrule: True
    conda:
        "../envs/animbench.yaml"
    resources:
        downloads=1,
    params:
        preset=train_preset,
        release=release_args,
    shell:
        "animbench checkpoint import --preset {params.preset} {params.release}"
        " -o {output.model:q} > {log:q} 2>&1"
