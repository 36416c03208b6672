"""The network namespace netsleuth runs in: interface names and ifindexes mean
something only there, so device filters carry its inode along."""

from __future__ import annotations

import os


def current_netns() -> int:
    """Inode of this process's network namespace."""
    return os.stat("/proc/self/ns/net").st_ino
