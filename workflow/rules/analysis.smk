# Analyses of one run × seed. Each reads activations.h5 (or model.pt) and writes one CSV.


rule probes:
    """Multinomial logistic-regression probe per probe point (train and test accuracy)."""
    input:
        h5=run_file("activations.h5"),
    output:
        csv=run_file("probes.csv"),
    log:
        log_file("probes"),
    benchmark:
        bench_file("probes")
    conda:
        ENV
    threads: 1
    resources:
        **GPU_JOB,
        runtime=60,
        mem_mb=8000,
    params:
        probes=config["probes"],
        device=config["device"],
    script:
        "../scripts/probes.py"


rule saturation:
    """PCA saturation (intrinsic dimension / width) per probe point, channelwise on the maps of
    saturation.source (pre-BN nearest 4x4, the study's, or the probed post-ReLU 4x4)."""
    input:
        h5=run_file("activations.h5"),
    output:
        csv=run_file("saturation.csv"),
    log:
        log_file("saturation"),
    benchmark:
        bench_file("saturation")
    conda:
        ENV
    threads: 1
    resources:
        runtime=30,
        mem_mb=4000,
    params:
        saturation=config["saturation"],
    script:
        "../scripts/saturation.py"


rule cka_output:
    """Linear CKA of every probe point with the network's output (logits)."""
    input:
        h5=run_file("activations.h5"),
    output:
        csv=run_file("cka_output.csv"),
    log:
        log_file("cka_output"),
    benchmark:
        bench_file("cka_output")
    conda:
        ENV
    threads: 1
    resources:
        **GPU_JOB,
        runtime=30,
        mem_mb=4000,
    params:
        split=config["cka"]["split"],
        debiased=config["cka"]["debiased"],
    script:
        "../scripts/cka_output.py"


rule cka_pathways:
    """Layer × layer minibatch CKA between two pathways of one block (the study's Fig. 9)."""
    input:
        h5=run_file("activations.h5"),
    output:
        csv=run_file("cka_pathways.csv"),
    log:
        log_file("cka_pathways"),
    benchmark:
        bench_file("cka_pathways")
    conda:
        ENV
    threads: 1
    resources:
        **GPU_JOB,
        runtime=30,
        mem_mb=4000,
    params:
        split=config["cka"]["split"],
        pathways=config["cka"]["pathways"],
        batch_size=config["cka"]["batch_size"],
        debiased=config["cka"]["debiased"],
    script:
        "../scripts/cka_pathways.py"


rule gradients:
    """Mean |gradient| through every probe point of the trained model (no optimizer steps)."""
    input:
        model=run_file("model.pt"),
    output:
        csv=run_file("gradients.csv"),
    log:
        log_file("gradients"),
    benchmark:
        bench_file("gradients")
    conda:
        ENV
    threads: 1
    resources:
        **GPU_JOB,
        runtime=30,
        mem_mb=8000,
    params:
        **RUN_DATA,
        gradients=config["gradients"],
    script:
        "../scripts/gradients.py"


rule ablation:
    """Test accuracy with each bypassable unit (pathway, residual branch, dense layer, MLP span) removed, per block
    and everywhere, and the paper's summary: the predicted non-dominant pathway removed.
    """
    input:
        model=run_file("model.pt"),
    output:
        csv=run_file("ablation.csv"),
    log:
        log_file("ablation"),
    benchmark:
        bench_file("ablation")
    conda:
        ENV
    threads: 1
    resources:
        **GPU_JOB,
        runtime=60,
        mem_mb=8000,
    params:
        **RUN_DATA,
        ablation=config["ablation"],
        depth_ratio=config["verdicts"]["depth_ratio"],
    script:
        "../scripts/ablation.py"
