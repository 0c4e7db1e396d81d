"""Analysing a trained model without training it: a run's `checkpoint:` becomes its model.pt.

The checkpoint is a state dict (torchvision's or the user's own) or a flowprobe model.pt. It
is loaded into the run's model (strictly: every key must fit), its test accuracy is measured
on the run's test split, and model.pt plus a one-row train_log.csv (epoch 0) are written, so
every later stage reads it as if the run had been trained here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from flowprobe.data import Batches, Dataset
from flowprobe.errors import ModelSpecError
from flowprobe.devices import resolve_device
from flowprobe.train import evaluate
from flowprobe.workflow import new_model, save_trained


def checkpoint_state(path: str | Path, spec: str) -> dict:
    """The state dict held by `path`; a flowprobe model.pt must be of the same model spec."""
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"checkpoint {path} does not exist; give the path of a state dict or a model.pt")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles of arbitrary objects are refused by weights_only
        raise ModelSpecError(f"checkpoint {path} is not a plain state dict ({str(err).splitlines()[0]}); "
                             "save it with torch.save(model.state_dict(), path)") from None
    if isinstance(record, dict) and "state_dict" in record:
        saved = (record.get("run") or {}).get("model", spec)
        if saved != spec:
            raise ModelSpecError(f"checkpoint {path} holds a {saved} but the run's model is {spec}; "
                                 "set the run's model to the checkpoint's")
        return record["state_dict"]
    return record


def import_checkpoint(path: str | Path, run: dict, data: Dataset, seed: int, model_path: str | Path,
                      log_path: str | Path, device: str | None = "auto") -> float:
    """Write model.pt and train_log.csv of a run from its checkpoint.

    Args:
        path: the checkpoint (state dict or flowprobe model.pt).
        run: the run's config (model, model_options, ...).
        data: the run's dataset (its test split measures the accuracy).
        seed: the run's seed (recorded; the weights come from the checkpoint).
        model_path, log_path: outputs.

    Returns:
        The checkpoint's test accuracy on `data`.
    """
    model = new_model(run, data, seed)
    try:
        model.load_state_dict(checkpoint_state(path, run["model"]))
    except RuntimeError as err:
        problem = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise ModelSpecError(f"checkpoint {path} does not fit {run['model']} ({problem}); its head must "
                             "have as many outputs as the dataset has classes") from None
    dev = resolve_device(device)
    model.to(dev)
    test = Batches(data.test, batch_size=256, mean=data.mean, std=data.std, device=dev)
    test_loss, test_acc = evaluate(model, test)
    summary = {"diverged": False, "diverged_at": "", "epochs": 0, "test_loss": test_loss,
               "test_accuracy": test_acc, "checkpoint": str(path)}
    save_trained(model_path, model.cpu(), run, seed, summary, data.classes)
    nan = float("nan")
    row = dict(epoch=0, lr=nan, train_loss=nan, train_acc=nan, test_loss=test_loss, test_acc=test_acc,
               seconds=0.0, diverged=0)
    pd.DataFrame([row]).to_csv(log_path, index=False)
    return test_acc
