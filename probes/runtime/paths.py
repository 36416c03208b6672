"""Where netsleuth keeps its per-kernel caches."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _preferred() -> Path:
    env = os.environ.get("NETSLEUTH_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/netsleuth")
    return Path.home() / ".cache" / "netsleuth"


def cache_dir() -> Path:
    """The cache directory, created if needed.  When it cannot be written (a read-only
    /var/cache, a bad NETSLEUTH_CACHE) a private one under the temporary directory is
    used instead: the caches only save time.  OSError when neither can be made."""
    for path in (_preferred(), Path(tempfile.gettempdir()) / f"netsleuth-{os.geteuid()}"):
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK | os.X_OK):
            return path
    raise OSError(f"no writable cache directory (tried {_preferred()} and the temporary directory)")
