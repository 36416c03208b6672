"""The netsleuth Textual app: from a symptom to a cause, running the probes for the user.

Screens (wizard/screens/): preflight → symptom → context → question(s) → step
(prefilled, editable) → live Summary / Details → findings → next step → … →
conclusion and report.  The walk through the playbook is the engine's
(playbooks.Walk); this module only moves between screens, journals the walk,
and makes sure that probes are closed and errors are shown and logged.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shlex
import signal
from pathlib import Path

from rich.console import Console
from textual import on
from textual.app import App
from textual.binding import Binding

from playbooks import Walk, WalkError, load_library
from playbooks.model import Question
from probes.registry import PROBES
from probes.runtime.params import ParamError

from .autopilot import command_for
from .contracts import RecordedSource
from .hostvalues import qemu_of_tap
from .replay import Recorder, RecordingError, record_path_problem
from .report import build_report, write_reports
from .screens.base import WizardScreen
from .screens.conclusion import ConclusionScreen
from .screens.context import ContextScreen
from .screens.dialogs import ConfirmQuit, ErrorDialog, HelpScreen
from .screens.findings import FindingsScreen, NextStepScreen
from .screens.live import LiveDetailsScreen, LiveRuns, LiveScreen, LiveSummaryScreen
from .screens.messages import (Answered, Back, ConclusionWanted, ContextGiven, GuestRunImported, NewDiagnosis,
                               NextStepsWanted, PreflightAccepted, PreflightDone, ReportWanted, RunEnded,
                               RunRequested, StepChosen, SymptomChosen)
from .screens.preflight import PreflightScreen
from .screens.question import QuestionScreen
from .screens.step import StepScreen
from .screens.symptom import SymptomScreen
from .widgets.panels import Failure, guard
from .session import Session, SessionError, list_sessions
from .session import resume as resume_session
from .session import sessions_dir as default_sessions_dir

log = logging.getLogger("netsleuth.wizard")

CLOSE_TIMEOUT = 10.0  # seconds to wait for running probes to detach when quitting
UI_SWITCH_INTERVAL_S = 0.001


def handles(message_type):
    """@on(message_type), the handler guarded: its bug goes to the panel, the app stays up."""
    return lambda handler: on(message_type)(guard(handler))


def setup_log(directory: Path) -> Path:
    """Everything the app logs (tracebacks included) goes to ``directory/wizard.log`` (0600)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "wizard.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    root = logging.getLogger("netsleuth")
    if not any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


class NetsleuthApp(App):
    TITLE = "netsleuth"
    CSS_PATH = "app.tcss"
    ENABLE_COMMAND_PALETTE = False
    # In a form field "?" and "q" are typed, not keys: F1 and Ctrl+Q always work (and show).
    BINDINGS = [
        Binding("question_mark,f1", "help", "Help"),
        Binding("q,ctrl+q", "quit", "Quit", priority=False),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, backend, sessions_dir: Path | None = None, library=None, record: Path | None = None,
                 resume: Path | None = None):
        super().__init__()
        self.backend = backend
        self.lib = library or load_library(probes=PROBES)
        self.sessions_dir = Path(sessions_dir) if sessions_dir else default_sessions_dir()
        self.log_path = setup_log(self.sessions_dir)
        self.sub_title = backend.describe()
        self.doctor: dict | None = None
        self.inventory = None
        self.found_here: dict[str, str] = {}  # context field -> how this host found it (the user did not say)
        self.walk: Walk | None = None
        self.session: Session | None = None
        self.resume_path = resume
        self.record_path = record
        self.recorder: Recorder | None = None
        self._recorded_runs: dict[str, int] = {}
        self.report_paths: dict[str, str] = {}
        self.chosen_report_dir: Path | None = None
        self._report_events = 0  # the walk's events when the report was written
        self.live_runs = LiveRuns()
        self._quitting = False
        # Textual prints an unhandled error's traceback here on exit: into the log, never the terminal.
        self.error_console = Console(file=io.StringIO(), width=120, markup=False, highlight=False)

    # start -------------------------------------------------------------------------------
    def on_mount(self) -> None:
        log.info("wizard started (%s)", self.backend.describe())
        if not self.is_headless:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: self.call_later(self.shutdown, "signal SIGTERM"))
            loop.add_signal_handler(signal.SIGHUP, lambda: self.call_later(self.shutdown, "signal SIGHUP", True))
        self.push_screen(PreflightScreen(self.backend))

    @handles(PreflightDone)
    def _keep_host(self, event: PreflightDone) -> None:
        self.doctor, self.inventory = event.doctor, event.inventory

    @handles(PreflightAccepted)
    def _after_preflight(self) -> None:
        self.push_screen(SymptomScreen(self.lib, self.backend.recorded_symptom()))
        if self.resume_path is not None:
            path, self.resume_path = self.resume_path, None
            self.resume(path)

    def resume(self, path: Path) -> None:
        """Reopen an interrupted session where it stopped (its journal rebuilds the walk)."""
        try:
            self.session, self.walk = resume_session(path, self.lib, self.backend.availability)
        except (SessionError, OSError) as e:
            self.report_error(f"cannot resume {path}: {e}", e)
            return
        log.info("resumed session %s", self.session.id)
        pb = self.lib.playbooks[self.walk.symptom]
        self.push_screen(self.context_screen(pb, self.walk.frames[0].ref, _context_form_values(self.walk.context)))
        self.show_current()

    def context_screen(self, playbook, start: str, initial: dict | None = None) -> ContextScreen:
        return ContextScreen(playbook, start, self.lib, self.backend.validate, self.inventory, initial)

    # the walk ------------------------------------------------------------------------------
    @handles(SymptomChosen)
    def _choose_symptom(self, event: SymptomChosen) -> None:
        playbook_id, start = event.playbook_id, event.start
        prefill = self.backend.context_prefill()  # a replay: what was recorded
        initial = _context_form_values(prefill) if prefill is not None else None
        if start == self.lib.playbooks[playbook_id].start and playbook_id == self.backend.recorded_symptom():
            start = self.backend.replay_start(self.lib) or start  # a replay: where its runs begin
        self.push_screen(self.context_screen(self.lib.playbooks[playbook_id], start, initial))

    @handles(ContextGiven)
    def _context_given(self, event: ContextGiven) -> None:
        self.start_walk(event.playbook_id, event.start, event.context)

    def start_walk(self, symptom: str, start: str, context: dict) -> None:
        netns = self.backend.netns()
        if netns and "netns" in self.lib.context:
            context = {**context, "netns": netns}
        self.end_session("started over with a new context")
        host = self.backend.host_facts()
        context, self.found_here = self._found_on_host(context)
        if self.found_here:  # said as the autopilot says it (the report's host facts)
            host = {**host, "found_here": "; ".join(f"{k} = {context[k]} ({how})" for k, how in self.found_here.items())}
        if self.record_path is not None and self.recorder is None:
            try:  # before the session: a journal is only made for a walk that can start
                self.recorder = Recorder(self.record_path, host, symptom, context)
            except RecordingError as e:
                self.report_error(str(e))
                return
        self.session = Session.create(symptom, context, host, self.sessions_dir, mode=self.mode)
        self.walk = Walk(self.lib, context, symptom=symptom, start=start,
                         availability=self.backend.availability, on_event=self.session.write)
        log.info("session %s: %s", self.session.id, self.session.path)
        self.show_current()

    def _found_on_host(self, context: dict) -> tuple[dict, dict[str, str]]:
        """The VM's QEMU pid from its tap (discovery's vnet -> VM map), as the autopilot finds it
        (hostvalues.py), when the user named the tap and not the pid; live only."""
        tap = context.get("vm_interface")
        if not (self.backend.mode == "live" and tap and self.inventory is not None and "vm_pid" in self.lib.context) \
                or context.get("vm_pid") not in (None, ""):
            return context, {}
        pid, how = qemu_of_tap(self.inventory, tap)
        return ({**context, "vm_pid": pid}, {"vm_pid": how}) if pid is not None else (context, {})

    def end_session(self, why: str) -> None:
        """Close the journal.  The session ends when its report says everything it found (the
        user wrote it and did nothing after); a report the walk moved past is rewritten, and the
        session is left resumable."""
        if self.session is None:
            return
        stale = bool(self.report_paths) and not self.report_is_current
        if stale:
            self.save_report("report rewritten: the session went on after it was written")
        if self.report_paths and not stale and self.walk is not None:
            c = self.walk.conclusion()
            self.session.end({"cause_found": c.cause_found, "state": c.state, "summary": c.summary},
                             self.report_paths)
        else:
            self.session.write({"event": "note", "text": f"{why}; resume with: {self.resume_command()}"})
        self.session.close()
        self.session = None
        self.report_paths = {}
        self.chosen_report_dir = None  # the next session's report never overwrites this one's

    @property
    def report_is_current(self) -> bool:
        """A report was written and the walk has not moved since."""
        return bool(self.report_paths) and self.walk is not None and len(self.walk.events) == self._report_events

    def resume_command(self) -> str:
        """How to come back to this session (with the sessions directory when not the default)."""
        cmd = f"netsleuth --resume {self.session.id if self.session else ''}".rstrip()
        if self.sessions_dir != default_sessions_dir():
            cmd += f" --sessions {shlex.quote(str(self.sessions_dir))}"
        return cmd

    def show_current(self) -> None:
        """The screen(s) of where the walk is: a question, or a step (and its findings once run)."""
        node = self.walk.current
        depth = len(self.walk.frames)
        if isinstance(node, Question):
            self.push_screen(QuestionScreen(node, depth))
            return
        self.push_screen(self.step_screen(node, depth))
        result = self.walk.current_result
        if result is not None and result.status in ("ok", "stopped"):
            self.push_screen(FindingsScreen(node, result, list(self.walk.frames[-1].findings), depth))

    def step_screen(self, view, depth: int) -> StepScreen:
        """The step's form; a step that cannot run here offers the playbook's fallbacks that can."""
        current = bool(view.unavailable) and self.walk is not None and self.walk.current_ref == view.ref
        alternatives = [v for v in self.walk.fallbacks() if v.unavailable is None] if current else []
        return StepScreen(view, depth, self.backend, self.lib, self.inventory, alternatives,
                          context=self.walk.context if self.walk is not None else {}, found=self.found_here)

    @handles(Answered)
    def _answer(self, event: Answered) -> None:
        self.walk.answer(event.choice)
        self.show_current()

    @handles(StepChosen)
    def _choose_step(self, event: StepChosen) -> None:
        self.walk.choose(event.view)
        self.show_current()

    @handles(Back)
    def _back(self, event: Back) -> None:
        self.back_from(event.depth)

    def back_from(self, depth: int) -> None:
        """Esc on a question or step screen: undo the walk's move that showed it, then pop."""
        if self.walk is not None and len(self.walk.frames) == depth:
            if depth > 1:
                self.walk.back()
            else:  # back to the context form: a new walk (and session) starts from there
                self.end_session("went back to the context form")
                self.walk = None
        self.pop_screen()
        if self.walk is not None and isinstance(self.screen, ContextScreen):
            self.show_current()  # a resumed walk has no screens for its earlier frames: show them

    @handles(GuestRunImported)
    def _import_guest_run(self, event: GuestRunImported) -> None:
        """A guest probe's imported records: its step runs from them from now on."""
        from .guestimport import GuestImports

        self.backend = GuestImports.adding(self.backend, event.run)
        self.post_message(RunRequested(event.params, {}, event.depth))

    @handles(RunRequested)
    def _run_step(self, event: RunRequested) -> None:
        view = self.walk.current
        if event.params != view.params:
            view = self.walk.edit(event.params)
        spec = self.lib.probes[view.probe]
        live = LiveDetailsScreen if spec.merge.kind == "group-events" else LiveSummaryScreen
        source = self.backend.source(view.probe, event.values)
        self.push_screen(live(view, event.values, spec, event.depth, source, self.live_runs,
                              self.recorder_for(view, event.values), self.walk.context))

    @handles(RunEnded)
    def _run_ended(self, event: RunEnded) -> None:
        if self.live_runs.closing:
            return  # quitting: shutdown keeps what it saw
        self.live_runs.discard(event.screen)
        if event.failure is not None:
            self.step_failed(event.screen, event.failure)
        else:
            self.step_finished(event.screen, event.outcome)

    def step_finished(self, screen: LiveScreen, outcome) -> None:
        findings = self._keep_run(screen, outcome)
        self.switch_screen(FindingsScreen(self.walk.current, self.walk.current_result, findings, screen.depth))

    def _keep_run(self, screen: LiveScreen, outcome) -> list:
        """The run's outcome into the walk (the journal) and the recording; its findings."""
        source = screen.source
        # What ran: a replay serves a recorded run, whose filters may not be the form's.
        params = (source.recorded_params if isinstance(source, RecordedSource) else None) or self.walk.current.params
        command = source.command_line()
        findings = self.walk.complete(outcome.status, outcome.result, duration_s=outcome.duration_s,
                                      started=outcome.started, command=command, params=params,
                                      attached=outcome.attached)
        self._end_recorded_run(screen, outcome.status, outcome.duration_s, outcome.error)
        return findings

    def _keep_interrupted_runs(self) -> None:
        """Quitting during a run: what it saw until stopped is journaled, as a stopped run."""
        for screen in self.live_runs.screens():
            run = screen.run
            if not screen.discarded and run is not None and \
                    run.outcome is not None and self.walk is not None and self.walk.current_result is None:
                try:
                    self._keep_run(screen, run.outcome)
                except Exception:  # noqa: BLE001 - quitting anyway: the log has it
                    log.exception("could not keep the interrupted run")

    def step_failed(self, screen: LiveScreen, finished) -> None:
        message = finished.error or finished.status
        log.error("probe %s: %s: %s", screen.view.probe, finished.status, message, exc_info=finished.exc)
        outcome = screen.run.outcome
        try:
            self.walk.complete(finished.status, None, duration_s=outcome.duration_s if outcome else None,
                               started=outcome.started if outcome else None, error=message,
                               command=self._command(screen), params=self.walk.current.params)
        except WalkError as e:
            log.error("could not record the failure: %s", e)
        self._end_recorded_run(screen, finished.status, outcome.duration_s if outcome else None, message)
        screen.show_error(f"{screen.view.probe}: {message}  (Esc: back to the form)", str(self.log_path))

    def _command(self, screen: LiveScreen) -> str | None:
        try:
            return self.backend.command_line(screen.view.probe, screen.values)
        except (ParamError, KeyError):
            return None

    # --record FILE: what the probes produced, for `netsleuth replay` ------------------------
    def recorder_for(self, view, values: dict):
        """The callback a run feeds its records to when recording, else None."""
        if self.recorder is None:
            return None
        run = self.recorder.start_run(view.probe, view.params, step=view.ref,
                                      command=self.backend.command_line(view.probe, values))
        self._recorded_runs[view.ref] = run
        return lambda t, records: self.recorder.records(run, t, records)

    def _end_recorded_run(self, screen: LiveScreen, status: str, duration_s, error) -> None:
        run = self._recorded_runs.pop(screen.view.ref, None)
        if self.recorder is not None and run is not None:
            self.recorder.end_run(run, status, duration_s, error)

    @handles(NextStepsWanted)
    def _show_next_steps(self) -> None:
        self.push_screen(NextStepScreen(self.walk.suggestions()))

    @handles(ConclusionWanted)
    def _show_conclusion(self) -> None:
        c = self.walk.conclusion()
        self.push_screen(ConclusionScreen(c, [*self.backend.known_fixes(c.causes), *c.fixes], self.report_dir()))

    @handles(ReportWanted)
    def _write_report(self, event: ReportWanted) -> None:
        paths = self.save_report(directory=event.directory)
        if paths:
            event.screen.show_report(paths, self.report_dir())

    @handles(NewDiagnosis)
    def _new_diagnosis(self) -> None:
        self.end_session("new diagnosis")
        self.walk = None
        while len(self.screen_stack) > 2 and not isinstance(self.screen, SymptomScreen):
            self.pop_screen()

    @property
    def mode(self) -> str:
        return "replay" if self.backend.mode == "replay" else "interactive"

    def report_dir(self) -> Path:
        """Where the report goes: the directory the user chose, else one per session."""
        if self.chosen_report_dir is not None:
            return self.chosen_report_dir
        return self.sessions_dir / (self.session.id if self.session else "reports")

    def save_report(self, note: str = "report written", directory: str | Path | None = None) -> list[str]:
        """Write the report (Markdown, JSON, HTML) to ``directory`` (kept for the session's later
        rewrites) or report_dir(); the files, or [] after showing the error."""
        sid = self.session.id if self.session else None
        if directory not in (None, ""):
            self.chosen_report_dir = Path(directory).expanduser()
        try:
            rep = build_report(self.walk, self.backend.host_facts(), sid, command_for=command_for(self.backend),
                               mode=self.mode, known_fixes=self.backend.known_fixes)
            self.report_paths = write_reports(rep, self.report_dir())
        except Exception as e:  # noqa: BLE001 - disk full, permissions...: say so, keep the app up
            self.report_error(f"could not write the report: {e}", e)
            return []
        self._report_events = len(self.walk.events)
        if self.session is not None:
            self.session.write({"event": "note", "text": note, "reports": self.report_paths})
        return list(self.report_paths.values())

    # probes are closed on every way out -------------------------------------------------------
    async def stop_probes(self) -> None:
        """Stop every running probe and wait until each has closed (detached) in its worker."""
        for run in self.live_runs.stop_all():
            await asyncio.to_thread(run.closed.wait, CLOSE_TIMEOUT)

    # quitting --------------------------------------------------------------------------------
    def action_quit(self) -> None:
        if self._quitting:
            return
        detail = "Running probes are stopped and detached; what they saw so far is kept."
        if self.session is not None:
            detail += f"\nThe session is saved: {self.session.path}"
            if self.report_paths and not self.report_is_current:
                detail += "\nThe report is rewritten with what was found since it was written."
            if not self.report_is_current:
                detail += f"\nResume it with: {self.resume_command()}"

        def answered(yes: bool | None) -> None:
            if yes:  # the probes stop now, not after the dialog has closed and the screen redrawn
                self.live_runs.closing = True
                self.live_runs.stop_all()
                self.call_later(self.shutdown, "user quit")

        self.push_screen(ConfirmQuit(detail), answered)

    @property
    def quitting(self) -> bool:
        return self._quitting

    async def shutdown(self, why: str = "quit", terminal_gone: bool = False) -> None:
        """Stop and detach the probes, save the session, exit."""
        if self._quitting:
            return
        self._quitting = self.live_runs.closing = True
        log.info("shutting down: %s", why)
        await self.stop_probes()
        self._keep_interrupted_runs()
        self.end_session(f"quit ({why})")
        if self.recorder is not None:
            self.recorder.close()
        if terminal_gone:
            # SIGHUP: the terminal was closed.  Probes are detached and the journal is on disk;
            # restoring a terminal that no longer exists would block Textual forever.
            logging.shutdown()
            os._exit(0)
        self.exit()

    def action_help(self) -> None:
        screen = self.screen
        keys = screen_keys(screen)
        self.push_screen(HelpScreen(getattr(screen, "HELP", ""), keys))

    # errors: a panel on screen, the details in the log ----------------------------------------
    def report_error(self, message: str, exc: BaseException | None = None) -> None:
        log.error("%s", message, exc_info=exc)
        screen = self.screen
        if not (isinstance(screen, WizardScreen) and screen.show_error(message, str(self.log_path))):
            self.push_screen(ErrorDialog(message, str(self.log_path)))

    async def run_action(self, action, default_namespace=None, namespaces=None) -> bool:
        try:
            return await super().run_action(action, default_namespace, namespaces)
        except Exception as exc:  # noqa: BLE001 - an action's bug goes to the panel, the app stays up
            self.report_error(f"{action}: {type(exc).__name__}: {exc}", exc)
            return True

    @on(Failure)  # not guarded itself: its own failure must not post another
    def _show_failure(self, event: Failure) -> None:
        self.report_error(event.text, event.exc)

    def on_unmount(self) -> None:
        """Every way out, a crash too: the probes are told to stop now (run() then waits for
        their worker threads, which close them)."""
        self.live_runs.stop_all()

    def close_after_crash(self) -> str:
        """Last resort, after run() ended on an unhandled error (Textual wrote its traceback to
        error_console, i.e. the log): detach the probes, keep the session; one plain line to say."""
        log.critical("unexpected error:\n%s", self.error_console.file.getvalue())
        self.live_runs.closing = True
        for run in self.live_runs.stop_all():
            run.closed.wait(CLOSE_TIMEOUT)
        try:
            self._keep_interrupted_runs()
            self.end_session("stopped on an internal error")
            if self.recorder is not None:
                self.recorder.close()
        except Exception:  # noqa: BLE001 - already failing: the log has the first error
            log.exception("could not close the session")
        return f"netsleuth stopped on an internal error; details: {self.log_path}"


def screen_keys(screen) -> list[tuple[str, str]]:
    """The keys of a screen as its help lists them: its own bindings and those it inherits
    (Esc = back comes from the base screen), a subclass's binding of a key winning."""
    keys, seen = [], set()
    for cls in type(screen).__mro__:
        for b in cls.__dict__.get("BINDINGS", []):
            if isinstance(b, Binding) and b.description and b.key not in seen:
                seen.add(b.key)
                keys.append((b.key_display or b.key.split(",")[0].replace("escape", "Esc"), b.description))
    return keys


def _context_form_values(context: dict) -> dict:
    return {k: v for k, v in context.items() if v not in (None, "")}


# starting the app from the command line ------------------------------------------------------

def find_session(spec: str, directory: Path) -> Path:
    """A session journal by path or id; "" = the newest interrupted one (SessionError if none)."""
    if spec and Path(spec).is_file():
        return Path(spec)
    sessions = list_sessions(directory)
    if not spec:
        open_ones = [s for s in sessions if s.resumable]
        if not open_ones:
            raise SessionError(f"no interrupted session in {directory}")
        return open_ones[0].path
    match = [s for s in sessions if s.id == spec or s.id.startswith(spec)]
    if not match:
        raise SessionError(f"no session {spec!r} in {directory} (see the files there)")
    return match[0].path


def run_wizard(backend, sessions: str | None = None, record: str | None = None,
               resume: str | None = None) -> int:
    """Run the app until the user quits; problems before it starts are one line on stderr."""
    import sys

    directory = Path(sessions) if sessions else default_sessions_dir()
    try:
        resume_path = find_session(resume, directory) if resume is not None else None
        library = load_library(probes=PROBES)
        problem = record_path_problem(record) if record else None
        if problem:
            raise ValueError(problem)
    except (SessionError, ValueError) as e:
        print(f"netsleuth: {e}", file=sys.stderr)
        return 2
    try:
        app = NetsleuthApp(backend, directory, library, record=Path(record) if record else None, resume=resume_path)
    except OSError as e:
        print(f"netsleuth: cannot use the sessions directory {directory}: {e.strerror}", file=sys.stderr)
        return 1
    # The probes' workers decode events in Python: the UI thread must get the GIL back
    # quickly (keys answer within 200 ms under a flood), not after the default 5 ms slices.
    sys.setswitchinterval(UI_SWITCH_INTERVAL_S)
    app.run()
    if app.return_code == 1 and not app.quitting:
        print(app.close_after_crash(), file=sys.stderr)
    return app.return_code or 0


def run_live_wizard(sessions: str | None, record: str | None, resume: str | None) -> int:
    """`sudo netsleuth`: the wizard on this host."""
    from .backends import LiveBackend

    return run_wizard(LiveBackend(), sessions, record, resume)


REPLAY_SPEED = 1.0  # the app replays at the recorded pace unless told otherwise


def run_replay_wizard(path: str, speed: float | None, sessions: str | None) -> int:
    """`netsleuth replay FILE`: the wizard over a recording (no root, no BPF)."""
    import sys

    from .backends import ReplayBackend
    from .replay import Recording, RecordingError

    try:
        recording = Recording.load(path)
    except RecordingError as e:
        print(f"netsleuth replay: {e}", file=sys.stderr)
        return 2
    if speed is not None and speed < 0:
        print(f"netsleuth replay: --speed: {speed!r} is not valid; expected 0 (at once) or more", file=sys.stderr)
        return 2
    return run_wizard(ReplayBackend(recording, REPLAY_SPEED if speed is None else speed), sessions)
