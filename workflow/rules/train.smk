rule train:
    """Train one run × seed: model.pt, per-epoch train_log.csv (resumes from its checkpoint).
    An observed prune trains the model its pruned_spec.json names (the only input any run has).
    """
    input:
        unpack(train_inputs),
    output:
        model=run_file("model.pt"),
        train_log=run_file("train_log.csv"),
    log:
        log_file("train"),
    benchmark:
        bench_file("train")
    wildcard_constraints:
        run=runs_pattern(imported=False),
    conda:
        ENV
    threads: 1
    resources:
        **GPU_JOB,
        runtime=240,
        mem_mb=8000,
    params:
        **RUN_DATA,
        train=train_params,
    script:
        "../scripts/train.py"


rule import_checkpoint:
    """A run with a `checkpoint:` starts here instead of training: model.pt and a one-row
    train_log.csv (the checkpoint's test accuracy) from the given weights."""
    input:
        checkpoint=run_checkpoint,
    output:
        model=run_file("model.pt"),
        train_log=run_file("train_log.csv"),
    log:
        log_file("import_checkpoint"),
    benchmark:
        bench_file("import_checkpoint")
    wildcard_constraints:
        run=runs_pattern(imported=True),
    conda:
        ENV
    threads: 1
    resources:
        **GPU_JOB,
        runtime=30,
        mem_mb=8000,
    params:
        **RUN_DATA,
    script:
        "../scripts/import_checkpoint.py"
