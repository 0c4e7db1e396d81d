rule activations:
    """Dump every probe point's features (eval mode, no augmentation) to activations.h5."""
    input:
        model=run_file("model.pt"),
    output:
        h5=activations_h5(),
    params:
        **RUN_DATA,
        activations=activations_params,
    log:
        log_file("activations"),
    benchmark:
        bench_file("activations")
    resources:
        runtime=60,
        mem_mb=8000,
        **GPU_JOB,
    threads: 1
    conda:
        ENV
    script:
        "../scripts/activations.py"
