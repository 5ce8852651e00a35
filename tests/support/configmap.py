"""A file published the way Kubernetes mounts a ConfigMap: DIR/..<stamp>/NAME holds the content, DIR/..data
is a symlink to the current ..<stamp>, and DIR/NAME -> ..data/NAME. An update writes a new ..<stamp>, swaps
..data to it atomically (a new link renamed over the old one) and deletes the old ..<stamp>."""

import itertools
import os
import shutil
from pathlib import Path

_stamps = itertools.count(1)


def publish(directory: Path, text: str, name: str = "tokens.toml") -> Path:
    """Publish `text` as DIR/NAME (first time: make the layout; after: swap ..data, delete the old version)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    version = f"..2026_12_06_{next(_stamps):06d}"
    (directory / version).mkdir()
    (directory / version / name).write_text(text)
    (directory / "..data_tmp").symlink_to(version)
    os.replace(directory / "..data_tmp", data)  # the atomic swap
    link = directory / name
    if not link.is_symlink():
        link.symlink_to(Path("..data") / name)
    if old is not None:
        shutil.rmtree(directory / old)
    return link
