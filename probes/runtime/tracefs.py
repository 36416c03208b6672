"""tracefs: where it is, mounting it, and reading tracepoint format files."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # EACCES for unprivileged users: as good as absent to them
        return False


@lru_cache(maxsize=1)
def root() -> Path | None:
    """The tracefs mount point, mounting it first when we are allowed to."""
    for path in CANDIDATES:
        if _is_dir(path / "events"):
            return path
    target = CANDIDATES[0]
    if _is_dir(target):
        # Quietly try: without privileges this fails and callers report tracefs missing.
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)],
                       capture_output=True, check=False)
        if _is_dir(target / "events"):
            return target
    return None


def tracepoint_exists(category: str, event: str) -> bool:
    base = root()
    return base is not None and (base / "events" / category / event / "format").is_file()


@dataclass(frozen=True)
class TracepointFormat:
    fields: dict[str, tuple[str, int, int]]  # name -> (C type, offset, size)
    print_fmt: str


def read_format(category: str, event: str) -> TracepointFormat | None:
    base = root()
    if base is None:
        return None
    try:
        text = (base / "events" / category / event / "format").read_text()
    except OSError:
        return None
    return parse_format(text)


def parse_format(text: str) -> TracepointFormat:
    fields = {}
    for m in re.finditer(r"field:([^;]+);\s*offset:(\d+);\s*size:(\d+);", text):
        decl = m.group(1).strip()
        name = re.sub(r"\[.*\]$", "", decl.split()[-1]).lstrip("*")
        ctype = decl[: decl.rfind(name)].strip()
        fields[name] = (ctype, int(m.group(2)), int(m.group(3)))
    pm = re.search(r"^print fmt: (.*)$", text, re.M)
    return TracepointFormat(fields, pm.group(1) if pm else "")


def parse_print_symbolic(print_fmt: str, field: str) -> dict[int, str]:
    """Value -> name table of ``__print_symbolic(REC->field, {v, "NAME"}, ...)``."""
    m = re.search(r"__print_symbolic\(REC->" + re.escape(field) + r"\s*,(.*?)\)\s*(?:,|$)", print_fmt, re.S)
    if not m:
        return {}
    return {int(v, 0): name for v, name in re.findall(r"\{\s*(-?(?:0x)?[0-9a-fA-F]+)\s*,\s*\"([^\"]*)\"\s*\}", m.group(1))}
