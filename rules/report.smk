# results/report.html: one self-contained page (tables beside the papers' values with bar
# charts, sample reconstructions as GIFs, training curves, dataset availability). Its inputs
# are what it shows for the configured benchmark, so it reruns when any changes: the tables,
# each trained model (a run's log.csv is finished with it; log.csv is no declared output), each
# reconstruction, and each dataset's clips or crop/download tables. Paper tables
# (paper_tables:) are shown when present but not required: they need runs of their own.


rule report:
    input:
        report_inputs,
    output:
        res("report.html"),
    log:
        res("logs/report.log"),
    localrule: True
    conda:
        "../envs/animbench.yaml"
    threads: rule_resource("table", "threads")
    resources:
        mem_mb=rule_resource("table", "mem_mb"),
        runtime=rule_resource("table", "runtime"),
    params:
        results=lambda wildcards, output: Path(output[0]).parent,
        spec=report_spec,
    shell:
        "animbench report --results {params.results:q} --spec {params.spec:q}"
        " -o {output:q} > {log:q} 2>&1"
