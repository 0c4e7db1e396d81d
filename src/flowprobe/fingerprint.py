"""Canonical settings and their fingerprints: one spelling per setting, one hash per spelling.

Snakemake decides whether a job's `params` changed by comparing `repr()` of each value, so a
dict written in another key order, or `momentum: 0` for the default `0.0`, would look like a
new setting and retrain. `canonical` gives every setting one spelling (keys sorted at every
depth, an int where the default is a float written as that float); `fingerprint` hashes that
spelling, for checkpoints and job-log headers. Pure Python: the Snakefile imports it.
"""

from __future__ import annotations

import hashlib
import json


def canonical(value, like=None):
    """`value` with dict keys sorted at every depth; ints become floats where `like` is a float.

    Args:
        value: a settings tree of dicts, lists and scalars (as read from YAML).
        like: the defaults tree of the same shape (or None): where it holds a float, an int
            in `value` (not a bool) is written as a float, so `0` and `0.0` are one setting.

    Returns:
        A new tree; lists keep their order (order is meaningful in lists).
    """
    if isinstance(value, dict):
        template = like if isinstance(like, dict) else {}
        return {key: canonical(value[key], template.get(key)) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def canonical_config(config: dict, defaults: dict) -> dict:
    """The validated workflow config in canonical form; every run is compared against the
    run defaults (`defaults["defaults"]`), the rest against `defaults` itself."""
    like = {**defaults, "runs": {name: defaults["defaults"] for name in config.get("runs", {})}}
    return canonical(config, like)


def fingerprint(value) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of `value` (order-insensitive)."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`key: old → new` for every leaf that differs between two settings trees (dotted keys)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b, name = old.get(key, "<unset>"), new.get(key, "<unset>"), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{name}.")
        elif canonical(a) != canonical(b):
            out.append(f"{name}: {a!r} → {b!r}")
    return out
