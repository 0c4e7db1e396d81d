"""Job-log headers, progress lines and canonical settings (flowprobe.logs, flowprobe.fingerprint)."""
import logging
import re
import time

from flowprobe.config import DEFAULTS
from flowprobe.fingerprint import canonical, canonical_config, differences, fingerprint
from flowprobe.logs import job_header, previous_attempts, with_progress


def test_progress_in_a_log_is_plain_lines_with_rate_and_eta(caplog):
    batches = [([0] * 8, [1] * 8) for _ in range(5)]
    with caplog.at_level(logging.INFO, logger="flowprobe.progress"):
        seen = list(with_progress(batches, "epoch 2/3", size=lambda b: len(b[1]), every=0))
    assert seen == batches
    lines = caplog.messages
    assert len(lines) == 6 and "\r" not in "".join(lines)
    assert re.fullmatch(r"epoch 2/3: batch 3/5, \d+ img/s, ETA 0:00:00", lines[2]), lines[2]
    assert re.fullmatch(r"epoch 2/3 done in 0:00:00 \(\d+ img/s\)", lines[-1]), lines[-1]


def test_slow_stages_say_seconds_per_unit_to_the_last_line(caplog):
    """A probe point takes seconds: '0 points/s' would say nothing, on the progress lines or the last."""
    def slow(n):
        for i in range(n):
            time.sleep(0.02)
            yield i

    with caplog.at_level(logging.INFO, logger="flowprobe.progress"):
        list(with_progress(slow(3), "probes", step="probe point", unit="points", size=lambda _: 0.01, every=0))
    assert re.fullmatch(r"probes: probe point 2/\?, \d+\.\d s per point", caplog.messages[1]), caplog.messages[1]
    assert re.fullmatch(r"probes done in 0:00:00 \(\d+\.\d s per point\)", caplog.messages[-1]), caplog.messages[-1]


def test_progress_is_silent_when_short_or_disabled(caplog):
    with caplog.at_level(logging.INFO, logger="flowprobe.progress"):
        assert list(with_progress(range(4), "probes", step="probe point")) == [0, 1, 2, 3]  # < 30 s
        assert list(with_progress(range(4), "probes", enabled=False, every=0)) == [0, 1, 2, 3]
    assert caplog.messages == []


def test_job_header_names_run_settings_and_version_and_counts_attempts(tmp_path):
    settings = {"train": {"lr": 0.1, "epochs": 2}, "seed": 0}
    header = job_header("train", {"run": "vgg16", "seed": "0"}, settings, attempt=1)
    first, second = header.splitlines()
    assert re.fullmatch(r"==== flowprobe train \| run vgg16 seed 0 \| \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first)
    assert f"settings {fingerprint(settings)} | flowprobe 0.1.0 (commit " in second
    log = tmp_path / "job.log"
    assert previous_attempts(log) == 0
    log.write_text(header + "some lines\n")
    assert previous_attempts(log) == 1
    assert "(attempt 2; earlier attempts above)" in job_header("train", {}, settings, attempt=2)


def test_canonical_sorts_keys_and_spells_float_defaults_as_floats():
    like = {"train": {"momentum": 0.0, "epochs": 30, "augment": True}}
    value = {"train": {"momentum": 0, "epochs": 3, "augment": 1 == 1}, "opts": {"widths": [4, 8], "fc": 16}}
    out = canonical(value, like)
    assert list(out) == ["opts", "train"] and list(out["opts"]) == ["fc", "widths"]
    assert repr(out["train"]["momentum"]) == "0.0" and repr(out["train"]["epochs"]) == "3"
    assert out["train"]["augment"] is True
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1}) != fingerprint({"a": 1, "b": [2, 1]})


def test_canonical_config_uses_the_run_defaults_for_every_run():
    config = {"runs": {"b": {"train": {"weight_decay": 0}}, "a": {"train": {"lr": 1}}}, "probes": {"max_iter": 5}}
    out = canonical_config(config, DEFAULTS)
    assert list(out["runs"]) == ["a", "b"]
    assert repr(out["runs"]["b"]["train"]["weight_decay"]) == "0.0" and repr(out["runs"]["a"]["train"]["lr"]) == "1.0"
    assert repr(out["probes"]["max_iter"]) == "5"


def test_differences_name_each_changed_leaf():
    old = {"train": {"lr": 0.05, "epochs": 3}, "seed": 0, "model": {"options": {"widths": [4, 8]}}}
    new = {"train": {"lr": 0.01, "epochs": 3}, "seed": 0, "model": {"options": {"widths": [4, 16]}}}
    assert differences(old, new) == ["model.options.widths: [4, 8] → [4, 16]", "train.lr: 0.05 → 0.01"]


def test_slow_stages_report_seconds_per_unit_not_zero_per_second():
    from flowprobe.logs import _progress_line

    assert _progress_line("probes: probe point", 7, 14, 7, "points", 30.0) == (
        "probes: probe point 7/14, 4.3 s per point, ETA 0:00:30")
    assert _progress_line("epoch 1/2: batch", 200, 800, 12800, "img", 20.0) == (
        "epoch 1/2: batch 200/800, 640 img/s, ETA 0:01:00")
