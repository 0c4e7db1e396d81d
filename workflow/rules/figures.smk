# Aggregation of the runs a figure needs into one table, and the figure drawn from it.


rule table:
    """results/tables/{figure}.csv: the figure's per-run analyses, one row per run × seed × probe point."""
    input:
        figure_inputs,
    output:
        csv=report(
            "results/tables/{figure}.csv",
            caption="../report/table.rst",
            category="Tables",
        ),
        summary=report(
            "results/tables/{figure}_summary.csv",
            caption="../report/summary.rst",
            category="Tables",
        ),
    log:
        "results/logs/table/{figure}.log",
    benchmark:
        "results/benchmarks/table/{figure}.tsv"
    conda:
        ENV_TABLES
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        kind=figure_kind_name,
        members=figure_members,
    script:
        "../scripts/table.py"


rule figure:
    """results/figures/{figure}.pdf (+ .png) drawn from its table."""
    input:
        csv="results/tables/{figure}.csv",
    output:
        pdf=report(
            "results/figures/{figure}.pdf",
            caption="../report/figure.rst",
            category="Figures",
        ),
        png="results/figures/{figure}.png",
    log:
        "results/logs/figure/{figure}.log",
    benchmark:
        "results/benchmarks/figure/{figure}.tsv"
    conda:
        ENV_TABLES
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        kind=figure_kind_name,
        title=figure_title,
        caption=figure_caption,
    script:
        "../scripts/figure.py"
