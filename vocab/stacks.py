"""Stack frames as records carry them (``tun_get_user+0x4d2``)."""

from __future__ import annotations

import re


def function_of(frame: str) -> str:
    """``tun_get_user+0x4d2`` -> ``tun_get_user``."""
    return re.split(r"\+0x", frame, maxsplit=1)[0]
