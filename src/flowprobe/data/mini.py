"""cifar10-mini, the embedded default: read straight from data/cifar10-mini.tar.gz.

The archive (built by scripts/build_cifar10_mini.py) holds cifar10-mini/{train,test}/<class>/
NNNN.jpg, the original JPEG bytes. Members are read into memory (~5 MB) and decoded with PIL;
nothing is extracted. Index i of a split is its position in (class, file name) order.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from pathlib import Path

from flowprobe.data.pixels import open_bytes
from flowprobe.data.source import Source, image_split
from flowprobe.errors import DataError

ARCHIVE = "cifar10-mini.tar.gz"
# src/flowprobe/data/mini.py -> the repository's data/ folder
REPO_DATA = Path(__file__).resolve().parents[3] / "data"
MEMBER = re.compile(r"^(?:[^/]+/)?(train|test)/([^/]+)/([^/]+\.jpe?g)$", re.IGNORECASE)
REBUILD = f"python scripts/build_cifar10_mini.py <cifar10-jpg.tar.gz> --out {{path}} (data/README.md)"


def mini_archive(root: str | Path, default_root: str | Path) -> Path:
    """`root`/cifar10-mini.tar.gz; for the default root, fall back to the repository's data/."""
    path = Path(root) / ARCHIVE
    if not path.is_file() and Path(root) == Path(default_root):
        path = REPO_DATA / ARCHIVE
    return path.resolve()


def cifar10_mini(path: Path) -> Source:
    if not path.is_file():
        raise DataError(f"{path}: the cifar10-mini archive is missing; rebuild it with `{REBUILD.format(path=path)}`")
    files = _read_members(path)
    classes = sorted({cls for _, cls, _ in files})
    splits = []
    for split in ("train", "test"):
        members = sorted((cls, name, data) for (s, cls, name), data in files.items() if s == split)
        if not members:
            raise DataError(f"{path}: no {split}/ images inside; rebuild it with `{REBUILD.format(path=path)}`")
        items = [(f"{path}:{split}/{cls}/{name}", data) for cls, name, data in members]
        labels = [classes.index(cls) for cls, _, _ in members]
        splits.append(image_split(items, labels, _open_member, _member_name))
    return Source(classes=classes, train=splits[0], test=splits[1])


def _read_members(path: Path) -> dict[tuple[str, str, str], bytes]:
    """{(split, class, file name): JPEG bytes} of every image member of the archive."""
    files = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                match = MEMBER.match(member.name)
                if member.isfile() and match:
                    files[match.groups()] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"{path}: truncated or corrupt archive ({err}); rebuild it with `{REBUILD.format(path=path)}`"
        ) from err
    return files


def _open_member(item: tuple[str, bytes]):
    return open_bytes(item[1])


def _member_name(item: tuple[str, bytes]) -> str:
    return item[0]
