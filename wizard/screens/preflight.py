"""Preflight: what this host can do (from `netsleuth doctor`) and what is on it, in plain words."""

from __future__ import annotations

from collections import Counter

from rich.markup import escape
from textual import work
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Static

from ..contracts import Backend
from ..widgets.panels import Failure
from .base import WizardScreen
from .messages import PreflightAccepted, PreflightDone


def doctor_text(rep: dict) -> str:
    """The doctor report as sentences: whether probes can run, which, then what is missing and its fix."""
    lines = []
    if rep.get("tier1_ready", True):
        lines.append("[green]✓[/green] The Summary probes (tier 1) can run on this host.")
    else:
        lines.append("[red]✗[/red] The Summary probes cannot run on this host yet: fix the items marked ✗.")
    probes = rep.get("probes", {})
    ready = [n for n, why in probes.items() if why is None]
    if ready:
        lines.append("[green]✓[/green] probes ready: " + escape(", ".join(ready)))
    missing = [n for n, why in probes.items() if why is not None]
    if missing:
        lines.append(f"– {len(missing)} probe(s) cannot run here; a step that needs one says why.")
    for c in rep.get("checks", []):
        if c["ok"]:
            continue
        mark = "[red]✗[/red]" if c.get("required_for_tier1") else "[yellow]–[/yellow]"
        text = f"{mark} {escape(c['name'])}: {escape(c['detail'])}"
        if c.get("disables"):
            text += f"\n    [dim]without it: {escape(c['disables'])}[/dim]"
        if c.get("fix"):
            text += f"\n    [dim]fix: {escape(c['fix'])}[/dim]"
        lines.append(text)
    return "\n".join(lines)


def replay_text(rep: dict) -> str:
    """What a recording holds, instead of this host's capabilities: nothing is loaded in a replay."""
    host = rep.get("host") or {}
    lines = [f"[b]Replay[/b] of {escape(rep['path'])}",
             f"recorded on {escape(str(host.get('hostname', '?')))}, kernel {escape(str(host.get('kernel', '?')))}",
             "No probe is loaded and nothing needs root: every probe step shows what was recorded."]
    if rep.get("symptom"):
        lines.append(f"recorded symptom: {escape(rep['symptom'])}")
    for r in rep.get("runs", []):
        dur = f"{r['duration_s']:g} s" if isinstance(r.get("duration_s"), (int, float)) else "?"
        lines.append(f"  • {escape(r['probe'])}: {r['records']} records over {dur} ({escape(str(r['status']))})")
    return "\n".join(lines)


def inventory_text(inv, replay: bool = False) -> str:
    kinds = Counter(i.kind for i in inv.interfaces)
    parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    lines = [f"Host [b]{escape(inv.hostname)}[/b], kernel {escape(inv.kernel)}",
             f"{len(inv.interfaces)} interfaces ({escape(parts)})"]
    if replay:  # VMs and OVS of the recorded host are not in a recording
        return "\n".join(lines + [f"[dim]{escape(n)}[/dim]" for n in inv.notes])
    if inv.vms:
        lines.append(f"{len(inv.vms)} VM(s): " + escape(", ".join(f"{v.name} ({', '.join(v.interfaces) or 'no tap'})"
                                                               for v in inv.vms)))
    else:
        lines.append("No QEMU/KVM virtual machine running.")
    if inv.ovs:
        lines.append(f"Open vSwitch: {len(inv.ovs.bridges)} bridge(s), ovs-vswitchd "
                     + (f"pid {inv.ovs.vswitchd_pid}, {len(inv.ovs.tids('handler'))} handler and "
                        f"{len(inv.ovs.tids('revalidator'))} revalidator threads" if inv.ovs.vswitchd_pid
                        else "not running"))
    else:
        lines.append("Open vSwitch: not found on this host.")
    lines += [f"[dim]{escape(n)}[/dim]" for n in inv.notes]
    return "\n".join(lines)


class PreflightScreen(WizardScreen):
    HEADING = "Preflight: what this host can do"
    HELP = ("netsleuth first checks what the running kernel offers the probes (the same checks as "
            "`netsleuth doctor`) and what is on the host: interfaces, VMs, Open vSwitch.")
    BINDINGS = [Binding("enter", "next", "Continue", priority=True)]

    def __init__(self, backend: Backend):
        super().__init__()
        self.backend = backend
        self._go_when_ready = False

    def heading(self) -> str:
        return "Replay: what was recorded" if self.backend.mode == "replay" else self.HEADING

    def body(self):
        with VerticalScroll(id="preflight-body"):
            yield Static("Looking at the host…", id="inventory")
            yield Static("Checking what the kernel offers…", id="doctor")
        with Horizontal(classes="buttons"):
            yield Button("Continue (Enter)", id="continue", variant="primary", disabled=True, compact=True)

    def on_mount(self) -> None:
        self.check()

    @work(thread=True, exclusive=True, group="preflight")
    def check(self) -> None:
        """In a thread (discovery runs commands); post_message is thread-safe."""
        rep = inv = None
        try:
            inv = self.backend.inventory()
        except Exception as exc:  # noqa: BLE001 - shown in the panel; the wizard works without pickers
            self.post_message(Failure(f"host discovery failed: {exc}", exc))
        try:
            rep = self.backend.preflight()
        except Exception as exc:  # noqa: BLE001
            self.post_message(Failure(f"the capability check failed: {exc}", exc))
        self.post_message(PreflightDone(rep, inv))

    def on_preflight_done(self, event: PreflightDone) -> None:
        rep, inv = event.doctor, event.inventory  # the app keeps them too (the message bubbles up)
        if inv is not None:
            self.query_one("#inventory", Static).update(inventory_text(inv, self.backend.mode == "replay"))
        if rep is not None:
            text = replay_text(rep) if rep.get("type") == "replay" else doctor_text(rep)
            self.query_one("#doctor", Static).update(text)
        button = self.query_one("#continue", Button)
        button.disabled = False
        button.focus()
        if self._go_when_ready:
            self.action_next()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.action_next()

    def action_next(self) -> None:
        if self.query_one("#continue", Button).disabled:
            self._go_when_ready = True  # Enter pressed early: go on as soon as the checks are done
            self.query_one("#continue", Button).label = "Checking… (continues by itself)"
            return
        self.post_message(PreflightAccepted())

    async def action_back(self) -> None:
        await self.run_action("app.quit")
