# Tables built from the (validated) config, wildcard constraints, and every helper function.


# The container route (`--sdm apptainer`): every job runs in this image, built from
# envs/animbench.def in the checkout; ignored by the other routes (README "Running on a SLURM
# cluster").
container: "animbench.sif"


import json
import re
import shlex
import sys

from animbench.config import (
    paper_table_runs,
    paper_table_spec,
    submission_runs,
    table2_spec,
)

RESULTS = config["results"]
DATASETS = config["datasets"]
BENCHMARK = config["benchmark"]
SYNTHETIC_DATASETS = [n for n, d in DATASETS.items() if d["source"] == "synthetic"]
REAL_DATASETS = [n for n, d in DATASETS.items() if d["source"] != "synthetic"]
TRAINED_METHODS = list(config["methods"])
BASELINES = list(BENCHMARK["baselines"])
SUBMISSIONS = list(config.get("submissions", {}))  # predictions made elsewhere
PAPER_TABLES = list(config["paper_tables"])
# training seeds: the first trains under runs/ (the single-seed layout), the others under
# seeds/<seed>/ (rules/seeds.smk)
SEEDS = list(config.get("seeds") or [config["seed"]])
EXTRA_SEEDS = [str(seed) for seed in SEEDS[1:]]
# pinned files a real dataset may declare: file name under results/data/<dataset>/ -> config key
PINNED_FILES = {"metadata.csv": "metadata", "test_list.txt": "test_list"}


def alternatives(names):
    """A regex matching exactly these names (one that never matches when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    dataset=alternatives(DATASETS),
    method=alternatives(TRAINED_METHODS + BASELINES + SUBMISSIONS),


def res(path):
    """A path under the results folder."""
    return f"{RESULTS}/{path}"


def rule_resource(rule, key):
    """A rule's resource default (rules whose jobs all get the same resources)."""
    return config["resources"][rule][key]


# ----------------------------------------------------------------------------- resources

RESOURCE_KEYS = ("gpu", "mem_mb", "runtime", "threads")


def job_resources(rule, wildcards):
    """A job's resources: the rule's defaults, with the job's override from config merged over
    them (methods.<method>.<dataset>, or datasets.<dataset> for crop)."""
    entry = config["resources"][rule]
    values = {key: entry[key] for key in RESOURCE_KEYS}
    dataset, method = wildcards.get("dataset"), wildcards.get("method")
    if method is not None:
        values.update(entry.get("methods", {}).get(method, {}).get(dataset, {}))
    else:
        values.update(entry.get("datasets", {}).get(dataset, {}))
    return values


def job_resource(rule, key):
    """A rule's `threads:` or `resources:` value as a function of the job's wildcards."""
    return lambda wildcards: job_resources(rule, wildcards)[key]


def resource_override_error():
    """'config key ...' naming the first resources override that matches no job of its rule
    (a typo would silently keep the defaults); None when every override has its job."""
    trained = {m: set(entry["presets"]) for m, entry in config["methods"].items()}
    evaluated = {**trained, **{name: set(DATASETS) for name in BASELINES}}
    evaluated |= {n: set(e["predictions"]) for n, e in config["submissions"].items()}
    jobs = {"train": trained, "reconstruct": evaluated, "metrics": evaluated}
    for rule, entry in config["resources"].items():
        where = f"config key 'resources.{rule}"
        for method, per_dataset in entry.get("methods", {}).items():
            if method not in jobs[rule]:
                known = ", ".join(sorted(jobs[rule])) or "none"
                return f"{where}.methods.{method}': unknown method '{method}' (defined: {known})"
            for dataset in per_dataset:
                if dataset not in jobs[rule][method]:
                    known = ", ".join(sorted(jobs[rule][method])) or "none"
                    return (
                        f"{where}.methods.{method}.{dataset}': '{method}' has no {rule} job "
                        f"on dataset '{dataset}' (it has: {known})"
                    )
        for dataset in entry.get("datasets", {}):
            if dataset not in REAL_DATASETS:
                known = ", ".join(REAL_DATASETS) or "none"
                return (
                    f"{where}.datasets.{dataset}': no {rule} job on dataset '{dataset}' "
                    f"(it runs on: {known})"
                )
    return None


_resource_error = resource_override_error()
if _resource_error:
    sys.exit(f"animbench: {_resource_error}")


def train_launcher(wildcards, resources):
    """`animbench` for a job on one GPU (or none); torchrun with one process per GPU for a
    multi-GPU job (the trainer joins torchrun's group: RANK, WORLD_SIZE, LOCAL_RANK)."""
    if resources.gpu <= 1:
        return "animbench"
    return f"torchrun --standalone --nproc_per_node={resources.gpu} -m animbench.cli"


def train_options(wildcards):
    """config `training:` as animbench train options (`methods.<m>.precision` first)."""
    options = config["training"]
    precision = config["methods"][wildcards.method].get(
        "precision", options["precision"]
    )
    args = [
        f"--precision {precision}",
        f"--channels-last {options['channels_last']}",
        f"--checkpoint-every {options['checkpoint_every']}",
        f"--image-every {options['image_every']}",
    ]
    if options["compile"]:
        args.append("--compile")
    if options["workers"] is not None:
        args.append(f"--workers {options['workers']}")
    if options["allow_random_weights"]:
        args.append("--allow-random-weights")
    return " ".join(args)


def train_threads(wildcards, threads, resources):
    """CPU threads of each training process: the job's CPUs shared by torchrun's processes."""
    return max(1, threads // max(1, resources.gpu))


# ----------------------------------------------------------------------------- data


def pinned_spec(wildcards):
    entry = DATASETS[wildcards.dataset][PINNED_FILES[wildcards.pinned_file]]
    return json.dumps({**entry, "cache": config["cache"]})


def dataset_spec(wildcards):
    return json.dumps(
        {
            "name": wildcards.dataset,
            **DATASETS[wildcards.dataset],
            "cache": config["cache"],
            "youtube": config["youtube"],
        }
    )


def pinned_inputs(dataset):
    return {
        key: res(f"data/{dataset}/{name}")
        for name, key in PINNED_FILES.items()
        if key in DATASETS[dataset]
    }


def download_inputs(wildcards):
    """The pinned files (video ids; TED's split needs its test list); archives need none."""
    return pinned_inputs(wildcards.dataset)


def crop_inputs(wildcards):
    return {
        "availability": res(f"data/{wildcards.dataset}/availability.parquet"),
        **pinned_inputs(wildcards.dataset),
    }


def dataset_clips(wildcards):
    """What a dataset's clips depend on: the folder (synthetic) or the crop's index (real)."""
    if wildcards.dataset in SYNTHETIC_DATASETS:
        return res(f"data/{wildcards.dataset}/clips")
    return res(f"data/{wildcards.dataset}/clips.parquet")


def input_args(wildcards, input):
    """`--input FILE` for every input of the job, in a stable order."""
    return " ".join(f"--input {shlex.quote(str(path))}" for path in input)


# ----------------------------------------------------------------------------- train


def released_checkpoint(dataset, method):
    """The authors' checkpoint configured for (dataset, method), or None (train instead)."""
    return config["methods"].get(method, {}).get("checkpoints", {}).get(dataset)


def model_checkpoint(dataset, method):
    """What reconstruction evaluates: an imported release, or our own trained model."""
    name = "imported.pt" if released_checkpoint(dataset, method) else "model.pt"
    return res(f"runs/{dataset}/{method}/{name}")


def release_input(wildcards):
    """A local release file is a job input (Snakemake reports it if missing); URLs are
    fetched by the job itself through the cache."""
    entry = released_checkpoint(wildcards.dataset, wildcards.method)
    return [entry["path"]] if entry and "path" in entry else []


def release_args(wildcards):
    entry = released_checkpoint(wildcards.dataset, wildcards.method)
    args = [entry.get("path") or entry["url"]]
    if entry.get("sha256"):
        args += ["--sha256", entry["sha256"]]
    return " ".join(shlex.quote(a) for a in args + ["--cache", config["cache"]])


def train_preset(wildcards):
    return config["methods"][wildcards.method]["presets"][wildcards.dataset]


def known_preset(name):
    """A preset (built-in, or an external model's "<model>/<preset>"), None if unknown."""
    from animbench.errors import AnimbenchError
    from animbench.models.registry import get_preset

    try:
        return get_preset(name)
    except AnimbenchError:
        return None


def train_priority(wildcards):
    """Longest training first (its planned epochs × repeats): with fewer jobs than cores at the
    end, the last one to start should be a short one."""
    from animbench.config import merge

    preset = known_preset(train_preset(wildcards))
    if preset is None:  # an unknown preset: the train job names it
        return 0
    schedule = merge(preset, config["methods"][wildcards.method]["overrides"])[
        "train_params"
    ]
    return int(schedule["num_epochs"] * schedule["num_repeats"])


def train_overrides(wildcards):
    return json.dumps(config["methods"][wildcards.method]["overrides"], sort_keys=True)


# ----------------------------------------------------------------------------- evaluate


def lpips_weights(wildcards):
    """Stamps of LPIPS' files (AlexNet trunk, v0.1 heads) for reconstruct and submission jobs,
    fetched by the local `weights` rule so that a compute node needs no internet; none with
    random weights allowed (offline CI, where LPIPS is NaN by design)."""
    if config["training"]["allow_random_weights"]:
        return []
    return [weight_stamp(name) for name in ("alexnet", "lpips_alex")]


def reconstruct_inputs(wildcards):
    inputs = {"data": dataset_clips(wildcards), "weights": lpips_weights(wildcards)}
    if wildcards.method not in BASELINES:
        inputs["checkpoint"] = model_checkpoint(wildcards.dataset, wildcards.method)
    return inputs


def checkpoint_arg(wildcards, input):
    return (
        f"--checkpoint {shlex.quote(input.checkpoint)}"
        if "checkpoint" in input.keys()
        else ""
    )


def submission_predictions(wildcards):
    """A submission's predictions folder for the dataset (config `submissions:`)."""
    return config["submissions"][wildcards.method]["predictions"][wildcards.dataset]


def dataset_value(key):
    return lambda wildcards: DATASETS[wildcards.dataset][key]


def mkr_flag(wildcards):
    return "--mkr" if DATASETS[wildcards.dataset]["mkr"] else ""


# ----------------------------------------------------------------------------- tables


def benchmark_metrics(wildcards):
    """Every benchmark method and baseline on every benchmark dataset, and each submission on
    the benchmark datasets it has predictions for."""
    return expand(
        res("metrics/{dataset}/{method}.parquet"),
        dataset=BENCHMARK["datasets"],
        method=BENCHMARK["methods"] + BASELINES,
    ) + [res(f"metrics/{d}/{m}.parquet") for d, m in submission_runs(config)]


def seeded_methods(dataset):
    """Benchmark methods trained here on `dataset` (not imported): those with further seeds."""
    return [m for m in BENCHMARK["methods"] if not released_checkpoint(dataset, m)]


def seed_metrics(wildcards):
    """Metrics files of the further training seeds, one list per seed."""
    return {
        seed: [
            res(f"seeds/{seed}/metrics/{dataset}/{method}.parquet")
            for dataset in BENCHMARK["datasets"]
            for method in seeded_methods(dataset)
        ]
        for seed in EXTRA_SEEDS
    }


def seed_metrics_files(wildcards):
    return [path for paths in seed_metrics(wildcards).values() for path in paths]


def seed_args(wildcards):
    """`--seed N` of the first seed, and `--seed-metrics JSON` with further seeds."""
    args = f"--seed {SEEDS[0]}"
    if EXTRA_SEEDS:
        args += f" --seed-metrics {shlex.quote(json.dumps(seed_metrics(wildcards)))}"
    return args


def seed_reconstruct_inputs(wildcards):
    return {
        "data": dataset_clips(wildcards),
        "checkpoint": res(
            f"seeds/{wildcards.seed}/runs/{wildcards.dataset}/{wildcards.method}/model.pt"
        ),
    }


def benchmark_spec(wildcards):
    return json.dumps(table2_spec(config), sort_keys=True)


def paper_table_metrics(wildcards):
    """Metrics of every row with a methods entry × each table dataset it has a preset for."""
    return [
        res(f"metrics/{dataset}/{method}.parquet")
        for dataset, method in paper_table_runs(config, wildcards.table)
    ]


def paper_table_args(wildcards):
    """The table's spec as JSON, keys in config order (the paper's dataset order; config order
    is deterministic, so the param string is too)."""
    return json.dumps(paper_table_spec(config, wildcards.table))


# ----------------------------------------------------------------------------- report


def report_inputs(wildcards):
    """What the report shows: tables, trained models (a run's log.csv, no declared
    output, is finished with its model), reconstructions and dataset indices."""
    datasets, methods = BENCHMARK["datasets"], BENCHMARK["methods"]
    inputs = [res("table1.parquet"), res("table2.parquet"), res("pairs.parquet")]
    for dataset in datasets:
        if dataset in SYNTHETIC_DATASETS:
            inputs.append(res(f"data/{dataset}/clips"))
        else:
            inputs += [
                res(f"data/{dataset}/availability.parquet"),
                res(f"data/{dataset}/clips.parquet"),
            ]
        inputs += [model_checkpoint(dataset, method) for method in methods]
        inputs += [
            res(f"reconstruction/{dataset}/{method}") for method in methods + BASELINES
        ]
    return inputs


def report_spec(wildcards):
    """The part of the config the report reads: what is expected, and each dataset's source."""
    datasets = {name: {"source": entry["source"]} for name, entry in DATASETS.items()}
    return json.dumps({"benchmark": BENCHMARK, "datasets": datasets}, sort_keys=True)


# ----------------------------------------------------------------------------- pose environment

from animbench.pose_env import STAMP as POSE_ENV_STAMP, pose_env_prefix

POSE_ENV = str(pose_env_prefix())  # $ANIMBENCH_POSE_ENV, else resources/envs/pose


def pose_env_input(wildcards):
    """The pose environment's stamp when the dataset's keypoints come from openpifpaf."""
    if DATASETS[wildcards.dataset].get("keypoints") == "openpifpaf":
        return f"{POSE_ENV}/{POSE_ENV_STAMP}"
    return []


# ----------------------------------------------------------------------------- weight files

from animbench.evaluate.detectors import weights_for
from animbench.weights import WEIGHTS

CACHE = config["cache"]
WEIGHT_PINS = json.dumps(config["weights"])


def weight_stamp(name):
    return f"{CACHE}/weights/verified/{name}.json"


def dataset_weights(wildcards):
    """Stamps of the weight files the dataset's keypoint detector and identity embedder load."""
    dataset = DATASETS[wildcards.dataset]
    names = weights_for(
        dataset.get("keypoints", "none"), dataset.get("identity", "none")
    )
    return [weight_stamp(name) for name in names]


def train_weights(wildcards):
    """Stamps of the pretrained files the job's resolved preset trains with (VGG19, HRNet,
    DINO, SAM), fetched by the local `weights` rule so a compute node needs no internet. None
    when random substitutes are allowed (offline CI): the job then records its deviations.
    """
    if config["training"]["allow_random_weights"]:
        return []
    from animbench.config import merge
    from animbench.train.pretrained import required_weights

    preset = known_preset(train_preset(wildcards))
    if preset is None:  # an unknown preset: the train job names it
        return []
    spec = merge(preset, config["methods"][wildcards.method]["overrides"])
    return [weight_stamp(name) for name in required_weights(spec)]
