def activations_h5():
    """activations.h5 of a run; a temp() file (deleted once all its readers ran) when
    keep_activations is false."""
    path = run_file("activations.h5")
    return path if config["keep_activations"] else temp(path)


def activations_params(wildcards):
    """The dump's settings; pre-BN maps are stored when saturation reads them."""
    return {**config["activations"], "prebn": config["saturation"]["source"] == "prebn_nearest4"}


rule activations:
    """Dump every probe point's features (eval mode, no augmentation) to activations.h5."""
    input:
        model=run_file("model.pt"),
    output:
        h5=activations_h5(),
    params:
        run=data_params,
        activations=activations_params,
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
