"""Where netsleuth keeps its per-kernel caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("NETSLEUTH_CACHE")
    if env:
        path = Path(env)
    elif os.geteuid() == 0:
        path = Path("/var/cache/netsleuth")
    else:
        path = Path.home() / ".cache" / "netsleuth"
    path.mkdir(parents=True, exist_ok=True)
    return path
