"""Reading the JSON-lines files netsleuth appends to as it goes (session journals,
recordings): a crash can cut the last line short, and that must not lose the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def json_lines(lines: list[str], path: Path, error: type[Exception]) -> Iterator[tuple[int, Any]]:
    """(line number, object) for each non-blank line.  A last line that is not JSON after
    good ones is taken as cut short by a crash and skipped; any other bad line raises
    ``error`` naming the file and the line."""
    seen = False
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines) and seen:
                return
            raise error(f"{path}:{n}: not JSON ({e.msg})") from None
        seen = True
        yield n, obj
