# Long-format Parquet tables beside the papers' numbers.


rule table2:
    input:
        metrics=benchmark_metrics,
        seeds=seed_metrics_files,
    output:
        res("table2.parquet"),
    log:
        res("logs/table2.log"),
    conda:
        "../envs/animbench.yaml"
    threads: rule_resource("table", "threads")
    resources:
        mem_mb=rule_resource("table", "mem_mb"),
        runtime=rule_resource("table", "runtime"),
    params:
        spec=benchmark_spec,
        seeds=seed_args,
    shell:
        "animbench table table2 --metrics {input.metrics:q} --spec {params.spec:q}"
        " {params.seeds} --out {output:q} > {log:q} 2>&1"


# Every pair of methods per (dataset, metric) on the same test videos: mean difference, its
# bootstrap interval and a paired permutation test's p-value (animbench.stats).
rule pairs:
    input:
        metrics=benchmark_metrics,
        seeds=seed_metrics_files,
    output:
        res("pairs.parquet"),
    log:
        res("logs/pairs.log"),
    conda:
        "../envs/animbench.yaml"
    threads: rule_resource("table", "threads")
    resources:
        mem_mb=rule_resource("table", "mem_mb"),
        runtime=rule_resource("table", "runtime"),
    params:
        spec=benchmark_spec,
        seeds=seed_args,
    shell:
        "animbench table pairs --metrics {input.metrics:q} --spec {params.spec:q}"
        " {params.seeds} --out {output:q} > {log:q} 2>&1"


rule table1:
    output:
        res("table1.parquet"),
    log:
        res("logs/table1.log"),
    conda:
        "../envs/animbench.yaml"
    threads: rule_resource("table", "threads")
    resources:
        mem_mb=rule_resource("table", "mem_mb"),
        runtime=rule_resource("table", "runtime"),
    shell:
        "animbench table table1 --out {output:q} > {log:q} 2>&1"


# A paper's results table named under config paper_tables (e.g. CPAB Tables 1 and 2): rows are
# the paper's labels mapped to methods entries, beside the paper's numbers.
rule paper_table:
    input:
        paper_table_metrics,
    output:
        res("{table}.parquet"),
    log:
        res("logs/{table}.log"),
    benchmark:
        res("benchmarks/{table}.tsv")
    wildcard_constraints:
        table=alternatives(PAPER_TABLES),
    conda:
        "../envs/animbench.yaml"
    threads: rule_resource("table", "threads")
    resources:
        mem_mb=rule_resource("table", "mem_mb"),
        runtime=rule_resource("table", "runtime"),
    params:
        spec=paper_table_args,
    shell:
        "animbench table paper --name {wildcards.table} --metrics {input:q}"
        " --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
