rule activations:
    """Dump every probe point's features (eval mode, no augmentation) to activations.h5."""
    input:
        model=run_file("model.pt"),
    output:
        h5=run_file("activations.h5"),
    params:
        run=data_params,
        activations=config["activations"],
        seed=lambda w: int(w.seed),
        data_root=config["data_root"],
        download=config["download"],
        device=config["device"],
    log:
        log_file("activations"),
    benchmark:
        bench_file("activations")
    resources:
        runtime=60,
        mem_mb=8000,
    threads: 1
    conda:
        ENV
    script:
        "../scripts/activations.py"
