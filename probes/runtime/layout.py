"""ctypes mirrors of the C structs probes send to user space, checked by the compiler.

A mirror names its C struct; every program that mentions the struct gets a
``_Static_assert`` of its size and of each field's offset, rendered from the
mirror, so a field added on one side fails the build, not the data.
"""

from __future__ import annotations

import ctypes as ct
import re
from typing import ClassVar, Iterable

MIRRORS: dict[str, type] = {}  # C struct name -> its mirror


class CMirror(ct.Structure):
    """Base of a mirror: set ``_c_struct_`` (and ``_c_when_``, a C condition, when the
    struct has this layout only under it) beside ``_fields_``."""

    _c_struct_: ClassVar[str] = ""
    _c_when_: ClassVar[str] = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        name = cls._c_struct_
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise TypeError(f"{cls.__name__}: _c_struct_ must name the C struct it mirrors")
        if name in MIRRORS:
            raise TypeError(f"{cls.__name__}: struct {name} is already mirrored by {MIRRORS[name].__name__}")
        MIRRORS[name] = cls


def static_asserts(mirror: type) -> str:
    """C that compiles only when ``struct <mirror._c_struct_>`` has the mirror's size and offsets."""
    struct = f"struct {mirror._c_struct_}"
    where = f"{mirror.__name__} ({mirror.__module__})"
    lines = [f'_Static_assert(sizeof({struct}) == {ct.sizeof(mirror)}, '
             f'"{struct}: {ct.sizeof(mirror)} bytes in its ctypes mirror {where}");']
    for field in mirror._fields_:
        name = field[0]
        offset = getattr(mirror, name).offset
        lines.append(f'_Static_assert(__builtin_offsetof({struct}, {name}) == {offset}, '
                     f'"{struct}.{name}: at byte {offset} in its ctypes mirror {where}");')
    if mirror._c_when_:
        lines = [f"#if {mirror._c_when_}", *lines, "#endif"]
    return "\n".join(lines)


def layout_checks(texts: Iterable[str], mirrors: dict[str, type] | None = None) -> str:
    """The static asserts of every mirrored struct that these C texts mention."""
    text = "\n".join(texts)
    mirrors = MIRRORS if mirrors is None else mirrors
    checks = [static_asserts(m) for name, m in sorted(mirrors.items()) if re.search(rf"\bstruct\s+{name}\b", text)]
    return "\n/* ctypes mirrors (probes/runtime/layout.py) */\n" + "\n".join(checks) + "\n" if checks else ""
