"""docs/output-drops.md names exactly the fields the drop probes emit (real records)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from probes.drop_details import DropDetails
from probes.drop_summary import DropSummary
from tests.netenv import send_icmp_echo, send_udp, settle, veth_ns

DOC = Path(__file__).resolve().parent.parent / "docs" / "output-drops.md"
pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")]


def table_after(marker: str, doc: Path = DOC) -> set[str]:
    """The backticked names in the first column of the first table after ``marker``."""
    text = doc.read_text()
    lines = text[text.index(marker):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    names: set[str] = set()
    for line in lines[start + 2:]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        names |= set(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return names


def test_documented_fields_are_the_emitted_ones():
    with veth_ns() as env:
        with DropSummary(dst_ip=env.peer_ip) as summary, DropDetails(dst_ip=env.peer_ip) as details:
            send_udp(env.peer_ip, 9999, 2)
            send_icmp_echo(env.peer_ip, 1, bad_checksum=True)
            settle()
            details.wait(0.2)
            (record,) = summary.read()
            drops = [r for r in details.read() if r["type"] == "drop"]
    assert set(record) - {"type"} == table_after("## `drop-summary`")
    assert set(record["entries"][0]) == table_after("Each entry:")
    assert drops and all(set(d) - {"type"} == table_after("`type: \"drop\"`") for d in drops)
