# The study's prose and numbers against the runs: verdicts per run, then the paper beside them.


rule verdicts:
    """results/tables/verdicts.csv: tail / skipped layers and pathway roles, predicted vs observed (docs/verdicts.md)."""
    input:
        verdict_inputs,
    output:
        csv=report(
            "results/tables/verdicts.csv",
            caption="../report/verdicts.rst",
            category="Tables",
        ),
    log:
        "results/logs/table/verdicts.log",
    benchmark:
        "results/benchmarks/table/verdicts.tsv"
    conda:
        ENV_TABLES
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        members=verdict_members,
        resolutions={name: run["resolution"] for name, run in config["runs"].items()},
        verdicts=config["verdicts"],
    script:
        "../scripts/verdicts.py"


rule paper_comparison:
    """results/tables/paper_comparison.csv: every figure's reported value or claim beside the measured one."""
    input:
        comparison_inputs,
    output:
        csv=report(
            "results/tables/paper_comparison.csv",
            caption="../report/paper_comparison.rst",
            category="Tables",
        ),
    log:
        "results/logs/table/paper_comparison.log",
    benchmark:
        "results/benchmarks/table/paper_comparison.tsv"
    conda:
        ENV_TABLES
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        members=comparison_members,
        runs=config["runs"],
    script:
        "../scripts/paper_comparison.py"
