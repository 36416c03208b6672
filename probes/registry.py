"""All probes by name.  The CLI and the wizard look probes up here."""

from __future__ import annotations

from .base import Probe
from .cpu_burst import CpuBurst
from .cpu_starvation import CpuStarvation
from .drop_details import DropDetails
from .drop_summary import DropSummary
from .futex import Futex
from .kvm_irqfd import KvmIrqfdSummary
from .ovs_megaflow import OvsMegaflow
from .ovs_upcall import OvsUpcallSummary
from .offcpu import OffCpu
from .pthread_lock import PthreadLock
from .qdisc_drops import QdiscDrops
from .tun_ring import TunRingMonitor
from .system_latency import SystemLatencyDetails, SystemLatencySummary
from .vhost_eventfd import VhostEventfdCount
from .vhost_queue import VhostQueueCorrelationDetails
from .virtio_rx_path import VirtioRxPathMonitor
from .virtnet_poll import VirtnetPollMonitor
from .vm_latency import VmLatencyDetails, VmLatencySummary

PROBES: dict[str, type[Probe]] = {cls.name: cls for cls in (
    DropSummary, DropDetails, SystemLatencySummary, SystemLatencyDetails, VmLatencySummary, VmLatencyDetails,
    OvsUpcallSummary, OvsMegaflow, TunRingMonitor, OffCpu, Futex, PthreadLock, CpuBurst, QdiscDrops,
    VhostEventfdCount, VhostQueueCorrelationDetails,
    KvmIrqfdSummary, CpuStarvation, VirtnetPollMonitor, VirtioRxPathMonitor,
)}

