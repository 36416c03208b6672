"""`netsleuth diagnose ... --autopilot` and `netsleuth replay FILE`: the wizard without a screen."""

from __future__ import annotations

import argparse
import sys

from playbooks import PlaybookError, load_library
from probes.registry import PROBES
from probes.runtime import params as P
from probes.runtime import stop
from probes.runtime.params import ParamError

from .autopilot import EXIT_CODES_HELP, EXIT_ERROR, EXIT_USAGE, run_autopilot
from .contextvals import validate_context


def _library_or_none():
    try:
        return load_library(probes=PROBES)
    except PlaybookError:
        return None  # reported when a subcommand that needs it runs


def add_parsers(sub: argparse._SubParsersAction) -> None:
    lib = _library_or_none()
    symptoms = sorted(lib.playbooks) if lib else []
    d = sub.add_parser(
        "diagnose", help="diagnose a symptom; with --autopilot, without a human, down to a report",
        description="Walk the guide's decision tree for a symptom. " + EXIT_CODES_HELP + ".",
        epilog=EXIT_CODES_HELP)
    d.add_argument("--guest-records", action="append", default=[], metavar="FILE",
                   help="the --json output of a probe run inside the VM (virtnet-poll-monitor): "
                        "its step is judged from the file")
    d.add_argument("--symptom", required=True, metavar="{" + ",".join(symptoms) + "}",
                   help="what is wrong: " + ", ".join(symptoms))
    if lib:
        for cf in lib.context.values():
            if cf.kind == "internal":
                continue
            metavar = "{" + ",".join(cf.choices) + "}" if cf.choices else cf.kind.upper()
            d.add_argument(cf.flag, dest="ctx_" + cf.name, metavar=metavar, help=f"{cf.label}: {cf.help}")
    _common(d)

    r = sub.add_parser("replay", help="run the wizard on a recording (no root, no BPF)",
                       description="Replay a recording made with --record. " + EXIT_CODES_HELP + ".",
                       epilog=EXIT_CODES_HELP)
    r.add_argument("recording", metavar="FILE", help="a recording written by `netsleuth diagnose --record FILE`")
    r.add_argument("--speed", type=float, default=None,
                   help="replay pace: 1 = as recorded, 0 = at once (default: 0 with --autopilot)")
    _common(r, record=False)


def _common(p: argparse.ArgumentParser, record: bool = True) -> None:
    p.add_argument("--autopilot", action="store_true", help="take the top suggestion at every step, no questions")
    p.add_argument("--duration", metavar="S", help="seconds each probe runs (default: each step's own duration)")
    p.add_argument("--report", metavar="DIR", help="where to write report.md, report.json and report.html")
    p.add_argument("--max-steps", metavar="N", default="8", help="stop after this many probe runs (default 8)")
    # SUPPRESS: given before the command (`netsleuth --sessions D diagnose ...`), the main parser's value stays.
    p.add_argument("--sessions", metavar="DIR", default=argparse.SUPPRESS,
                   help="session journal directory (default: $NETSLEUTH_SESSIONS, /var/lib/netsleuth/sessions as root)")
    if record:
        p.add_argument("--record", metavar="FILE", default=argparse.SUPPRESS,
                       help="also save every probe record, for `netsleuth replay FILE`")


def _usage(cmd: str, message: str) -> int:
    print(f"netsleuth {cmd}: {message}", file=sys.stderr)
    return EXIT_USAGE


def _numbers(cmd: str, args: argparse.Namespace) -> tuple[float | None, int] | int:
    try:
        duration = P.seconds("--duration", args.duration, 0.1, 86400, None)
        max_steps = P.integer("--max-steps", args.max_steps, 1, 100)
    except ParamError as e:
        return _usage(cmd, str(e))
    return duration, max_steps


def _needs(cmd: str, args: argparse.Namespace) -> int | None:
    if not args.autopilot:
        return _usage(cmd, "the interactive wizard is `sudo netsleuth`; here, add --autopilot "
                           "(with --report DIR) to diagnose without questions")
    if not args.report:
        return _usage(cmd, "--autopilot needs --report DIR (where the report goes)")
    return None


def run_diagnose(args: argparse.Namespace) -> int:
    stop.install_signal_handlers()  # Ctrl-C / SIGTERM / SIGHUP: stop, then write the report
    try:
        lib = load_library(probes=PROBES)
    except PlaybookError as e:
        print(f"netsleuth: the playbooks are broken: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.symptom not in lib.playbooks:
        return _usage("diagnose", f"--symptom: {args.symptom!r} is not valid; expected one of "
                                  f"{', '.join(sorted(lib.playbooks))}")
    bad = _needs("diagnose", args)
    if bad is not None:
        return bad
    nums = _numbers("diagnose", args)
    if isinstance(nums, int):
        return nums
    raw = {name[4:]: v for name, v in vars(args).items() if name.startswith("ctx_")}
    try:
        context = validate_context(lib, raw)
    except ParamError as e:
        return _usage("diagnose", str(e))
    from .backends import LiveBackend
    from .guestimport import GuestFileError, GuestImports, guest_start, load_guest_file
    from .replay import RecordingError

    try:
        runs = {r.probe: r for r in (load_guest_file(path, lib) for path in args.guest_records)}
    except GuestFileError as e:
        return _usage("diagnose", f"--guest-records: {e}")
    start = guest_start(lib, args.symptom, runs)
    if runs and start is None:
        return _usage("diagnose", f"--guest-records: {', '.join(runs)} is not a step of --symptom {args.symptom}")
    backend = GuestImports(LiveBackend(), runs) if runs else LiveBackend()
    try:
        result = run_autopilot(lib, backend, args.symptom, context, args.report, duration=nums[0],
                               record=getattr(args, "record", None), sessions=getattr(args, "sessions", None),
                               max_steps=nums[1], start=start)
    except RecordingError as e:
        return _usage("diagnose", str(e))
    except OSError as e:  # the sessions directory
        return _cannot_journal("diagnose", e)
    return result.exit_code


def _cannot_journal(cmd: str, e: OSError) -> int:
    print(f"netsleuth {cmd}: cannot write the session journal: {e.filename or ''}: {e.strerror or e}",
          file=sys.stderr)
    return EXIT_ERROR


def run_replay(args: argparse.Namespace) -> int:
    stop.install_signal_handlers()  # Ctrl-C / SIGTERM / SIGHUP: stop, then write the report
    from .replay import RecordedBackend, Recording, RecordingError

    try:
        lib = load_library(probes=PROBES)
    except PlaybookError as e:
        print(f"netsleuth: the playbooks are broken: {e}", file=sys.stderr)
        return EXIT_ERROR
    bad = _needs("replay", args)
    if bad is not None:
        return bad
    nums = _numbers("replay", args)
    if isinstance(nums, int):
        return nums
    try:
        rec = Recording.load(args.recording)
    except RecordingError as e:
        return _usage("replay", str(e))
    if rec.symptom not in lib.playbooks:
        return _usage("replay", f"{args.recording}: recorded symptom {rec.symptom!r} is not in these playbooks")
    try:
        context = validate_context(lib, rec.context, check_host=False)
    except ParamError as e:
        return _usage("replay", f"{args.recording}: recorded context: {e}")
    backend = RecordedBackend(rec, speed=args.speed or 0.0)
    # A recorded run ends when its records do; --duration only cuts a paced (--speed) replay short.
    try:
        result = run_autopilot(lib, backend, rec.symptom, context, args.report, duration=nums[0] or 86400,
                               sessions=getattr(args, "sessions", None), max_steps=nums[1],
                               start=backend.replay_start(lib))
    except OSError as e:  # the sessions directory
        return _cannot_journal("replay", e)
    return result.exit_code
