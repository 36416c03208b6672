"""ctypes mirrors of the C structs probes send to user space, checked by the compiler.

A mirror names its C struct; every program that mentions the struct gets a
compile-time check of its size and of each field's offset, rendered from the
mirror, so a field added on one side fails the build, not the data, with a
one-line error that names the struct and both numbers (``mismatch``).
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


def _facts(mirror: type) -> list[tuple[str, str, int, str]]:
    """(C identifier, field or "" for the size, the mirror's number, the C expression) per fact checked."""
    struct = f"struct {mirror._c_struct_}"
    facts = [(f"ns_layout_{mirror._c_struct_}", "", ct.sizeof(mirror), f"sizeof({struct})")]
    for field in mirror._fields_:
        name = field[0]
        facts.append((f"ns_layout_{mirror._c_struct_}_at_{name}", name, getattr(mirror, name).offset,
                      f"__builtin_offsetof({struct}, {name})"))
    return facts


def c_checks(mirror: type) -> str:
    """C that compiles only when ``struct <mirror._c_struct_>`` has the mirror's size and offsets.
    Each fact is an array declared twice, its length from the mirror, then from the C: clang's
    error on a mismatch shows both numbers, which ``mismatch`` reads."""
    lines = [f"extern char {ident}[{value}];\nextern char {ident}[{expr}];"
             for ident, _, value, expr in _facts(mirror)]
    if mirror._c_when_:
        lines = [f"#if {mirror._c_when_}", *lines, "#endif"]
    return "\n".join(lines)


_REDECLARED = re.compile(r"redeclaration of '(ns_layout_\w+)' with a different type: "
                         r"'char\s*\[(\d+)\]' vs 'char\s*\[(\d+)\]'")


def mismatch(compiler_output: str, mirrors: dict[str, type] | None = None) -> str | None:
    """The first layout mismatch in clang's output in one line (the struct, C's number, the mirror's), or None."""
    m = _REDECLARED.search(compiler_output)
    if m is None:
        return None
    ident, in_c, in_mirror = m.group(1), m.group(2), m.group(3)
    for mirror in (MIRRORS if mirrors is None else mirrors).values():
        for name, field, _, _ in _facts(mirror):
            if name == ident:
                where = f"its ctypes mirror {mirror.__name__} ({mirror.__module__})"
                struct = f"struct {mirror._c_struct_}"
                if field:
                    return f"{struct}.{field} is at byte {in_c} in C but at byte {in_mirror} in {where}"
                return f"{struct} is {in_c} bytes in C but {in_mirror} bytes in {where}"
    return f"{ident}: {in_c} in C but {in_mirror} in its ctypes mirror"


def layout_checks(texts: Iterable[str], mirrors: dict[str, type] | None = None) -> str:
    """The layout checks of every mirrored struct that these C texts mention."""
    text = "\n".join(texts)
    mirrors = MIRRORS if mirrors is None else mirrors
    checks = [c_checks(m) for name, m in sorted(mirrors.items()) if re.search(rf"\bstruct\s+{name}\b", text)]
    return "\n/* ctypes mirrors (probes/runtime/layout.py) */\n" + "\n".join(checks) + "\n" if checks else ""
