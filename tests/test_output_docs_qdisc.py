"""docs/output-qdisc.md names exactly the fields qdisc-drops emits (real records: a tbf
overflowing in a namespace of ours)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from probes.qdisc_drops import QdiscDrops
from tests.netenv import send_udp, veth_ns
from tests.test_output_docs_drops import table_after
from tests.test_qdisc_drops import add_qdisc

DOC = Path(__file__).resolve().parent.parent / "docs" / "output-qdisc.md"
pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")]


def test_documented_fields_are_the_emitted_ones():
    with veth_ns() as env:
        add_qdisc(env, "root", "tbf", "rate", "1mbit", "burst", "1600", "limit", "3000")
        with QdiscDrops(device=env.peer_if, netns=env.ns) as probe:
            send_udp(env.host_ip, 7300, 100, payload=b"x" * 1000, ns=env.ns)
            probe.wait(0.3)
            (record,) = probe.read()
    assert record["traced"] > 0 and record["flows"], "the tbf did not overflow"
    assert set(record) - {"type"} == table_after("## `type: \"qdisc_drop\"`", DOC)
    assert all(set(f) == {"flow", "count"} for f in record["flows"])
    options_row = next(line for line in DOC.read_text().splitlines() if line.startswith("| `options`"))
    assert set(record["options"]) <= set(re.findall(r"`([a-z_]+)`", options_row))
