"""The autopilot: walk a symptom's playbook with no human, run the probes, write the report.

At a question it takes the playbook's default answer; after a step it takes
the top suggestion that can run here.  It stops when no runnable suggestion is
left (or after ``max_steps``), then writes the report.  Everything goes to the
session journal as it happens, and with ``record`` every probe record goes to
a recording that ``netsleuth replay`` can play back.

Exit codes (also `netsleuth diagnose --help`, docs/autopilot.md):
  0  a cause was found (a finding that explains the symptom)
  1  error: a probe broke while running, or the report could not be written
  2  bad command line (a flag's value; the message names it)
  3  the first probe cannot run on this host (not root, kernel lacks a feature)
  4  the walk finished without finding a cause (steps skipped for a value this host could
     not supply say which value and why)
  5  interrupted (Ctrl-C, SIGTERM, SIGHUP) before a cause was found; the report has what was seen

Values a step needs that the user did not give come from the host where it knows them
(hostvalues.py: the physical NIC, ovs-vswitchd's pid, the VM's tap); a step whose value is
still missing or not valid here is "skipped", with the reason, and is no error.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Callable

from playbooks.engine import StepView, Walk
from playbooks.model import Library, Question
from probes.runtime.stop import ProbeStopped
from probes.runtime.params import ParamError

from .contracts import PilotBackend
from .flagnames import dests
from .guestimport import guest_command, guest_hint, runs_in_guest
from .replay import Recorder, generic_command
from .report import CONCLUSION_HEADS, build_report, write_reports
from .session import Session
from .steprun import run_source

EXIT_CAUSE, EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_NO_CAUSE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5
EXIT_CODES_HELP = ("exit codes: 0 cause found, 1 error (a probe broke while running, or the report could not be "
                   "written), 2 bad command line, 3 the first probe cannot run on this host, 4 no cause found "
                   "(steps skipped for a value this host could not supply included), "
                   "5 interrupted before a cause was found")
MAX_STEPS = 8


@dataclass
class AutopilotResult:
    exit_code: int
    summary: str
    reports: dict[str, str] = field(default_factory=dict)
    session: str | None = None
    statuses: list[str] = field(default_factory=list)


def command_for(backend: PilotBackend) -> Callable[[str, dict], str]:
    """The `netsleuth probe ...` command of a probe with flag-keyed params: the probe's own
    command_line() where this host can build it, else spelled out from the params."""
    def command(probe: str, params: dict) -> str:
        try:
            return backend.command_line(probe, dests(params))
        except Exception:  # not implemented here, or a value only valid on another host
            return generic_command(probe, params)
    return command


class Autopilot:
    def __init__(self, lib: Library, backend: PilotBackend, duration: float | None = None,
                 recorder: Recorder | None = None, log: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None):
        self.lib = lib
        self.backend = backend
        self.duration = duration
        self.recorder = recorder
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.stop = stop or threading.Event()
        self.failed: list[tuple[str, dict]] = []
        self.ran: list[tuple[str, dict]] = []  # steps that ran, with their params
        self.command = command_for(backend)
        self.unknown: dict[str, str] = {}  # context field -> why this host cannot supply it

    def _why_missing(self, view: StepView, error: ParamError) -> str:
        """The step's flag that was missing or bad, and why the host could not supply it."""
        step = self.lib.steps[view.ref]
        flag = (error.args[0] or "").split(" ", 1)[0].split(":", 1)[0].lstrip("-")
        fields = [f for p in step.params if p.flag == flag for f in p.context_fields]
        why = "; ".join(f"{f}: {self.unknown[f]}" for f in fields if f in self.unknown)
        return f"{error}" + (f" ({why})" if why else "")

    def _probe_has(self, probe: str, flag: str) -> bool:
        return any(f.name == flag for f in self.backend.flags(probe))

    def run_step(self, walk: Walk, view: StepView) -> str:
        """Run the walk's current step for real (or from the recording); returns its status."""
        if view.unavailable:
            error, command = view.unavailable, self.command(view.probe, view.params)
            if runs_in_guest(view.probe):
                error = f"{error}; {guest_hint(view.probe, view.duration)}"
                command = guest_command(view.probe, view.duration)
            self.log(f"  cannot run {view.probe} here: {error}")
            walk.complete("unavailable", error=error, params=view.params, command=command)
            return "unavailable"
        duration = self.duration or view.duration
        values = dests(view.params)
        if self._probe_has(view.probe, "duration"):
            # so the command line reproduces the run's length
            values["duration"] = int(duration) if float(duration).is_integer() else duration
        try:
            source = self.backend.build(view.probe, values)
        except ParamError as e:  # a value this host could not supply, or one not valid here: no broken probe
            error = "skipped: " + self._why_missing(view, e)
            self.log(f"  {error}")
            walk.complete("skipped", error=error, params=view.params, command=self.command(view.probe, view.params))
            return "skipped"
        except KeyError as e:
            error = str(e.args[0])
            self.log(f"  cannot start {view.probe}: {error}")
            walk.complete("error", error=error, params=view.params, command=self.command(view.probe, view.params))
            return "error"
        command = source.command_line()
        recorded = source.recorded_duration_s
        self.log(f"  running: {command}  " + (f"(replaying a recorded run of {recorded:g} s)" if recorded is not None
                                              else f"({duration:g} s)"))
        run_id = self.recorder.start_run(view.probe, view.params, view.ref, command) if self.recorder else None
        on_records = (lambda t, recs: self.recorder.records(run_id, t, recs)) if self.recorder else None
        outcome = run_source(source, view.probe, self.lib.probes[view.probe], duration, self.stop, on_records)
        if self.recorder:
            self.recorder.end_run(run_id, outcome.status, outcome.duration_s, outcome.error)
        ran_with = source.recorded_params or view.params  # a replay: what was recorded
        findings = walk.complete(outcome.status, outcome.result, outcome.duration_s, outcome.started, outcome.error,
                                 command, ran_with, outcome.attached)
        if outcome.error:
            self.log(f"  {outcome.status}: {outcome.error}")
        for f in findings:
            self.log(f"  [{f.level}] {f.title}")
        return outcome.status

    def next_step(self, walk: Walk) -> StepView | None:
        """The top runnable suggestion; else, when this step could not run, the step that stands in for it."""
        instead = walk.fallbacks()
        for s in walk.suggestions() + instead:
            if s.unavailable is None and not any(r == s.ref and p == s.params for r, p in self.failed):
                if s in instead:
                    if (s.ref, s.params) in self.ran:  # it would only repeat what the walk measured
                        self.log(f"  instead: {s.title} [{s.probe}] already ran with these filters")
                        continue
                    self.log(f"  instead, what can run here: {s.title} [{s.probe}]")
                return s
        return None

    def walk(self, walk: Walk, max_steps: int = MAX_STEPS) -> list[str]:
        statuses: list[str] = []
        try:
            while len(statuses) < max_steps and not self.stop.is_set():
                node = walk.current
                if isinstance(node, Question):
                    i = node.default_index
                    self.log(f"{node.ask} → {node.answers[i].say}")
                    walk.answer(i)
                    continue
                if walk.current_result is None:
                    self.log(f"step {len(statuses) + 1}: {node.title} [{node.probe}, tier {node.tier}]")
                    status = self.run_step(walk, node)
                    statuses.append(status)
                    if status == "stopped":
                        break
                    if status != "ok":
                        self.failed.append((node.ref, node.params))
                    else:
                        self.ran.append((node.ref, node.params))
                nxt = self.next_step(walk)
                if nxt is None:
                    break
                walk.choose(nxt)
        except (KeyboardInterrupt, ProbeStopped):
            self.log("interrupted: writing the report with what was found so far")
            statuses.append("stopped")
        return statuses


def exit_code(cause_found: bool, statuses: list[str]) -> int:
    if cause_found:
        return EXIT_CAUSE
    if "stopped" in statuses:  # a run or the walk was interrupted: the rest was not tried
        return EXIT_INTERRUPTED
    if "error" in statuses:  # a probe broke while running (a step skipped for a value is no error)
        return EXIT_ERROR
    if statuses and statuses[0] == "unavailable" and "ok" not in statuses:
        return EXIT_UNAVAILABLE
    return EXIT_NO_CAUSE


def _host_values(lib: Library, backend: PilotBackend, context: dict, host: dict) -> tuple[dict, dict, list[str]]:
    """The context with what this host knows added (also in the report's host facts), why the
    rest could not be known, and the lines that say what was found."""
    hv = backend.host_values(context)
    if hv is None:
        return context, {}, []
    found = {k: v for k, v in hv.values.items() if k in lib.context}
    if found:
        host["found_here"] = "; ".join(f"{k} = {v} ({hv.how[k]})" for k, v in found.items())
    return {**context, **found}, hv.unknown, [f"from this host: {k} = {v} ({hv.how[k]})" for k, v in found.items()]


def run_autopilot(lib: Library, backend: PilotBackend, symptom: str, context: dict, report_dir: str,
                  duration: float | None = None, record: str | None = None, sessions: str | None = None,
                  max_steps: int = MAX_STEPS, log: Callable[[str], None] | None = None,
                  host: dict | None = None, start: str | None = None) -> AutopilotResult:
    """Diagnose ``symptom`` with no human; the report goes to ``report_dir``.  ``start``: a
    step or question of the symptom's playbook to begin at instead of its first."""
    if host is None:
        host = backend.host_facts()
    netns = backend.netns()
    if netns is not None and "netns" not in context:
        context = dict(context, netns=netns)
    host = dict(host)
    context, unknown, found_lines = _host_values(lib, backend, context, host)
    # The recording first: a bad --record path (RecordingError) leaves no session behind.
    recorder = Recorder(record, host, symptom, context) if record else None
    try:
        session = Session.create(symptom, context, host, sessions, mode="autopilot")
    except BaseException:
        if recorder:
            recorder.close()
        raise
    pilot = Autopilot(lib, backend, duration, recorder, log)
    pilot.unknown = unknown
    try:
        walk = Walk(lib, context, symptom, start=start, availability=backend.availability, on_event=session.write)
        pilot.log(f"netsleuth autopilot: {lib.playbooks[symptom].title} — session {session.id}")
        for line in found_lines:
            pilot.log(line)
        statuses = pilot.walk(walk, max_steps)
        conclusion = walk.conclusion()
        report = build_report(walk, host, session.id, pilot.command, mode="autopilot",
                              known_fixes=backend.known_fixes)
        code = exit_code(conclusion.cause_found, statuses)
        try:
            paths = write_reports(report, report_dir)
        except OSError as e:
            pilot.log(f"cannot write the report to {report_dir}: {e.strerror or e}")
            paths, code = {}, EXIT_ERROR
        session.end(report["conclusion"], paths)
        pilot.log(f"{CONCLUSION_HEADS[conclusion.state]} {conclusion.summary}")
        for i, link in enumerate(conclusion.chain):
            pilot.log(("  → " if i else "  ") + link)
        for text in conclusion.not_measured:
            pilot.log(f"  not measured: {text}")
        for fix in report["conclusion"]["fixes"]:
            pilot.log(f"  fix: {fix}")
        for kind, path in paths.items():
            pilot.log(f"report ({kind}): {path}")
        return AutopilotResult(code, conclusion.summary, paths, str(session.path), statuses)
    finally:
        session.close()
        if recorder:
            recorder.close()


__all__ = ["Autopilot", "AutopilotResult", "EXIT_CAUSE", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_NO_CAUSE",
           "EXIT_UNAVAILABLE",
           "EXIT_USAGE", "EXIT_CODES_HELP", "command_for", "exit_code", "run_autopilot"]
