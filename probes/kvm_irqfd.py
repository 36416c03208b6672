"""kvm-irqfd-stats-summary: latency of interrupts signalled through KVM irqfds (vhost's
"used buffers" signals, VFIO, ioeventfd-driven devices), from the signal to the vector
injected into the vCPU, per VM and interrupt line (gsi).  Path and record:
docs/output-virt.md."""

from __future__ import annotations

import ctypes as ct
from pathlib import Path

from vocab.hist import Log2Hist, render_text

from .base import DURATION, HOOK_ATTACH, Flag, Probe, btf_reason, interval_flag, kprobe_reason, tracepoint_reason
from .runtime import params as P
from .runtime import tracefs
from .runtime.attach import FunctionHooks
from .runtime.fentry import return_slot
from .runtime.counters import Deltas
from .runtime.kernel import KernelCaps
from .runtime.loader import ProbeError, load
from .runtime.offsets import OffsetsUnavailable, module_params
from .runtime.params import CDefines
from .runtime.vmproc import is_kvm_process

KVM_HINT = "is the kvm module loaded? `modprobe kvm_intel` or `modprobe kvm_amd`"
WAKEUP_FN, FAST_FN, SLOW_FN, VCPU_LOAD_FN = ("irqfd_wakeup", "kvm_arch_set_irq_inatomic", "irqfd_inject",
                                             "kvm_arch_vcpu_load")
TRACEPOINTS = (("kvm", "kvm_apic_accept_irq"), ("kvm", "kvm_inj_virq"))
# struct line_val's counter slots, in the order of the C enum (kvm_irqfd.bpf.c).
COUNTERS = ("signals", "fast_path", "slow_path", "no_target", "accepted", "coalesced", "posted",
            "injected", "untracked", "sum_ns")
FIELDS = ["IRQFD_KVM", "IRQFD_GSI", "IRQFD_WAIT", "IRQFD_INJECT", "KVM_USERSPACE_PID", "VCPU_KVM", "VCPU_ID"]
# Module parameters that turn on posted interrupts (the CPU injects: no kvm_inj_virq to time).
POSTED_PARAMS = (("kvm_intel", "enable_apicv"), ("kvm_amd", "avic"))
SLOTS = 32


def posted_interrupts(sysfs: Path = Path("/sys/module")) -> str | None:
    """``kvm_amd.avic=Y``-style name of the parameter that enables posted interrupts here, or None."""
    for module, param in POSTED_PARAMS:
        try:
            value = (sysfs / module / "parameters" / param).read_text().strip()
        except OSError:
            continue
        if value in ("Y", "1"):
            return f"{module}.{param}={value}"
    return None


class KvmIrqfdSummary(Probe):
    name = "kvm-irqfd-stats-summary"
    title = "KVM irqfd injection latency Summary"
    tier = 1
    cost = ("low: four hooks (trampolines or kprobes) per irqfd signal (not per packet) and two kvm tracepoints "
            "per interrupt")
    description = ("Latency from an irqfd signal to the vector injected into the vCPU (P50/P99/P99.9/max), "
                   "per VM and interrupt line, with fast-path, slow-path and coalesced counts.")
    flags = (
        Flag("pid", "pid", "only the VM of this QEMU/KVM process (one that holds /dev/kvm)", short="p",
             label="VM process (PID)"),
        Flag("gsi", "int", "only this interrupt line (a gsi, as the records name it; -1: every line)",
             default=-1, lo=0, hi=4095, label="Interrupt line (gsi)"),
        interval_flag(5.0),
        HOOK_ATTACH,
        DURATION,
    )

    @classmethod
    def parse_options(cls, raw):
        options = super().parse_options(raw)
        pid = options.values["pid"]
        if pid and not is_kvm_process(pid):
            raise P.ParamError("--pid", raw.get("pid"), "the pid of a QEMU/KVM process (one that holds /dev/kvm)")
        return options

    @classmethod
    def unavailable_reason(cls, caps: KernelCaps) -> str | None:
        reason = super().unavailable_reason(caps) or kprobe_reason(
            caps, (WAKEUP_FN, FAST_FN, SLOW_FN, VCPU_LOAD_FN), "on kvm's irqfd and vCPU functions", KVM_HINT)
        return reason or btf_reason(caps, "the layout of kvm's structs", "use a kernel built with BTF") \
            or tracepoint_reason(caps, TRACEPOINTS, KVM_HINT)

    def c_defines(self) -> CDefines:
        o = self.options
        inj = tracefs.read_format("kvm", "kvm_inj_virq")
        if inj is None or not ({"vector", "irq"} & set(inj.fields)):
            raise ProbeError("kvm:kvm_inj_virq has neither a `vector` nor an `irq` field on this kernel")
        flags = {"vector", "soft", "reinjected"} <= set(inj.fields)
        if not flags and "irq" not in inj.fields:
            raise ProbeError("kvm:kvm_inj_virq has an unknown format (a `vector` without soft/reinjected)")
        try:
            params = module_params("kvm", VCPU_LOAD_FN)
        except OffsetsUnavailable:
            params = ("vcpu", "cpu")  # unchanged since 2.6; BTF may not list a static function
        vcpu_arg = params.index("vcpu") + 1 if "vcpu" in params else 1
        return (CDefines().set("NS_F_PID", o.pid).set("NS_F_GSI_ON", o.gsi >= 0)
                .set("NS_F_GSI", max(o.gsi, 0)).set("NS_INJ_HAS_FLAGS", flags).set("NS_VCPU_ARG", vcpu_arg)
                .set("NS_HAS_APICV_TP", self.caps.tracepoint("kvm", "kvm_apicv_accept_irq"))
                .set("NS_RET_AT_SET_IRQ_INATOMIC", return_slot(FAST_FN)))

    def load(self):
        bpf = load("kvm_irqfd.bpf.c", self.c_defines(), FIELDS)
        self.hooks = FunctionHooks(bpf, self.options.values.get("attach", "auto"))
        self.hooks.entry(WAKEUP_FN, "on_irqfd_wakeup")
        self.hooks.exit(FAST_FN, "on_set_irq_inatomic_return")
        self.hooks.entry(SLOW_FN, "on_irqfd_inject")
        self.hooks.exit(SLOW_FN, "on_irqfd_inject_return")
        self.hooks.entry(VCPU_LOAD_FN, "on_vcpu_load")
        self.start_reading()
        return bpf

    def start_reading(self) -> None:
        """Nothing read yet: every count is a delta against what was read last."""
        self._seen = Deltas()  # (pid, gsi) -> counters + histogram slots
        self._run_max_ns: dict[tuple[int, int], int] = {}
        self._epoch = 0
        self._posted = posted_interrupts()

    def describe_attach(self) -> str:
        return f"{self.hooks.describe()}; tracepoints kvm:kvm_apic_accept_irq, kvm:kvm_inj_virq"

    def _totals(self) -> dict[tuple[int, int], list[int]]:
        """(pid, gsi) -> counters + histogram slots since start, summed over CPUs."""
        out = {}
        for k, per_cpu in self.bpf[b"lines"].items():
            acc = [0] * (len(COUNTERS) + SLOTS)
            for v in per_cpu:
                for i in range(len(COUNTERS)):
                    acc[i] += v.c[i]
                for i in range(SLOTS):
                    acc[len(COUNTERS) + i] += v.slots[i]
            out[(k.pid, k.gsi)] = acc
        return out

    def _interval_max_ns(self) -> dict[tuple[int, int], int]:
        """Each line's slowest injection since the last read (ovs_upcall.py explains the halves)."""
        half = self._epoch & 1
        self._epoch += 1
        self.bpf[b"epoch"][ct.c_int(0)] = ct.c_uint64(self._epoch)
        table = self.bpf[b"maxes"]
        out = {}
        for k, per_cpu in list(table.items()):
            if k.half != half:
                continue
            out[(k.pid, k.gsi)] = max(per_cpu)
            del table[k]
        return out

    def read(self) -> list[dict]:
        maxes = self._interval_max_ns()
        entries = []
        totals = dict.fromkeys(COUNTERS[:-1], 0)
        for key, acc in sorted(self._totals().items()):
            delta = self._seen.of(key, acc)
            if not any(delta):
                continue
            counts = dict(zip(COUNTERS, delta))
            sum_ns = counts.pop("sum_ns")
            for name in totals:
                totals[name] += counts[name]
            max_ns = maxes.get(key, 0)
            self._run_max_ns[key] = max(self._run_max_ns.get(key, 0), max_ns)
            hist = Log2Hist({i: c for i, c in enumerate(delta[len(COUNTERS):]) if c})
            pid, gsi = key
            entries.append({
                "name": f"vm {pid} gsi {gsi}", "pid": pid, "gsi": gsi, **counts,
                "avg_us": round(sum_ns / counts["injected"] / 1000, 1) if counts["injected"] else None,
                "max_us": round(max_ns / 1000, 1) if max_ns else None,
                "max_us_since_start": round(self._run_max_ns[key] / 1000, 1) if self._run_max_ns[key] else None,
                **hist.summary(),
            })
        return [{
            "type": "irqfd_summary",
            # Posted interrupts (APICv/AVIC) reach the guest without a kvm_inj_virq: counted, not timed.
            "posted_interrupts": self._posted,
            **totals,
            "entries": entries,
            **self.hooks.record(),
        }]

    def format_text(self, r: dict) -> str:
        lines = [f"=== KVM irqfd interrupts: {r['signals']} signals, {r['injected']} injections timed, "
                 f"{r['coalesced']} coalesced, {r['slow_path']} slow path, {r['no_target']} reached no vCPU ==="]
        if r["posted_interrupts"]:
            lines.append(f"posted interrupts on ({r['posted_interrupts']}): {r['posted']} posted, not timed")
        for e in r["entries"]:
            lines.append(f"{e['name']}: signals {e['signals']} (fast {e['fast_path']}, slow {e['slow_path']}, "
                         f"no vCPU {e['no_target']}), accepted {e['accepted']}, coalesced {e['coalesced']}, "
                         f"injected {e['injected']}, untracked {e['untracked']}")
            if e["count"]:
                lines.append(f"  P50 {e['p50']}  P99 {e['p99']}  P99.9 {e['p99_9']}  max {e['max_us']} us "
                             f"(since start {e['max_us_since_start']} us)")
                lines.append(render_text(Log2Hist.from_buckets(e["buckets"])))
        return "\n".join(lines)
