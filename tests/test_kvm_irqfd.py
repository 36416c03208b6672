"""kvm-irqfd-stats-summary on this host: what it says where it cannot run (no kprobes here),
its flags' checks, its program against this kernel's verifier and kvm tracepoint formats,
and how it turns the kernel's per-CPU counters into records.  Its measurements are checked
against a real nested VM in the lab (tests/lab/vm_checks_kvm.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probes.kvm_irqfd import COUNTERS, FIELDS, KvmIrqfdSummary, posted_interrupts
from probes.runtime.attach import FunctionHooks
from probes.runtime.kernel import KernelCaps, detect
from probes.runtime.loader import load, unload
from probes.runtime.vmproc import is_kvm_process
from tests.netenv import our_bpf_programs
from tests.test_ovs_probes_unavailable import _caps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wizard.main", "probe", "kvm-irqfd-stats-summary", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_the_cli_says_this_host_has_no_kprobes():
    if detect().kprobes:
        pytest.skip("this kernel has kprobes")
    r = _cli("-d", "1")
    assert r.returncode == 3, r
    assert r.stderr.strip().splitlines() == [
        "netsleuth: cannot run here: kvm-irqfd-stats-summary: needs kprobes (CONFIG_KPROBES): "
        "on kvm's irqfd and vCPU functions"], r.stderr


def test_without_the_kvm_module_the_missing_functions_and_the_fix_are_named():
    reason = KvmIrqfdSummary.unavailable_reason(_caps(kprobes=True, functions={"irqfd_inject"}))
    assert reason.startswith("kernel functions missing: irqfd_wakeup, kvm_arch_set_irq_inatomic, "
                             "kvm_arch_vcpu_load ("), reason
    assert "modprobe kvm_intel" in reason and "modprobe kvm_amd" in reason, reason


def test_without_btf_it_says_so():
    fns = {"irqfd_wakeup", "irqfd_inject", "kvm_arch_set_irq_inatomic", "kvm_arch_vcpu_load"}
    reason = KvmIrqfdSummary.unavailable_reason(_caps(kprobes=True, functions=fns, btf=False,
                                                      matching_headers="/usr/src/linux-headers"))
    assert reason.startswith("needs BTF (/sys/kernel/btf/vmlinux"), reason
    assert KvmIrqfdSummary.unavailable_reason(_caps(kprobes=True, functions=fns, btf=True)) is None


def test_a_pid_that_is_no_kvm_process_is_refused_in_one_line():
    r = _cli("--pid", str(os.getpid()), "-d", "1")
    assert r.returncode == 2, r
    assert r.stderr.strip().splitlines() == [
        f"netsleuth probe kvm-irqfd-stats-summary: --pid: '{os.getpid()}' is not valid; expected the pid of a "
        "QEMU/KVM process (one that holds /dev/kvm)"], r.stderr
    r = _cli("--gsi", "-3")
    assert r.returncode == 2 and "--gsi" in r.stderr and "Traceback" not in r.stderr, r


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm")
def test_a_process_holding_dev_kvm_is_a_kvm_process():
    # O_PATH names the device without opening it (this host's /dev/kvm must not be used).
    child = subprocess.Popen([sys.executable, "-c",
                              "import os, sys; fd = os.open('/dev/kvm', os.O_PATH); print(fd, flush=True); "
                              "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        assert is_kvm_process(child.pid)
        assert not is_kvm_process(os.getpid())
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def test_posted_interrupts_are_read_from_the_module_parameters(tmp_path):
    assert posted_interrupts(tmp_path) is None  # no kvm_intel / kvm_amd loaded
    (tmp_path / "kvm_amd" / "parameters").mkdir(parents=True)
    (tmp_path / "kvm_amd" / "parameters" / "avic").write_text("0\n")
    assert posted_interrupts(tmp_path) is None
    (tmp_path / "kvm_intel" / "parameters").mkdir(parents=True)
    (tmp_path / "kvm_intel" / "parameters" / "enable_apicv").write_text("Y\n")
    assert posted_interrupts(tmp_path) == "kvm_intel.enable_apicv=Y"


CAPS = KernelCaps(release="t", btf=True, matching_headers=None, tracefs="/sys/kernel/tracing", kprobes=True,
                  raw_tracepoints=True, uprobes=True, drop_reasons={}, privileged=True)
needs_kvm_here = pytest.mark.skipif(
    os.geteuid() != 0 or not detect().tracepoint("kvm", "kvm_inj_virq"),
    reason="needs root and the kvm tracepoints (kvm built in or loaded)")


@pytest.fixture
def loaded():
    """The probe with its program loaded (tracepoints attached, no kprobes: none here)."""
    probe = KvmIrqfdSummary(caps=CAPS)
    probe.bpf = load("kvm_irqfd.bpf.c", probe.c_defines(), FIELDS)
    probe.hooks = FunctionHooks(probe.bpf, "kprobe")  # none attached
    probe.start_reading()
    try:
        yield probe
    finally:
        unload(probe.bpf)
        probe.bpf = None
    assert our_bpf_programs() == []


@pytest.mark.bpf
@needs_kvm_here
@pytest.mark.parametrize("gsi", [None, "0", "24"])
def test_the_program_passes_this_kernels_verifier(gsi):
    from bcc import BPF

    probe = KvmIrqfdSummary(caps=CAPS, gsi=gsi)
    bpf = load("kvm_irqfd.bpf.c", probe.c_defines(), FIELDS)
    try:
        for fn in ("on_irqfd_wakeup", "on_set_irq_inatomic_return", "on_irqfd_inject", "on_irqfd_inject_return",
                   "on_vcpu_load"):
            bpf.load_func(fn.encode(), BPF.KPROBE)
        assert bpf.num_open_tracepoints() == 3  # accept, apicv accept, inj_virq
    finally:
        unload(bpf)
    assert our_bpf_programs() == []


def _put_line(probe, pid, gsi, per_cpu):
    """Write (pid, gsi)'s per-CPU counters as the program would have left them."""
    table = probe.bpf[b"lines"]
    key = table.Key(pid, gsi)
    leaves = table.Leaf()  # BCC's per-CPU Leaf: one struct per possible CPU
    for leaf, (counts, slots) in zip(leaves, per_cpu):
        for name, v in counts.items():
            leaf.c[COUNTERS.index(name)] = v
        for slot, v in slots.items():
            leaf.slots[slot] = v
    table[key] = leaves


def _put_max(probe, pid, gsi, half, per_cpu_ns):
    table = probe.bpf[b"maxes"]
    leaves = table.Leaf(*per_cpu_ns)
    table[table.Key(pid, gsi, half, 0)] = leaves


@pytest.mark.bpf
@needs_kvm_here
def test_records_sum_the_cpus_and_report_deltas_and_the_intervals_max(loaded):
    from bcc.utils import get_possible_cpus

    ncpu = len(get_possible_cpus())  # BCC's per-CPU values: one per possible CPU
    cpus = [({}, {})] * ncpu
    cpus[0] = ({"signals": 7, "fast_path": 6, "slow_path": 1, "accepted": 7, "coalesced": 2, "injected": 5,
                "sum_ns": 5_000_000}, {9: 4})
    cpus[-1] = ({"signals": 3, "fast_path": 3, "accepted": 3, "injected": 3, "sum_ns": 3_000_000}, {17: 1, 9: 2})
    _put_line(loaded, 4242, 26, cpus)
    _put_max(loaded, 4242, 26, 0, [150_000_000] + [0] * (ncpu - 2) + [2_000_000])
    [r] = loaded.read()
    assert r["type"] == "irqfd_summary"
    assert (r["signals"], r["fast_path"], r["slow_path"], r["coalesced"], r["injected"]) == (10, 9, 1, 2, 8)
    [e] = r["entries"]
    assert (e["name"], e["pid"], e["gsi"]) == ("vm 4242 gsi 26", 4242, 26)
    assert e["count"] == 7 and e["injected"] == 8  # the histogram holds what its slots hold
    assert e["buckets"] == [{"low": 512, "high": 1024, "count": 6}, {"low": 131072, "high": 262144, "count": 1}]
    assert e["max_us"] == 150000.0 and e["max_us_since_start"] == 150000.0
    assert e["avg_us"] == 1000.0
    text = loaded.format_text(r)
    assert "10 signals, 8 injections timed, 2 coalesced, 1 slow path" in text and "vm 4242 gsi 26:" in text, text
    # The next interval: only what changed; the max slot read is gone, the other half is next.
    assert len(loaded.bpf[b"maxes"]) == 0
    cpus[0] = ({"signals": 8, "fast_path": 7, "slow_path": 1, "accepted": 8, "coalesced": 2, "injected": 6,
                "sum_ns": 5_000_100}, {9: 4, 0: 1})
    _put_line(loaded, 4242, 26, cpus)
    _put_max(loaded, 4242, 26, 1, [100_000] + [0] * (ncpu - 1))
    [r] = loaded.read()
    [e] = r["entries"]
    assert (e["signals"], e["injected"], e["count"], e["max_us"], e["max_us_since_start"]) == (1, 1, 1, 100.0, 150000.0)
    assert e["avg_us"] == 0.1
    [r] = loaded.read()
    assert r["entries"] == [] and r["signals"] == 0


@pytest.mark.bpf
@needs_kvm_here
def test_the_record_is_documented_field_by_field(loaded):
    from bcc.utils import get_possible_cpus

    _put_line(loaded, 4242, 26, [({"signals": 1, "accepted": 1, "injected": 1, "sum_ns": 9000}, {3: 1})]
              + [({}, {})] * (len(get_possible_cpus()) - 1))
    [r] = loaded.read()
    assert_documented(r)


def assert_documented(record: dict) -> None:
    """Every field of an irqfd_summary record and of its entries is in docs/output-virt.md, and
    nothing more (also used on the lab's real records)."""
    from tests.test_ovs_output_doc import documented

    assert set(record) == documented('"irqfd_summary"', VIRT_DOC)
    assert record["entries"], "an entry to check"
    for e in record["entries"]:
        assert set(e) == documented("Each entry", VIRT_DOC)


VIRT_DOC = Path(ROOT) / "docs" / "output-virt.md"
