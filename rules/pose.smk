# The pose environment: a separate venv with openpifpaf 0.13.11 on torch 2.5.1 (its C++
# extension does not build against the main environment's torch), created on demand for the
# metrics jobs of datasets whose keypoint detector is openpifpaf (common.smk: pose_env_input).
# The metrics job runs in the main environment and starts openpifpaf in a worker with this
# venv's Python. A local rule: it downloads ~3 GB of wheels (torch with its CUDA libraries) and
# compiles a C++ extension, once.


rule pose_env:
    output:
        f"{POSE_ENV}/{POSE_ENV_STAMP}",
    log:
        res("logs/pose_env.log"),
    localrule: True
    conda:
        "../envs/animbench.yaml"  # where `animbench` is; the venv is made from its Python
    params:
        prefix=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "animbench pose-env --prefix {params.prefix:q} > {log:q} 2>&1"
