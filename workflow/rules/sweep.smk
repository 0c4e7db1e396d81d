# Resolution sweeps and prune-and-retrain (flowprobe.sweep, flowprobe.prune): swept and pruned runs
# are ordinary runs expanded by load_config; these rules add what they cost and how far the
# border-layer prediction can be trusted.


rule cost:
    """Parameters, forward FLOPs at the run's resolution, final train accuracy and seconds per epoch."""
    input:
        model=run_file("model.pt"),
        train_log=run_file("train_log.csv"),
    output:
        csv=run_file("cost.csv"),
    log:
        log_file("cost"),
    benchmark:
        bench_file("cost")
    conda:
        ENV
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        pruned=run_pruned,
    script:
        "../scripts/cost.py"


rule prediction_quality:
    """results/tables/prediction_quality.csv: predicted vs observed verdicts, counted per resolution."""
    input:
        csv="results/tables/verdicts.csv",
    output:
        csv=report(
            "results/tables/prediction_quality.csv",
            caption="../report/prediction_quality.rst",
            category="Tables",
        ),
    log:
        "results/logs/table/prediction_quality.log",
    benchmark:
        "results/benchmarks/table/prediction_quality.tsv"
    conda:
        ENV_TABLES
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        resolutions=run_resolutions,
    script:
        "../scripts/prediction_quality.py"
