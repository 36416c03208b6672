"""Every ctypes mirror of a C struct is checked by the compiler (probes/runtime/layout.py):
a mirror that differs from its struct makes the real program fail to build."""

from __future__ import annotations

import ast
import ctypes as ct
import os
import re
from pathlib import Path

import pytest

import probes.registry  # noqa: F401 - imports every driver, so every mirror is registered
from probes.offcpu import BlockEvent, OffCpu
from probes.runtime.layout import MIRRORS, CMirror, c_checks, layout_checks, mismatch
from probes.runtime.loader import ProbeError, program_text
from probes.stage_latency import PktState

PROBES_DIR = Path(__file__).resolve().parent.parent / "probes"
C_TEXT = "\n".join(p.read_text() for p in sorted(PROBES_DIR.glob("*.[ch]")))


def test_every_ctypes_struct_in_probes_is_a_checked_mirror():
    direct = []
    for path in PROBES_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("ct.Structure", "ctypes.Structure")
                                                      for b in node.bases):
                direct.append(f"{path.name}:{node.name}")
    # bpf_syscall.py's are the bpf() syscall's own (uapi/linux/bpf.h), not our C: the kernel checks them.
    direct = [d for d in direct if not d.startswith("bpf_syscall.py:")]
    assert direct == ["layout.py:CMirror"], "subclass CMirror and name the C struct: " + ", ".join(direct)
    assert len(MIRRORS) >= 8
    for name, mirror in MIRRORS.items():
        assert issubclass(mirror, CMirror)
        assert re.search(rf"^struct {name} {{", C_TEXT, re.M), f"{mirror.__name__}: no struct {name} in probes/"


def conditions_around(text: str, struct: str) -> list[str]:
    """The preprocessor conditions a struct's definition stands under (include guards aside)."""
    stack: list[str] = []
    for line in text.splitlines():
        if re.match(r"#\s*if", line):
            stack.append(line)
        elif re.match(r"#\s*endif", line):
            stack.pop()
        elif line.startswith(f"struct {struct} {{"):
            return [c for c in stack if not re.match(r"#ifndef NETSLEUTH_H\b", c)]
    return []


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_a_struct_defined_under_a_condition_is_checked_under_it(name):
    """Else the checks name a struct the program does not have (offcpu --aggregate has no block_event)."""
    for path in sorted(PROBES_DIR.glob("*.[ch]")):
        if conditions_around(path.read_text(), name):
            assert MIRRORS[name]._c_when_, f"struct {name} is conditional in {path.name}: set _c_when_"
    assert conditions_around("#if A\nstruct x {\n};\n#endif\n", "x") == ["#if A"]


def test_a_program_gets_the_checks_of_the_structs_it_and_its_header_mention():
    text = program_text("drop_details.bpf.c")
    for name in ("drop_event", "ns_pkt", "ns_flow"):  # ns_*: from netsleuth.h
        assert f"[sizeof(struct {name})];" in text
    assert f"ns_layout_drop_event[{ct.sizeof(probes.drop_details.DropEvent)}];" in text
    assert "struct block_event" not in program_text("futex.bpf.c")
    assert layout_checks(["int x;"]) == ""


def test_a_layout_under_a_condition_is_checked_under_it():
    c = c_checks(PktState)
    assert c.startswith("#if NS_DETAILS\n") and c.endswith("\n#endif")
    assert (f"extern char ns_layout_pkt_state_at_ip_len[{PktState.ip_len.offset}];\n"
            "extern char ns_layout_pkt_state_at_ip_len[__builtin_offsetof(struct pkt_state, ip_len)];") in c


def _unregistered(fields) -> type:
    """A mirror of struct block_event that is not in MIRRORS (set by the test)."""
    return type("BadBlockEvent", (ct.Structure,), {"_c_struct_": "block_event", "_c_when_": "", "_fields_": fields})


SWAPPED = [(n, t) for n, t in BlockEvent._fields_]
SWAPPED[2], SWAPPED[3] = SWAPPED[3], SWAPPED[2]  # tgid <-> tid: same size, other offsets


def test_a_mismatch_in_the_compiler_output_is_one_line_naming_the_struct():
    out = ("/virtual/main.c:90:13: error: redeclaration of 'ns_layout_block_event' with a different type: "
           "'char[48]' vs 'char[40]'\nextern char ns_layout_block_event[sizeof(struct block_event)];\n")
    assert mismatch(out) == ("struct block_event is 48 bytes in C but 40 bytes in its ctypes mirror "
                             "BlockEvent (probes.offcpu)")
    assert mismatch(out.replace("ns_layout_block_event'", "ns_layout_block_event_at_tid'")).startswith(
        "struct block_event.tid is at byte 48 in C but at byte 40 in its ctypes mirror BlockEvent")
    assert mismatch("main.c:3:1: error: use of undeclared identifier 'x'") is None


@pytest.mark.bpf
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("fields, message", [
    (BlockEvent._fields_[:-1], r"struct block_event is (\d+) bytes in C but (\d+) bytes in its ctypes mirror "
                               r"BadBlockEvent \([\w.]*test_layout\)$"),
    (SWAPPED, r"struct block_event.tid is at byte (20) in C but at byte (16) in its ctypes mirror BadBlockEvent"),
], ids=["field-missing", "fields-swapped"])
def test_a_mismatched_mirror_fails_to_load_saying_where(monkeypatch, capfd, fields, message):
    with OffCpu(pid=os.getpid(), duration=1):  # the real mirror builds and loads
        pass
    monkeypatch.setitem(MIRRORS, "block_event", _unregistered(fields))
    with pytest.raises(ProbeError) as e:
        OffCpu(pid=os.getpid(), duration=1).start()
    line = str(e.value)
    assert line.startswith("could not load offcpu.bpf.c: ") and "\n" not in line
    m = re.search(message, line)
    assert m, line
    assert int(m.group(1)) != int(m.group(2))
    if fields is not SWAPPED:
        assert int(m.group(1)) == ct.sizeof(BlockEvent) and int(m.group(2)) < ct.sizeof(BlockEvent)
    assert "redeclaration of 'ns_layout_block_event" in capfd.readouterr().err  # clang's output still shown
