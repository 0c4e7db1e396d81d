rule train:
    """Train one run × seed: model.pt, per-epoch train_log.csv (resumes from its checkpoint)."""
    output:
        model=run_file("model.pt"),
        train_log=run_file("train_log.csv"),
    params:
        run=data_params,
        train=train_params,
        seed=lambda w: int(w.seed),
        data_root=config["data_root"],
        download=config["download"],
        device=config["device"],
    log:
        log_file("train"),
    benchmark:
        bench_file("train")
    resources:
        runtime=240,
        mem_mb=8000,
    threads: 1
    conda:
        ENV
    script:
        "../scripts/train.py"
