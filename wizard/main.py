"""The `netsleuth` command: the wizard by default, plus the probe/doctor CLIs."""

from __future__ import annotations

import argparse
import sys


def build_parser(with_diagnose: bool = True) -> argparse.ArgumentParser:
    """``with_diagnose=False``: without the diagnose/replay commands, whose flags come from
    the playbooks (loading them is a tenth of a second the probe CLI need not spend)."""
    from probes.cli import add_probe_parsers

    parser = argparse.ArgumentParser(prog="netsleuth", description=__doc__)
    # Options of the interactive wizard (`sudo netsleuth` with no command).
    parser.add_argument("--resume", nargs="?", const="", metavar="SESSION",
                        help="continue an interrupted session (its id or journal file; default: the newest)")
    parser.add_argument("--record", metavar="FILE", help="save every probe record, for `netsleuth replay FILE`")
    parser.add_argument("--sessions", metavar="DIR", help="session journal directory (default: $NETSLEUTH_SESSIONS, "
                                                         "/var/lib/netsleuth/sessions as root)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_probe_parsers(sub)
    doctor = sub.add_parser("doctor", help="what this host's kernel offers the probes, and how to fix what is missing")
    doctor.add_argument("--json", action="store_true")
    try:
        from exporter.cli import add_parser as add_exporter_parser
    except ImportError as e:  # prometheus_client missing: every other command still works
        missing = e.name or str(e)
        exporter = sub.add_parser("exporter", help=f"unavailable here: needs the Python module {missing}")
        exporter.set_defaults(exporter_missing=missing)
    else:
        add_exporter_parser(sub)
    if with_diagnose:
        from .diagnose_cli import add_parsers as add_diagnose_parsers

        add_diagnose_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(with_diagnose=not argv or argv[0] not in ("probe", "doctor", "exporter"))
    args = parser.parse_args(argv)
    if args.command == "probe":
        from probes.cli import run_probe

        return run_probe(args)
    if args.command == "exporter":
        if getattr(args, "exporter_missing", None):
            print(f"netsleuth exporter: needs the Python module {args.exporter_missing} "
                  "(pip install prometheus-client)", file=sys.stderr)
            return 1
        from exporter.cli import run as run_exporter

        return run_exporter(args)
    if args.command == "doctor":
        from probes.doctor import run_doctor

        return run_doctor(args.json)
    if args.command == "replay" and not args.autopilot:
        from .app import run_replay_wizard

        return run_replay_wizard(args.recording, args.speed, args.sessions)
    if args.command in ("diagnose", "replay"):
        from . import diagnose_cli

        return diagnose_cli.run_diagnose(args) if args.command == "diagnose" else diagnose_cli.run_replay(args)
    if args.command is None:
        from .app import run_live_wizard

        return run_live_wizard(args.sessions, args.record, args.resume)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
