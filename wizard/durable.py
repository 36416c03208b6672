"""Making a new or renamed file survive a crash: its directory entry is data too."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: str | Path) -> None:
    """fsync a directory, so a file just created or renamed in it is there after a power loss
    (fsyncing the file itself does not make its name durable)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
