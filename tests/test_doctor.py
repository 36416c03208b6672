"""`netsleuth doctor` tells the truth about this host, and says how to fix what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probes.doctor import checks, format_text, report
from probes.runtime import direct_reads
from probes.runtime.kernel import KernelCaps, detect, drop_reason_names

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_doctor_json_matches_the_host():
    r = subprocess.run([sys.executable, "-m", "wizard.main", "doctor", "--json"], cwd=ROOT, capture_output=True, text=True)
    rep = json.loads(r.stdout)
    by_name = {c["name"]: c for c in rep["checks"]}
    assert by_name["btf"]["ok"] == Path("/sys/kernel/btf/vmlinux").exists()
    assert by_name["kprobes"]["ok"] == detect().kprobes
    assert by_name["drop reasons"]["detail"].startswith(str(len(drop_reason_names())))
    assert by_name["tracefs"]["ok"]
    assert by_name["direct reads"]["ok"] == (direct_reads.unavailable() is None)
    assert rep["tier1_ready"] is True and r.returncode == 0
    assert rep["probes"]["drop-summary"] is None


def _caps(**kw):
    base = dict(release="4.19.90", btf=False, matching_headers=None, tracefs="/sys/kernel/tracing", kprobes=True,
                raw_tracepoints=True, uprobes=True, drop_reasons={}, privileged=True)
    base.update(kw)
    return KernelCaps(**base)


def test_missing_offsets_blocks_tier1_and_says_how_to_fix():
    rep = report(_caps())
    offsets = next(c for c in rep["checks"] if c["name"] == "struct offsets")
    assert not offsets["ok"]
    assert "kernel-devel" in offsets["fix"] or "linux-headers" in offsets["fix"]
    assert rep["tier1_ready"] is False
    assert "Tier 1 cannot run" in format_text(rep)


def test_old_kernel_without_reasons_is_fine_with_headers():
    items = {c.name: c for c in checks(_caps(matching_headers="/lib/modules/4.19.90/build"))}
    assert not items["drop reasons"].ok and "stack location" in items["drop reasons"].disables
    assert items["struct offsets"].ok


def test_unprivileged_blocks_the_bpf_probes():
    rep = report(_caps(privileged=False, btf=True))
    assert rep["tier1_ready"] is False
    for name in ("drop-summary", "drop-details"):
        assert "root" in rep["probes"][name]
