# Resolution sweeps and prune-and-retrain (flowprobe.sweep, flowprobe.prune): swept and pruned runs
# are ordinary runs expanded by load_config; these rules add the architecture of an observed prune,
# what the runs cost and how far the border-layer prediction can be trusted.


rule pruned_spec:
    """results/runs/{run}_pruned/pruned_spec.json of a `prune: {from: observed}` run: the model its
    sibling trains, cut where the full run's probes (every seed, seed-mean) observe it unproductive.
    """
    input:
        probes=pruned_spec_probes,
    output:
        json=PRUNED_SPEC,
    log:
        "results/logs/pruned_spec/{run}.log",
    benchmark:
        "results/benchmarks/pruned_spec/{run}.tsv"
    wildcard_constraints:
        run=observed_prune_pattern(),
    conda:
        ENV
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        full=pruned_spec_full,
        verdicts=config["verdicts"],
    script:
        "../scripts/pruned_spec.py"


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
