"""`netsleuth doctor`: what this host offers the probes, and how to fix what is missing."""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from . import drop_hook
from .registry import PROBES
from .runtime import direct_reads, fentry
from .runtime.kernel import KernelCaps, detect

EXIT_TIER1_OK, EXIT_TIER1_BLOCKED = 0, 4


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    disables: str = ""  # what does not work without it
    fix: str = ""  # the package or step that fixes it
    required_for_tier1: bool = False


def _distro_family() -> str:
    try:
        text = Path("/etc/os-release").read_text().lower()
    except OSError:
        return "debian"
    if any(k in text for k in ("rhel", "centos", "fedora", "openeuler", "anolis", "rocky", "alma")):
        return "rhel"
    return "debian"


def _pkg(debian: str, rhel: str) -> str:
    return f"apt install {debian}" if _distro_family() == "debian" else f"yum install {rhel}"


def _process_running(name: str) -> bool:
    try:
        import psutil
    except ImportError:
        return False
    return any(p.info["name"] == name for p in psutil.process_iter(["name"]))


def _bcc_version() -> str | None:
    try:
        import bcc
    except ImportError:
        return None
    return getattr(bcc, "__version__", "unknown")


def checks(caps: KernelCaps) -> list[Check]:
    release = platform.release()
    out = [Check("kernel", True, f"Linux {release} ({platform.machine()})")]
    out.append(Check(
        "privileges", caps.privileged,
        "running as root" if os.geteuid() == 0 else ("CAP_BPF + CAP_PERFMON" if caps.privileged else "not root"),
        disables="every probe", fix="run with sudo", required_for_tier1=True))
    bcc_version = _bcc_version()
    out.append(Check(
        "bcc", bcc_version is not None, f"bcc {bcc_version}" if bcc_version else "the bcc Python module is missing",
        disables="every probe",
        fix=_pkg("python3-bpfcc", "bcc python3-bcc") + "; use a venv made with --system-site-packages",
        required_for_tier1=True))
    out.append(Check(
        "tracefs", caps.tracefs is not None, caps.tracefs or "not mounted",
        disables="tracepoints, drop-reason names", fix="mount -t tracefs nodev /sys/kernel/tracing",
        required_for_tier1=True))
    out.append(Check(
        "btf", caps.btf, "/sys/kernel/btf/vmlinux present" if caps.btf else "no /sys/kernel/btf/vmlinux",
        disables="exact struct offsets without kernel headers",
        fix="a kernel built with CONFIG_DEBUG_INFO_BTF=y, or install matching headers"))
    headers_fix = ("apt install linux-headers-$(uname -r)" if _distro_family() == "debian"
                   else "yum install kernel-devel-$(uname -r)")
    out.append(Check(
        "kernel headers", caps.matching_headers is not None,
        f"matching: {caps.matching_headers}" if caps.matching_headers else
        "none matching this kernel (a stand-in include tree + BTF offsets are used instead)",
        disables="nothing while BTF is present; without BTF, every probe that reads packet headers",
        fix=headers_fix))
    out.append(Check(
        "struct offsets", caps.btf or caps.matching_headers is not None,
        "from BTF" if caps.btf else ("from matching headers" if caps.matching_headers else "unknown"),
        disables="every probe that reads sk_buff / net_device fields",
        fix="BTF (CONFIG_DEBUG_INFO_BTF) or " + headers_fix, required_for_tier1=True))
    out.append(Check(
        "kprobes", caps.kprobes, "available" if caps.kprobes else "not available (CONFIG_KPROBES unset)",
        disables="OVS datapath, tun/vhost and latency-stage probes, and the drop probes' kprobe path (--attach kprobe)",
        fix="a kernel with CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y (standard on distro kernels)"))
    no_trampolines = fentry.trial()
    out.append(Check(
        "BPF trampolines", no_trampolines is None,
        "fentry/fexit programs load (each hook: a trampoline, not a kprobe's trap)" if no_trampolines is None
        else no_trampolines,
        disables="nothing: the function hooks use kprobes and kretprobes instead (--attach auto), at a higher "
                 "cost per packet",
        fix="a kernel >= 5.11 with BTF that allows BPF_PROG_TYPE_TRACING (optional)"))
    no_direct_reads = direct_reads.unavailable()
    out.append(Check(
        "direct reads", no_direct_reads is None,
        "drop-summary reads kernel struct fields by plain loads (bpf_rdonly_cast)" if no_direct_reads is None
        else no_direct_reads,
        disables="nothing: drop-summary reads them with a helper call each, at a higher cost per drop",
        fix="a kernel >= 6.2 with BTF (optional)"))
    out.append(Check(
        "raw tracepoints", caps.raw_tracepoints, "kernel >= 4.17" if caps.raw_tracepoints else "kernel < 4.17",
        disables="cheaper sched_switch hooks (plain tracepoints are used)", fix="a kernel >= 4.17"))
    out.append(Check(
        "uprobes", caps.uprobes, "available" if caps.uprobes else "not available",
        disables="pthread-lock (user-space lock tracing)", fix="a kernel with CONFIG_UPROBE_EVENTS=y"))
    reasons = caps.drop_reasons
    out.append(Check(
        "drop reasons", bool(reasons),
        f"{len(reasons)} reason names from the skb:kfree_skb format" if reasons else
        "the kernel's kfree_skb has no reason field (kernels before 5.17)",
        disables="drop reason names: drops are classified by stack location only",
        fix="a kernel >= 5.17 (optional)"))
    hook = drop_hook.choose(caps, "auto")
    out.append(Check(
        "drop hook", not isinstance(hook, str), hook.describe() if not isinstance(hook, str) else hook,
        disables="drop-summary and drop-details", fix="mount tracefs, or a kernel with kprobes",
        required_for_tier1=True))
    ovs_mod = Path("/sys/module/openvswitch").exists()
    out.append(Check(
        "openvswitch module", ovs_mod, "loaded" if ovs_mod else "not loaded",
        disables="OVS datapath probes (upcall, megaflow, latency stages)",
        fix="modprobe openvswitch (" + _pkg("openvswitch-switch", "openvswitch") + ")"))
    vswitchd = _process_running("ovs-vswitchd")
    out.append(Check(
        "ovs-vswitchd", vswitchd, "running" if vswitchd else "not running",
        disables="OVS upcall / megaflow probes and the OVS thread analysis",
        fix="systemctl start openvswitch-switch"))
    tun = Path("/dev/net/tun").exists()
    out.append(Check("tun", tun, "/dev/net/tun present" if tun else "no /dev/net/tun",
                     disables="TUN ring probes", fix="modprobe tun"))
    vhost = Path("/sys/module/vhost_net").exists() or Path("/dev/vhost-net").exists()
    out.append(Check("vhost-net", vhost, "present" if vhost else "not loaded",
                     disables="vhost-eventfd-count and vhost-queue-correlation-details; "
                              "VMs on this host run virtio-net without vhost acceleration",
                     fix="modprobe vhost_net"))
    bpftool = shutil.which("bpftool")
    out.append(Check("bpftool", bpftool is not None, bpftool or "not installed",
                     disables="nothing in netsleuth (useful to check that probes detached)",
                     fix=_pkg("bpftool", "bpftool")))
    if caps.lockdown and caps.lockdown != "none":
        out.append(Check("lockdown", caps.lockdown != "confidentiality", f"kernel lockdown: {caps.lockdown}",
                         disables="every probe: 'confidentiality' lockdown forbids BPF programs to read "
                                  "kernel memory (bpf_probe_read_kernel)",
                         fix="boot with lockdown=integrity or none", required_for_tier1=True))
    return out


def probe_availability(caps: KernelCaps) -> dict[str, str | None]:
    return {name: cls.unavailable_reason(caps) for name, cls in sorted(PROBES.items())}


def report(caps: KernelCaps | None = None) -> dict:
    caps = caps or detect()
    items = checks(caps)
    tier1 = all(c.ok for c in items if c.required_for_tier1)
    return {
        "type": "doctor",
        "kernel": caps.release,
        "tier1_ready": tier1,
        "checks": [asdict(c) for c in items],
        "probes": probe_availability(caps),
    }


def format_text(rep: dict) -> str:
    lines = [f"netsleuth doctor — kernel {rep['kernel']}", ""]
    for c in rep["checks"]:
        mark = "ok " if c["ok"] else "-- "
        lines.append(f"  [{mark}] {c['name']:<18} {c['detail']}")
        if not c["ok"]:
            if c["disables"]:
                lines.append(f"         {'':<18} disables: {c['disables']}")
            if c["fix"]:
                lines.append(f"         {'':<18} fix: {c['fix']}")
    lines.append("")
    lines.append("Probes:")
    for name, why in rep["probes"].items():
        lines.append(f"  {name:<24} {'available' if why is None else 'unavailable: ' + why}")
    lines.append("")
    lines.append("Tier 1 (Summary) can run on this host." if rep["tier1_ready"]
                 else "Tier 1 cannot run on this host: fix the items marked -- that disable every probe.")
    return "\n".join(lines)


def run_doctor(as_json: bool) -> int:
    rep = report()
    print(json.dumps(rep, indent=2) if as_json else format_text(rep))
    return EXIT_TIER1_OK if rep["tier1_ready"] else EXIT_TIER1_BLOCKED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_doctor(False))
