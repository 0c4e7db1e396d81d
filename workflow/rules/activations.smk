rule activations:
    """Dump every probe point's features (eval mode, no augmentation) to activations.h5."""
    input:
        model=run_file("model.pt"),
    output:
        h5=activations_h5(),
    log:
        log_file("activations"),
    benchmark:
        bench_file("activations")
    conda:
        ENV
    threads: 1
    resources:
        **GPU_JOB,
        runtime=60,
        mem_mb=8000,
    params:
        **RUN_DATA,
        activations=activations_params,
    script:
        "../scripts/activations.py"
