# Further training seeds (config `seeds` after the first): each trains, reconstructs and is
# measured under seeds/<seed>/ with the rules of a single seed; table2 and pairs read them.


# params merge key by key over train's: only the run folder and the seed differ
use rule train as train_seed with:
    output:
        model=res("seeds/{seed}/runs/{dataset}/{method}/model.pt"),
    log:
        res("logs/seeds/{seed}/train/{dataset}/{method}.log"),
    benchmark:
        res("benchmarks/seeds/{seed}/train/{dataset}/{method}.tsv")
    wildcard_constraints:
        seed=alternatives(EXTRA_SEEDS),
        method=alternatives(TRAINED_METHODS),
    params:
        run_dir=res("seeds/{seed}/runs/{dataset}/{method}"),
        seed=lambda wildcards: wildcards.seed,


use rule reconstruct as reconstruct_seed with:
    input:
        unpack(seed_reconstruct_inputs),
    output:
        directory(res("seeds/{seed}/reconstruction/{dataset}/{method}")),
    log:
        res("logs/seeds/{seed}/reconstruct/{dataset}/{method}.log"),
    benchmark:
        res("benchmarks/seeds/{seed}/reconstruct/{dataset}/{method}.tsv")
    wildcard_constraints:
        seed=alternatives(EXTRA_SEEDS),
        method=alternatives(TRAINED_METHODS),


use rule metrics as metrics_seed with:
    input:
        gt=dataset_clips,
        pred=res("seeds/{seed}/reconstruction/{dataset}/{method}"),
        pose_env=pose_env_input,
        weights=dataset_weights,
    output:
        res("seeds/{seed}/metrics/{dataset}/{method}.parquet"),
    log:
        res("logs/seeds/{seed}/metrics/{dataset}/{method}.log"),
    benchmark:
        res("benchmarks/seeds/{seed}/metrics/{dataset}/{method}.tsv")
    wildcard_constraints:
        seed=alternatives(EXTRA_SEEDS),
        method=alternatives(TRAINED_METHODS),
