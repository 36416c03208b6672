"""The loader on hosts that lack things: no BTF and no matching headers, no writable cache."""

from __future__ import annotations

import os
import pytest

from probes.runtime import btf, includes, offsets, paths
from probes.runtime.loader import ProbeError, load, program_text
from probes.runtime.params import CDefines
from tests.netenv import our_bpf_programs

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")


@pytest.fixture
def no_btf_no_headers(monkeypatch, tmp_path):
    missing = tmp_path / "no-such-btf"
    monkeypatch.setattr(btf, "VMLINUX_BTF", missing)
    monkeypatch.setattr(offsets, "VMLINUX_BTF", missing)
    monkeypatch.setattr(includes, "matching_headers", lambda *_: None)
    monkeypatch.setenv("NETSLEUTH_CACHE", str(tmp_path / "cache"))


@root_only
@pytest.mark.bpf
def test_programs_that_read_no_struct_need_neither_btf_nor_headers(no_btf_no_headers):
    from probes.futex import Futex

    with Futex(pid=str(os.getpid())) as probe:  # futex reads no kernel struct
        assert probe.bpf is not None
    assert our_bpf_programs() == []


def test_programs_that_read_structs_say_what_is_missing(no_btf_no_headers):
    with pytest.raises(ProbeError, match=r"no BTF .* and no kernel headers matching this kernel: install"):
        load("drop_summary.bpf.c", CDefines(), ["SKB_DEV"])


def test_unwritable_cache_falls_back_to_a_private_temporary_one(monkeypatch, tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    monkeypatch.setenv("NETSLEUTH_CACHE", str(blocked / "cache"))
    monkeypatch.setattr(paths.tempfile, "gettempdir", lambda: str(tmp_path))
    got = paths.cache_dir()
    assert got == tmp_path / f"netsleuth-{os.geteuid()}" and got.is_dir()
    assert got.stat().st_mode & 0o777 == 0o700


def test_main_file_includes_are_pasted_in():
    text = program_text("drop_details.bpf.c")
    assert '#include "netsleuth_events.inc.c"' not in text
    assert "BPF_ARRAY(credit, s64, 2);" in text and "static inline __attribute__((always_inline)) void ns_emit" in text
    assert '#include "netsleuth.h"' in text  # ordinary headers stay includes


def test_a_missing_program_is_a_probe_error():
    with pytest.raises(ProbeError, match="could not read the BPF program .*no-such.bpf.c"):
        program_text("no-such.bpf.c")


def test_without_btf_or_headers_only_probes_reading_structs_are_unavailable():
    import dataclasses

    from probes.offcpu import _choose_hook
    from probes.registry import PROBES
    from probes.runtime.kernel import detect

    caps = dataclasses.replace(detect(), btf=False, matching_headers=None, privileged=True)
    reasons = {name: cls.unavailable_reason(caps) for name, cls in PROBES.items()}
    assert "no BTF and no matching headers: install linux-headers" in reasons["drop-summary"]
    assert "no BTF and no matching headers" in reasons["drop-details"]
    for name in ("futex", "cpu-burst"):
        assert reasons[name] is None or "BTF" not in reasons[name], (name, reasons[name])
    assert _choose_hook(caps, "auto") == "tracepoint"  # the raw one reads task_struct


def test_confidentiality_lockdown_blocks_tier1_and_says_why():
    import dataclasses

    from probes.doctor import report
    from probes.runtime.kernel import detect

    caps = dataclasses.replace(detect(), lockdown="confidentiality", privileged=True)
    rep = report(caps)
    assert rep["tier1_ready"] is False
    (check,) = [c for c in rep["checks"] if c["name"] == "lockdown"]
    assert not check["ok"] and "lockdown=integrity" in check["fix"]
    assert "lockdown" in rep["probes"]["drop-summary"] and "lockdown" in rep["probes"]["futex"]
    assert rep["probes"]["cpu-burst"] is None  # psutil only: no BPF
