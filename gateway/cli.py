"""The ``fdep-gateway`` command line: one console script, one sub-command per job (spec 16).

Exit codes: 0 success, 1 a checked file is invalid or an operation failed, 2 usage, 78 bad config
(EX_CONFIG: systemd's RestartPreventExitStatus keeps a misconfigured daemon from flapping).
65: the ledger is missing or damaged while the spool shows earlier work (``gateway/ledgercheck.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, default_check_config, load_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78


def _config(args: argparse.Namespace) -> GatewayConfig:
    return load_config(args.config)


def _cmd_check(args: argparse.Namespace) -> int:
    from gateway.check import UsageError, check_all, collect, render_json, render_text
    from gateway.validate import Rules

    config = load_config(args.config) if args.config else default_check_config()
    try:
        targets = collect(Path(p) for p in args.paths)
    except UsageError as exc:
        print(f"fdep-gateway check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    today = datetime.now(config.zone).date()
    verdicts = check_all(targets, Rules.from_config(config), today, progress=sys.stderr.isatty())
    (render_json if args.json else render_text)(verdicts, sys.stdout)
    return EXIT_FAILED if any(v.rejected for v in verdicts) else EXIT_OK


def _cmd_config_check(args: argparse.Namespace) -> int:
    config = _config(args)
    stations = ", ".join(f"{name} ({s.environment} -> {s.route})" for name, s in config.stations.items())
    print(f"{args.config}: OK")
    print(f"  stations: {stations}")
    print(f"  transfer codes: {len(config.transfer_codes)}; tables: {', '.join(sorted(config.tables))}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.processes > 1:
        from gateway.workers import run_supervised

        return run_supervised(config, Path(args.config))
    from gateway.service import run_service

    return run_service(config, config_path=Path(args.config), drain=False)


def _cmd_worker(args: argparse.Namespace) -> int:
    from gateway.shard import Shard
    from gateway.workers import run_worker

    number, count = (int(part) for part in args.shard.split("/"))
    return run_worker(_config(args), Path(args.config), Shard(number - 1, count))


def _cmd_drain(args: argparse.Namespace) -> int:
    from gateway.service import run_service

    return run_service(_config(args), config_path=Path(args.config), drain=True)


def _cmd_history(args: argparse.Namespace) -> int:
    from gateway.operate import show_history

    return show_history(_config(args), args)


def _cmd_status(args: argparse.Namespace) -> int:
    from gateway.operate import show_status

    return show_status(_config(args), as_json=args.json)


def _cmd_replay(args: argparse.Namespace) -> int:
    from gateway.operate import replay

    return replay(_config(args), args.file_id)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fdep-gateway",
        description="File gateway for FDEP-style regulatory report mailboxes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=text, description=text)
        command.set_defaults(handler=handler)
        return command

    def config_arg(command: argparse.ArgumentParser, required: bool = True) -> None:
        command.add_argument("-c", "--config", required=required, metavar="CONFIG", help="gateway YAML")

    config_arg(add("run", _cmd_run, "run the daemon in the foreground (what systemd runs)"))
    config_arg(add("drain", _cmd_drain, "process everything in the spool until idle, then exit"))
    worker = add("worker", _cmd_worker, "one of several gateway processes (run starts them; not by hand)")
    config_arg(worker)
    worker.add_argument("--shard", required=True, metavar="K/N", help="serve the K-th of N shares")

    check = add("check", _cmd_check, "validate files or directories offline with the daemon's rules")
    config_arg(check, required=False)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("paths", nargs="+", metavar="PATH")

    history = add("history", _cmd_history, "query or follow the sync history")
    config_arg(history)
    history.add_argument("--institution")
    history.add_argument("--table")
    history.add_argument("--date", help="data date YYYYMMDD")
    history.add_argument("--status", help="received, held, deferred, forwarded, rejected, duplicate")
    history.add_argument("--name", help="file name or glob")
    history.add_argument("--since", help="ISO time or date, e.g. 2026-11-25 or 2026-11-25T09:00")
    history.add_argument("--until", help="ISO time or date")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.add_argument("--follow", action="store_true", help="keep printing new events")

    status = add("status", _cmd_status, "files waiting, in work, deferred, held, quarantined per station")
    config_arg(status)
    status.add_argument("--json", action="store_true")

    replay = add("replay", _cmd_replay, "send a quarantined file through the pipeline again")
    config_arg(replay)
    replay.add_argument("file_id")

    config_arg(add("config-check", _cmd_config_check, "validate a config and its registry"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"fdep-gateway: bad configuration in {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
