"""GPU check of the pipeline's stages on one device, through the library API only (no Snakemake).

Prints training images/s of VGG16 and MPNet2(2:3x3, 2:7x7) on CIFAR-10 (one warm-up epoch, then
one timed epoch over --train-images images), the activation dump rate, and the probe and CKA
stage times on VGG16's dump. With --fig7, runs the study's Fig. 7 at full scale: the two MPNet2
models of Fig. 7 trained on the full CIFAR-10 image folder with the study's schedule (config.yaml:
batch 64, SGD lr 0.1, x0.1 every 10 epochs, 30 epochs), then the activation dump, probes and CKA
with the output of each, and the figure (pathway_probes) drawn from them; it prints each stage's
time and peak GPU memory, training images/s, the dump rate and each model's test accuracy next to
the study's. Settings (batch size, optimiser, probe and CKA knobs) come from config.yaml, so the
numbers are those of the real pipeline.

    python benchmarks/gpu_check.py --root device_data            # full CIFAR-10 image folder
    python benchmarks/gpu_check.py --root device_data --fig7     # + Fig. 7 at full scale (30 epochs x 2 models)
    python benchmarks/gpu_check.py --root device_data --quick    # tiny sizes, runs on a CPU
    python benchmarks/gpu_check.py --root device_data --fig7 --skip-throughput --epochs 1 --max-per-class 20
                                                                 # Fig. 7 path end to end on a CPU in minutes
"""
from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from flowprobe.activations import dump_activations
from flowprobe.analysis.cka import MinibatchCKA, cka_output_table
from flowprobe.analysis.probes import probe_table
from flowprobe.data import Dataset, ImageSet, balanced_subset, load_dataset
from flowprobe.figures import KINDS
from flowprobe.h5io import features, open_activations, probe_point_names
from flowprobe.models import build_model
from flowprobe.plots import draw_figure
from flowprobe.tables import figure_table
from flowprobe.train import TrainSettings, resolve_device, train_model

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT_MODELS = ("VGG16", "MPNet2(2:3x3, 2:7x7)")
STUDY_FIG7 = {"MPNet2(1:3x3, 2:7x7)": 0.8269, "MPNet2(2:3x3, 2:7x7)": 0.8373}  # test accuracy, single runs
# --quick: narrow models so a CPU finishes in about a minute (numbers then mean nothing).
QUICK_WIDTHS = {"VGG16": [8, 16, 32, 64, 64], "MPNet2": [8, 16, 32, 64]}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="device_data", help="image folder: ROOT/{train,test}/<class>/*.jpg")
    p.add_argument("--quick", action="store_true", help="tiny sizes and narrow models (CPU smoke run)")
    p.add_argument("--train-images", type=int, default=10_000, help="images per timed training epoch")
    p.add_argument("--dump-per-class", type=int, default=500, help="images per class and split to dump")
    p.add_argument("--fig7", action="store_true", help="also run Fig. 7 at full scale (train, dump, probes, CKA, figure)")
    p.add_argument("--epochs", type=int, default=None, help="Fig. 7 training epochs (default: config.yaml's, 30)")
    p.add_argument("--max-per-class", type=int, default=None,
                   help="Fig. 7 on a class-balanced subset of both splits (default: all of CIFAR-10)")
    p.add_argument("--skip-throughput", action="store_true", help="skip the throughput and VGG16 stages")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="folder for the scratch files")
    return p.parse_args()


@contextmanager
def stage(name: str, device: torch.device, record: dict):
    """Time a stage (synchronising CUDA) and print its seconds and peak GPU memory."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize()
    record[name] = time.perf_counter() - start
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
    print(f"  {name}: {record[name]:.1f} s{peak}", flush=True)


def pipeline_settings(quick: bool) -> dict:
    """Training, activation, probe and CKA settings of config.yaml (probes shortened with --quick)."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    probes = dict(config["probes"])
    if quick:
        probes.update(l2_grid=[1e-2], max_iter=20)
    return {"train": config["defaults"]["train"], "activations": config["activations"],
            "probes": probes, "cka": config["cka"]}


def subset(data: Dataset, per_class_train: int, per_class_test: int) -> Dataset:
    """A class-balanced subset of both splits (same mean/std as the full train split)."""
    def pick(images: ImageSet, per_class: int) -> ImageSet:
        idx = balanced_subset(images.labels, per_class, seed=0)
        return ImageSet(images.images[idx], images.labels[idx], images.indices[idx])
    return replace(data, train=pick(data.train, per_class_train), test=pick(data.test, per_class_test))


def new_model(spec: str, data: Dataset, quick: bool) -> torch.nn.Module:
    options = {"widths": QUICK_WIDTHS[spec.split("(")[0]]} if quick else {}
    return build_model(spec, data.num_classes, data.in_channels, data.resolution, **options)


def train(model, data: Dataset, settings: TrainSettings, device, scratch: Path, tag: str) -> tuple[pd.DataFrame, dict]:
    log, checkpoint = scratch / f"{tag}_log.csv", scratch / f"{tag}_checkpoint.pt"
    log.unlink(missing_ok=True)
    checkpoint.unlink(missing_ok=True)  # never resume a previous check's run
    summary = train_model(model, data, settings, seed=0, log_path=log, checkpoint_path=checkpoint,
                          device=str(device), progress=False)
    checkpoint.unlink(missing_ok=True)
    return pd.read_csv(log), summary


def training_throughput(data: Dataset, cfg: dict, device, scratch: Path, args) -> torch.nn.Module:
    """Images/s of train_model's second epoch (the first warms up cuDNN and the allocator).

    The epoch time includes evaluating a 50-image-per-class test split (~5% of the timed work).
    """
    n_classes = data.num_classes
    timing = subset(data, max(1, args.train_images // n_classes), 50)
    settings = replace(TrainSettings(**cfg["train"]), epochs=2, on_divergence="record")
    print(f"training throughput (batch {settings.batch_size}, {len(timing.train)} images per timed epoch)")
    vgg = None
    for spec in THROUGHPUT_MODELS:
        model = new_model(spec, data, args.quick)
        log, summary = train(model, timing, settings, device, scratch, "throughput")
        if len(log) < 2:
            print(f"  {spec}: diverged ({summary['diverged_at']}); no timed epoch")
            continue
        print(f"  {spec}: {len(timing.train) / log['seconds'].iloc[-1]:,.0f} images/s "
              f"(warm-up epoch {log['seconds'].iloc[0]:.1f} s, timed epoch {log['seconds'].iloc[-1]:.1f} s)", flush=True)
        if spec == "VGG16":
            vgg = model
    return vgg


def analysis_stages(model, data: Dataset, cfg: dict, device, scratch: Path, args) -> None:
    """Activation dump, probes and CKA of VGG16 as the workflow's rules run them."""
    dump = subset(data, args.dump_per_class, args.dump_per_class)
    h5 = scratch / "vgg16_activations.h5"
    times: dict[str, float] = {}
    n_images = len(dump.train) + len(dump.test)
    print(f"VGG16 analysis stages ({len(dump.train)} train + {len(dump.test)} test images)")
    act = cfg["activations"]
    with stage("activation dump", device, times):
        dump_activations(model, dump, h5, attrs={"seed": 0, "resolution": dump.resolution, "test_accuracy": float("nan")},
                         reduction=act["reduction"], batch_size=act["batch_size"], device=str(device), progress=False)
    size = h5.stat().st_size
    print(f"    {n_images / times['activation dump']:,.0f} images/s, {size / 2**20 / times['activation dump']:,.0f} MiB/s "
          f"({size / 2**30:.2f} GiB)")
    with stage("probes", device, times):
        probes = probe_table(h5, device=str(device), progress=False, **cfg["probes"])
    print(f"    {len(probes)} probe points, {times['probes'] / len(probes):.2f} s each, "
          f"test accuracy {probes['test_acc'].min():.3f}..{probes['test_acc'].max():.3f}")
    with stage("cka_output", device, times):
        cka_output_table(h5, split=cfg["cka"]["split"], debiased=cfg["cka"]["debiased"])
    with stage("minibatch CKA, every layer pair", device, times):
        all_pairs_cka(h5, cfg["cka"]["split"], cfg["cka"]["batch_size"], device)
    h5.unlink()


def all_pairs_cka(h5_path: Path, split: str, batch_size: int, device) -> np.ndarray:
    """The Fig. 9 estimator on every VGG16 layer pair (VGG16 has no parallel pathways)."""
    with open_activations(h5_path) as h5:
        names = probe_point_names(h5)
        layers = [features(h5, name, split) for name in names]
    mcka = MinibatchCKA(len(names), names_x=names, device=device)
    n = len(layers[0])
    for rows in np.array_split(np.arange(n), max(1, n // batch_size)):
        mcka.update([layer[rows] for layer in layers])
    return mcka.compute()


def fig7_full_scale(data: Dataset, cfg: dict, device, scratch: Path, args) -> None:
    """Fig. 7 as the workflow makes it: per model train → dump → probes → CKA, then the figure."""
    if args.max_per_class:
        data = subset(data, args.max_per_class, args.max_per_class)
    settings = TrainSettings(**cfg["train"])
    if args.epochs:
        settings = replace(settings, epochs=args.epochs)
    print(f"Fig. 7 at full scale: {settings.epochs} epochs on {len(data.train)} train / {len(data.test)} test images "
          "(the study: 30 epochs, full CIFAR-10)")
    members, results = [], []
    for run, (spec, study) in enumerate(STUDY_FIG7.items()):
        times: dict[str, float] = {}
        print(f"  {spec}")
        with stage("train", device, times):
            model = new_model(spec, data, args.quick)
            log, summary = train(model, data, settings, device, scratch, f"fig7_{run}")
        finished = log["seconds"].dropna()
        print(f"    {len(data.train) * len(finished) / finished.sum():,.1f} images/s over {len(finished)} epochs; "
              f"test accuracy {100 * summary['test_accuracy']:.2f} % (study {100 * study:.2f} %)", flush=True)
        files = fig7_analyses(model, data, cfg, device, scratch / f"fig7_{run}", summary, times)
        log.to_csv(files["train_log.csv"], index=False)
        members.append({"run": f"fig7_{run}", "seed": 0, "model": spec, "files": files})
        results.append((spec, summary["test_accuracy"], study, times))
    out = Path(args.out)
    with stage("figure", device, {}):
        table = figure_table(KINDS["pathway_probes"], members)
        draw_figure("pathway_probes", table, str(out / "fig7.pdf"), str(out / "fig7.png"),
                    title=f"Fig. 7 at full scale ({settings.epochs} epochs, {len(data.train)} training images)")
    print(f"    wrote {out / 'fig7.pdf'} and {out / 'fig7.png'}")
    print("\n| model | test accuracy | study | " + " | ".join(f"{k} s" for k in results[0][3]) + " |")
    print("|---|---:|---:|" + "---:|" * len(results[0][3]))
    for spec, acc, study, times in results:
        print(f"| {spec} | {100 * acc:.2f} % | {100 * study:.2f} % | " + " | ".join(f"{t:.1f}" for t in times.values()) + " |")


def fig7_analyses(model, data: Dataset, cfg: dict, device, folder: Path, summary: dict, times: dict) -> dict:
    """Dump, probes and CKA with the output of one Fig. 7 model; returns the per-run files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: str(folder / name) for name in ("train_log.csv", "probes.csv", "cka_output.csv")}
    h5, act = folder / "activations.h5", cfg["activations"]
    attrs = {"seed": 0, "resolution": data.resolution, "test_accuracy": float(summary["test_accuracy"])}
    with stage("dump", device, times):
        dump_activations(model, data, h5, attrs=attrs, reduction=act["reduction"], batch_size=act["batch_size"],
                         device=str(device), progress=False)
    print(f"    dump {(len(data.train) + len(data.test)) / times['dump']:,.1f} images/s, "
          f"{h5.stat().st_size / 2**30:.2f} GiB")
    with stage("probes", device, times):
        probe_table(h5, device=str(device), progress=False, **cfg["probes"]).to_csv(files["probes.csv"], index=False)
    with stage("cka_output", device, times):
        cka_output_table(h5, split=cfg["cka"]["split"], debiased=cfg["cka"]["debiased"]).to_csv(files["cka_output.csv"], index=False)
    h5.unlink()
    return files


def main() -> None:
    args = parse_args()
    device = resolve_device("auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU: these are not GPU numbers)"
    print(f"flowprobe GPU check on {name}; torch {torch.__version__}{'; --quick' if args.quick else ''}")
    if args.quick:
        args.train_images, args.dump_per_class = min(args.train_images, 200), min(args.dump_per_class, 10)
    cfg = pipeline_settings(args.quick)
    scratch = Path(args.out)
    scratch.mkdir(parents=True, exist_ok=True)
    start, times = time.perf_counter(), {}
    with stage("load CIFAR-10 image folder", device, times):
        data = load_dataset("imagefolder", root=args.root, resolution=32,
                            max_per_class=20 if args.quick else args.max_per_class)
    print(f"    {len(data.train)} train / {len(data.test)} test images, {data.num_classes} classes")
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        if not args.skip_throughput:
            vgg = training_throughput(data, cfg, device, Path(tmp), args)
            if vgg is not None:
                analysis_stages(vgg, data, cfg, device, Path(tmp), args)
        if args.fig7:
            fig7_full_scale(data, cfg, device, Path(tmp), args)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
