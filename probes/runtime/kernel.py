"""What the running kernel offers to probes: detected, never assumed."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import tracefs
from .btf import VMLINUX_BTF
from .includes import kernel_config, matching_headers


@lru_cache(maxsize=1)
def kallsyms() -> frozenset[str]:
    """Names of text symbols (functions) the kernel has, including modules'."""
    names = set()
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    names.add(parts[2])
    except OSError:
        pass
    return frozenset(names)


@lru_cache(maxsize=1)
def module_functions() -> dict[str, str]:
    """{function: module} for the functions of loaded modules (kallsyms' "[module]" column)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                if line.endswith("]\n"):
                    _addr, kind, name, module = line.split()[:4]
                    if kind in "tT":
                        out.setdefault(name, module.strip("[]"))
    except OSError:
        pass
    return out


def symbol_range(name: str) -> tuple[int, int] | None:
    """[start, end) address of a kernel text symbol: up to the next symbol (needs root:
    addresses read as zero otherwise)."""
    addrs = []
    start = None
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3 or parts[1] not in "tTwW":
                    continue
                addr = int(parts[0], 16)
                addrs.append(addr)
                if parts[2] == name and start is None:
                    start = addr
    except OSError:
        return None
    if not start:
        return None
    after = [a for a in addrs if a > start]
    return (start, min(after)) if after else None


def symbol_address(name: str) -> int | None:
    """Address of a kernel symbol of any kind (a function, or data such as an ops table),
    modules' included; None when absent or hidden (addresses read as zero without root)."""
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name:
                    return int(parts[0], 16) or None
    except OSError:
        pass
    return None


def function_symbol(name: str) -> tuple[str | None, str | None]:
    """(the kallsyms name to probe for function ``name``, why there is none).

    The function itself, or else its one ``.constprop.N`` clone (GCC dropped arguments that
    were constant: a hook must not read arguments from it).  An ``.isra.N`` or ``.part.N``
    clone alone is refused: its arguments were rewritten, or it is a fragment."""
    names = kallsyms()
    if name in names:
        return name, None
    clones = sorted(n for n in names if n.startswith(name + "."))
    constprop = [n for n in clones if n.startswith(name + ".constprop.")]
    if len(constprop) == 1:
        return constprop[0], None
    if constprop:
        return None, f"{name} exists only as several specialised copies ({', '.join(constprop)}): one kprobe cannot see every call"
    if clones:
        return None, f"{name} exists only as {clones[0]} (compiler-rewritten arguments or a fragment): cannot be probed reliably"
    return None, None


def has_function(name: str) -> bool:
    return name in kallsyms()


def _cap_eff() -> int:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^CapEff:\s*([0-9a-f]+)", text, re.M)
    return int(m.group(1), 16) if m else 0


CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


@dataclass(frozen=True)
class KernelCaps:
    release: str
    btf: bool
    matching_headers: str | None
    tracefs: str | None
    kprobes: bool
    raw_tracepoints: bool
    uprobes: bool
    drop_reasons: dict[int, str] = field(default_factory=dict)
    privileged: bool = False
    lockdown: str | None = None

    def tracepoint(self, category: str, event: str) -> bool:
        return tracefs.tracepoint_exists(category, event)

    def function(self, name: str) -> bool:
        return has_function(name)


def _kprobes_available(config: dict[str, str]) -> bool:
    base = tracefs.root()
    if base is not None and (base / "kprobe_events").exists():
        return True
    if Path("/sys/bus/event_source/devices/kprobe").exists():
        return True
    return config.get("CONFIG_KPROBES") == "y" and config.get("CONFIG_KPROBE_EVENTS") == "y"


def kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def kernel_hz(config: dict[str, str] | None = None) -> int:
    """Jiffies per second (CONFIG_HZ); 1000, the largest usual value, when the config is
    not exposed: a window of HZ jiffies then lasts at least a second."""
    value = (kernel_config() if config is None else config).get("CONFIG_HZ", "")
    return int(value) if value.isdigit() and 24 <= int(value) <= 10000 else 1000


def _lockdown() -> str | None:
    try:
        text = Path("/sys/kernel/security/lockdown").read_text()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def drop_reason_names() -> dict[int, str]:
    """Drop reason numbers -> names, as the running kernel prints them."""
    fmt = tracefs.read_format("skb", "kfree_skb")
    if fmt is None or "reason" not in fmt.fields:
        return {}
    return tracefs.parse_print_symbolic(fmt.print_fmt, "reason")


@lru_cache(maxsize=1)
def detect() -> KernelCaps:
    release = platform.release()
    config = kernel_config()
    base = tracefs.root()
    headers = matching_headers(release)
    caps = _cap_eff()
    privileged = os.geteuid() == 0 or bool(caps & (1 << CAP_SYS_ADMIN)) or (
        bool(caps & (1 << CAP_BPF)) and bool(caps & (1 << CAP_PERFMON))
    )
    return KernelCaps(
        release=release,
        btf=VMLINUX_BTF.exists(),
        matching_headers=str(headers) if headers else None,
        tracefs=str(base) if base else None,
        kprobes=_kprobes_available(config),
        raw_tracepoints=kernel_version(release) >= (4, 17),
        uprobes=(base is not None and (base / "uprobe_events").exists())
        or Path("/sys/bus/event_source/devices/uprobe").exists(),
        drop_reasons=drop_reason_names(),
        privileged=privileged,
        lockdown=_lockdown(),
    )
