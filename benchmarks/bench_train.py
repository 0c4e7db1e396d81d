"""flowprobe's training epoch vs a bare torch loop on the same model and batches (goal ≤ 5 %).

Three loops over the same `Batches` (same order and augmentation), each from the same initial
weights, with the same SGD optimizer (and bf16 autocast + channels_last on CUDA, as ours):
- bare torch: forward, cross-entropy, zero_grad, backward, step; nothing else;
- bare + 3 host syncs: the same with the three per-batch `.item()` calls the loop used to make
  (finiteness check, loss sum, hit count), to show what a sync per batch costs;
- flowprobe `train_epoch`: epoch streams seeded from (seed, epoch), loss and hits accumulated
  on the device, one transfer per epoch, progress lines (the log-file mode: a clock read per
  batch).
Prints one Markdown table. Usage:
  .venv/bin/python benchmarks/bench_train.py [--device auto] [--max-per-class 100] [--repeats 3]
"""
import argparse
import copy
import logging
import math
import time

import torch
from torch import nn

from flowprobe.data import Batches, load_dataset
from flowprobe.models import build_model
from flowprobe.train import TrainSettings, resolve_device, train_epoch


def bare_epoch(model, opt, batches, syncs: bool) -> None:
    model.train()
    cuda = batches.device.type == "cuda"
    loss_sum, correct = 0.0, 0
    for x, y in batches:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
        if syncs and not math.isfinite(loss.item()):
            raise RuntimeError("diverged")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if syncs:
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()


def timed(run, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="VGG16")
    ap.add_argument("--widths", default="16,32,64,128,128")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dataset", default="cifar10-mini")
    ap.add_argument("--root", default="data")
    ap.add_argument("--max-per-class", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress lines go somewhere real
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, root=args.root, max_per_class=args.max_per_class)
    torch.manual_seed(0)
    initial = build_model(args.model, 10, widths=tuple(int(w) for w in args.widths.split(","))).to(device)
    if device.type == "cuda":
        initial.to(memory_format=torch.channels_last)
    settings = TrainSettings(epochs=1, batch_size=args.batch_size, lr=0.01, momentum=0.9)
    batches = Batches(data.train, batch_size=args.batch_size, mean=data.mean, std=data.std,
                      shuffle=True, augment=True, device=device, seed=0)

    def loop(kind):
        model = copy.deepcopy(initial)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        batches.set_epoch(0)
        if kind == "ours":
            return lambda: train_epoch(model, opt, batches, 0, 0, settings, progress=True)
        return lambda: bare_epoch(model, opt, batches, syncs=kind == "syncs")

    kinds = {"bare": "bare torch loop", "syncs": "bare + 3 `.item()` syncs per batch", "ours": "flowprobe `train_epoch`"}
    times = {kind: [] for kind in kinds}
    timed(loop("bare"), device)  # warm-up: allocator, cuDNN autotuning, lazy init
    order = list(kinds)
    for _ in range(args.repeats):  # interleaved rounds, order rotated, fastest kept
        for kind in order:
            times[kind].append(timed(loop(kind), device))
        order = order[1:] + order[:1]
    n = len(data.train.labels)
    best = {kind: min(t) for kind, t in times.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} torch threads"
    print(f"\n{args.model} widths {args.widths}, {n} images/epoch, batch {args.batch_size}, {name}, "
          f"fastest of {args.repeats}\n")
    print("| loop | epoch (s) | images/s | vs bare |")
    print("|---|---|---|---|")
    for kind, label in kinds.items():
        print(f"| {label} | {best[kind]:.3f} | {n / best[kind]:.0f} | {best[kind] / best['bare'] - 1:+.1%} |")
    print(f"\nflowprobe overhead: {best['ours'] / best['bare'] - 1:+.1%} (goal ≤ +5 %)")


if __name__ == "__main__":
    main()
