"""What every probe has: declared flags, a capability check, start/read/close.

The same object serves the CLI (`netsleuth probe NAME ...`) and the wizard,
which only sees flag specs, availability, and JSON-ready records.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

from .runtime import following
from .runtime import params as P
from .runtime import stop
from .runtime.attach import HOOK_MODES
from .runtime.kernel import KernelCaps, detect
from .runtime.loader import ProbeError, unload


@dataclass(frozen=True)
class Flag:
    """One command-line flag of a probe, also rendered as a form field by the wizard."""

    name: str  # long name without dashes: "src-ip"
    kind: str  # ipv4 | mac | port | protocol | interface | ifname | netns | choice | int | seconds | pid | tids | vlan | bool
    help: str
    short: str | None = None
    default: Any = None
    choices: tuple[str, ...] = ()
    lo: float = 0
    hi: float = 0
    required: bool = False
    label: str = ""  # the field's name in a form ("Destination port"); the flag is for the command line

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def title(self) -> str:
        """The human name: the label, or the flag's name in words."""
        return self.label or self.name.replace("-", " ").capitalize()

    def parse(self, value: Any) -> Any:
        """Validate one raw value (str from a form or argv); raise ParamError."""
        flag = "--" + self.name
        if self.required and value in (None, ""):
            raise MissingFlag(flag, self.help)
        if self.kind == "ipv4":
            return P.ipv4(flag, value)
        if self.kind == "mac":
            return P.mac(flag, value)
        if self.kind == "port":
            return P.port(flag, value)
        if self.kind == "protocol":
            return P.protocol(flag, value, self.choices or ("tcp", "udp", "icmp", "all"))
        if self.kind == "interface":
            return P.interface(flag, value)
        if self.kind == "ifname":
            return P.ifname(flag, value)
        if self.kind == "netns":
            return P.netns(flag, value)
        if self.kind == "choice":
            return P.choice(flag, value, self.choices, self.default)
        if self.kind == "int":
            return P.integer(flag, value, int(self.lo), int(self.hi), self.default)
        if self.kind == "seconds":
            return P.seconds(flag, value, self.lo, self.hi, self.default)
        if self.kind == "pid":
            return P.pid(flag, value)
        if self.kind == "tids":
            return P.thread_ids(flag, value)
        if self.kind == "vlan":
            return P.vlan(flag, value)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if value in (None, ""):
                return bool(self.default)
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise P.ParamError(flag, value, "true or false")
        raise ValueError(f"unknown flag kind {self.kind}")


class MissingFlag(P.ParamError):
    """A required flag was not given."""

    def __init__(self, flag: str, help_text: str):
        super().__init__(flag, None, help_text)
        self.args = (f"{flag} is required: {help_text}",)


# Flags several probes share, defined once.
SRC_IP = Flag("src-ip", "ipv4", "source IPv4 address", label="Source IP")
DST_IP = Flag("dst-ip", "ipv4", "destination IPv4 address", label="Destination IP")
SRC_PORT = Flag("src-port", "port", "source TCP/UDP port", label="Source port")
DST_PORT = Flag("dst-port", "port", "destination TCP/UDP port", label="Destination port")
L4_PROTOCOL = Flag("l4-protocol", "protocol", "L4 protocol: tcp, udp, icmp or all", default="all",
                   choices=("tcp", "udp", "icmp", "all"), label="Protocol")
PID = Flag("pid", "pid", "only threads of this process", short="p", label="Process (PID)")
TID = Flag("tid", "tids", "only these threads (thread ids, comma-separated; the flag can repeat)",
           label="Threads (TIDs)")
DURATION = Flag("duration", "seconds", "stop after this many seconds (default: until Ctrl-C)", short="d",
                lo=0.1, hi=31 * 86400, label="Run for (s)")


def interval_flag(default: float | None, help: str = "seconds between reports", label: str = "Report every (s)",
                  hi: float = 86400) -> Flag:
    """--interval: how often the probe reports; each probe says its default (None: no periodic report)."""
    return Flag("interval", "seconds", help, short="i", default=default, lo=0.1, hi=hi, label=label)
ATTACH = Flag("attach", "choice", "attach point: auto (best available), raw-tracepoint, tracepoint or kprobe",
              default="auto", choices=("auto", "raw-tracepoint", "tracepoint", "kprobe"), label="Attach point")

HOOK_ATTACH = Flag("attach", "choice", "how kernel functions are hooked: auto (BPF trampolines where the kernel "
                   "takes them, kprobes otherwise), fentry or kprobe", default="auto", choices=HOOK_MODES,
                   label="Attach by")


class Unavailable(ProbeError):
    """This host cannot run the probe; the message says what is missing and how to get it."""


OVS_MODULE_HINT = "is the openvswitch module loaded? `modprobe openvswitch`"


def kprobe_reason(caps: KernelCaps, functions: Iterable[str | tuple[str, ...]], what: str,
                  hint: str = OVS_MODULE_HINT) -> str | None:
    """Why kprobes on ``functions`` cannot be placed here, or None when they can.  An entry
    may be a tuple of alternatives (one function's names across kernels): any one will do."""
    if not caps.kprobes:
        return f"needs kprobes (CONFIG_KPROBES): {what}"
    groups = [(f,) if isinstance(f, str) else tuple(f) for f in functions]
    missing = [g[0] for g in groups if not any(caps.function(name) for name in g)]
    if missing:
        return "kernel functions missing: " + ", ".join(sorted(set(missing))) + f" ({hint})"
    return None


def btf_reason(caps: KernelCaps, what: str, instead: str) -> str | None:
    """Why a probe that reads ``what`` through BTF cannot run here, or None."""
    if caps.btf:
        return None
    return f"needs BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF) for {what}: {instead}"


def tracepoint_reason(caps: KernelCaps, tracepoints: Iterable[tuple[str, str]], hint: str) -> str | None:
    """Why ``tracepoints`` (category, event) cannot be used here, or None."""
    missing = [f"{c}:{e}" for c, e in tracepoints if not caps.tracepoint(c, e)]
    return f"tracepoints missing: {', '.join(missing)} ({hint})" if missing else None


@dataclass
class Options:
    raw: dict[str, Any] = field(default_factory=dict)  # as given (for the CLI equivalent)
    values: dict[str, Any] = field(default_factory=dict)  # validated

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


class SourceDefaults:
    """What the wizard's step loop asks of any source (wizard.contracts.ProbeSource) beyond
    start/wait/read/close, as a live probe answers it; a recorded run (wizard.replay) overrides it."""

    # Its wait returns as soon as events come (event probes; a replay at a pace).
    wakes_on_events: ClassVar[bool] = False
    # Nothing more to serve (a recorded run); a live probe runs until stopped.
    exhausted: bool = False
    # A recorded run's length, the part of it served, and its filters; None on a live probe.
    recorded_duration_s: float | None = None
    replayed_s: float | None = None
    recorded_params: dict | None = None

    def finish(self) -> None:
        """Called once after the last wait, before the last read (cpu-burst: a burst still going on)."""


class Probe(SourceDefaults):
    name: ClassVar[str]
    title: ClassVar[str]
    tier: ClassVar[int]
    cost: ClassVar[str]
    description: ClassVar[str]
    flags: ClassVar[tuple[Flag, ...]] = ()

    def __init__(self, caps: KernelCaps | None = None, **raw: Any):
        self.caps = caps or detect()
        self.options = self.parse_options(raw)
        self.bpf = None
        self.started_at: float | None = None
        self.following: following.Following | None = None

    @classmethod
    def parse_options(cls, raw: dict[str, Any]) -> Options:
        known = {f.dest: f for f in cls.flags}
        unknown = [k for k in raw if k not in known]
        if unknown:
            names = ", ".join("--" + k.replace("_", "-") for k in unknown)
            raise P.ParamError(names, raw[unknown[0]], f"a flag of {cls.name}")
        # Interface names are resolved in the namespace --netns names (ours when not given).
        ns_flag = next((f for f in cls.flags if f.kind == "netns"), None)
        ns = ns_flag.parse(raw.get(ns_flag.dest)) if ns_flag else None
        values = {dest: P.interface("--" + flag.name, raw.get(dest), ns) if flag.kind == "interface" and ns
                  else flag.parse(raw.get(dest)) for dest, flag in known.items()}
        given = {k: v for k, v in raw.items() if v not in (None, "", False)}
        return Options(given, values)

    # Whether the BPF program reads kernel struct fields (sk_buff, net_device...), whose
    # offsets come from BTF or from headers that match the running kernel.
    reads_kernel_structs: ClassVar[bool] = True

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        """None when the probe can run here, else what is missing and how to fix it."""
        if not caps.privileged:
            return "needs root (or CAP_BPF + CAP_PERFMON): run with sudo"
        if caps.lockdown == "confidentiality":
            return "kernel lockdown 'confidentiality' forbids BPF programs to read kernel memory: boot with lockdown=integrity"
        if cls.reads_kernel_structs and not (caps.btf or caps.matching_headers):
            return ("reads kernel structs but this kernel has no BTF and no matching headers: install "
                    "linux-headers-$(uname -r) (Debian/Ubuntu) or kernel-devel-$(uname -r) (RHEL/openEuler)")
        return None

    def command_line(self) -> str:
        """The equivalent `netsleuth probe ...` command."""
        parts = ["netsleuth", "probe", self.name]
        for f in self.flags:
            v = self.options.raw.get(f.dest)
            if v in (None, "", False) or v == f.default:
                continue
            parts.append("--" + f.name)
            if isinstance(v, (list, tuple)):  # a repeated flag (thread ids)
                parts.append(",".join(map(str, v)))
            elif f.kind != "bool":
                parts.append(str(v))
        return " ".join(shlex.quote(p) for p in parts)

    # lifecycle ------------------------------------------------------------
    def start(self) -> None:
        reason = self.unavailable_reason(self.caps)
        if reason:
            raise Unavailable(f"{self.name}: {reason}")
        self.started_at = time.monotonic()
        self.bpf = self.load()
        self.following = following.snapshot(self.bpf, self._devices(), self._pids())

    def _devices(self) -> list[following.Device]:
        ns_flag = next((f for f in self.flags if f.kind == "netns"), None)
        ns = self.options.values.get(ns_flag.dest) if ns_flag else None
        return [following.Device(f.name, str(self.options.raw[f.dest]), self.options.values[f.dest], ns)
                for f in self.flags if f.kind == "interface" and self.options.values.get(f.dest)]

    def _pids(self) -> list[int]:
        return [self.options.values[f.dest] for f in self.flags
                if f.kind == "pid" and self.options.values.get(f.dest)]

    def gone(self) -> str | None:
        """Why what the attached probe follows (a kernel module, a device, a process) is gone, or None."""
        return following.gone(self.following) if self.bpf is not None and self.following else None

    def load(self):  # pragma: no cover - each probe implements it
        raise NotImplementedError

    # Probes of a VM's own kernel (virtio-net) run inside the guest: the wizard shows the command
    # to run there and imports its --json file (wizard/guestimport.py).
    runs_in_guest: ClassVar[bool] = False

    # Event probes (one record per packet/wait) set this: the CLI prints as they come.
    streaming: ClassVar[bool] = False

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds for data (event probes poll their buffer here)."""
        stop.sleep(timeout)

    def read(self) -> list[dict]:
        """Records produced since the last call (JSON-ready dicts with a "type")."""
        raise NotImplementedError

    def describe_attach(self) -> str:
        """Where the probe is attached, in words (after start)."""
        hook = getattr(self, "hook", None)
        return hook.describe() if hook is not None else self.name

    def close(self) -> None:
        if self.bpf is not None:
            bpf, self.bpf = self.bpf, None
            unload(bpf)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # text output for the CLI ----------------------------------------------
    @staticmethod
    def format_text(record: dict) -> str:
        raise NotImplementedError


ProbeFactory = Callable[..., Probe]
