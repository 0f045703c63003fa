"""The ``fdep-gateway`` command line: one console script, one sub-command per job (spec 16).

Exit codes: 0 success, 1 a checked file is invalid or an operation failed, 2 usage, 78 bad config
(EX_CONFIG: systemd's RestartPreventExitStatus keeps a misconfigured daemon from flapping),
65: the ledger is missing or damaged while the spool shows earlier work (``gateway/store/ledgercheck.py``).

The config is ``-c CONFIG``, else ``$FDEP_GATEWAY_CONFIG``, else ``/etc/fdep-gateway/gateway.yaml``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, PostgresStore, default_check_config, load_config
from gateway.store.history import EVENTS

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78
CONFIG_ENV = "FDEP_GATEWAY_CONFIG"
DEFAULT_CONFIG = Path("/etc/fdep-gateway/gateway.yaml")


_Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """The command line cannot be carried out as given: exit 2 with this message."""


def config_path(args: argparse.Namespace) -> Path:
    """``-c``, else the environment, else the default path; a default that is not there is a usage error."""
    if args.config:
        return Path(args.config)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if not DEFAULT_CONFIG.exists():
        raise UsageError(f"no configuration: give -c CONFIG, set {CONFIG_ENV}, or install {DEFAULT_CONFIG}")
    return DEFAULT_CONFIG


def _config(args: argparse.Namespace) -> GatewayConfig:
    return load_config(config_path(args))


def _version() -> str:
    try:
        return version("fdep-gateway")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _cmd_check(args: argparse.Namespace) -> int:
    from gateway.ops.check import UncheckablePathError, check_all, collect, render_json, render_text
    from gateway.pipeline.validate import Rules

    explicit = args.config or os.environ.get(CONFIG_ENV)
    config = load_config(explicit) if explicit else default_check_config()
    try:
        targets = collect(Path(p) for p in args.paths)
    except UncheckablePathError as exc:
        print(f"fdep-gateway check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not targets:
        print("fdep-gateway check: no files to check in " + " ".join(args.paths), file=sys.stderr)
        return EXIT_USAGE
    today = datetime.now(config.zone).date()
    verdicts = check_all(targets, Rules.from_config(config), today, progress=sys.stderr.isatty())
    (render_json if args.json else render_text)(verdicts, sys.stdout)
    return EXIT_FAILED if any(v.rejected for v in verdicts) else EXIT_OK


def _cmd_config_check(args: argparse.Namespace) -> int:
    from gateway.windows import Calendar

    path = config_path(args)
    config = load_config(path)
    stations = ", ".join(f"{name} ({s.environment} -> {s.route})" for name, s in config.stations.items())
    print(f"{path}: OK")
    print(f"  stations: {stations}")
    print(f"  transfer codes: {len(config.transfer_codes)}; tables: {', '.join(sorted(config.tables))}")
    calendar = Calendar(config.holidays, config.workdays)
    print(f"  calendar: {calendar.coverage(datetime.now(config.zone).date())}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    path = config_path(args)
    config = load_config(path)
    if config.processes > 1:
        from gateway.daemon.supervisor import run_supervised

        return run_supervised(config, path)
    from gateway.daemon.service import run_service

    return run_service(config, config_path=path, drain=False)


def _cmd_worker(args: argparse.Namespace) -> int:
    from gateway.daemon.shard import Shard
    from gateway.daemon.workers import run_worker

    number, count = (int(part) for part in args.shard.split("/"))
    path = config_path(args)
    return run_worker(load_config(path), path, Shard(number - 1, count))


def _cmd_drain(args: argparse.Namespace) -> int:
    from gateway.daemon.service import run_service
    from gateway.ops.operate import drain_summary

    path = config_path(args)
    config = load_config(path)
    started = datetime.now(config.zone)
    code = run_service(config, config_path=path, drain=True)
    print(drain_summary(config, started))
    return code


def _cmd_show(args: argparse.Namespace) -> int:
    from gateway.ops.operate import show_file

    return show_file(_config(args), args.file_id, as_json=args.json)


def _cmd_history(args: argparse.Namespace) -> int:
    from gateway.ops.operate import show_history

    return show_history(_config(args), args)


def _cmd_status(args: argparse.Namespace) -> int:
    from gateway.ops.operate import show_status

    config = _config(args)
    code = show_status(config, as_json=args.json)
    if isinstance(config.store, PostgresStore) and not args.json:  # a shared spool: say who serves it
        print()
        print(_cluster_text(config, config.store, as_json=False))
    return code


def _cmd_nodes(args: argparse.Namespace) -> int:
    config = _config(args)
    if not isinstance(config.store, PostgresStore):
        print("fdep-gateway nodes: this config's store is sqlite: one node, no leases", file=sys.stderr)
        return 1
    print(_cluster_text(config, config.store, as_json=args.json))
    return 0


def _cluster_text(config: GatewayConfig, store: PostgresStore, *, as_json: bool) -> str:
    import psycopg

    from gateway.cluster.view import cluster_view, render

    with psycopg.connect(store.dsn, password=store.password(), autocommit=True) as conn:
        view = cluster_view(conn, store.lease_seconds, config.transfer_codes)
    return render(view, as_json=as_json)


def _cmd_replay(args: argparse.Namespace) -> int:
    from gateway.ops.operate import replay

    return replay(_config(args), args.file_id)


def _single_node_only(config: GatewayConfig, command: str) -> bool:
    """The console and the obligations read the embedded store's files; with PostgreSQL they would show
    nothing, so they say so instead (docs/scale-out.md, "Not done yet")."""
    if isinstance(config.store, PostgresStore):
        print(f"fdep-gateway {command}: not available with store kind postgresql yet", file=sys.stderr)
        return True
    return False


def _cmd_web(args: argparse.Namespace) -> int:
    from gateway.web.serve import serve

    config = _config(args)
    return 1 if _single_node_only(config, "web") else serve(config)


def _cmd_web_user(args: argparse.Namespace) -> int:
    from gateway.web.serve import manage_users

    return manage_users(_config(args), args)


def _cmd_due(args: argparse.Namespace) -> int:
    from gateway.obligations.command import show_due

    config = _config(args)
    return 1 if _single_node_only(config, "due") else show_due(config, args)


def _cmd_report(args: argparse.Namespace) -> int:
    from gateway.obligations.command import write_report

    config = _config(args)
    return 1 if _single_node_only(config, "report") else write_report(config, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fdep-gateway",
        description="File gateway for FDEP-style regulatory report mailboxes.",
        epilog=f"CONFIG: -c CONFIG, else ${CONFIG_ENV}, else {DEFAULT_CONFIG}. Exit codes: 0 success, "
        "1 a checked file is invalid or an operation failed, 2 usage, 78 bad configuration.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: _Handler, text: str | None) -> argparse.ArgumentParser:
        # a command without help text is not listed in --help (the internal ``worker``)
        command = sub.add_parser(name, help=text, description=text) if text else sub.add_parser(name)
        command.set_defaults(handler=handler)
        return command

    def config_arg(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "-c", "--config", metavar="CONFIG", help=f"gateway YAML (default ${CONFIG_ENV}, {DEFAULT_CONFIG})"
        )

    config_arg(add("run", _cmd_run, "run the daemon in the foreground (what systemd runs)"))
    config_arg(
        add(
            "drain",
            _cmd_drain,
            "process everything in the spool until idle, print what became of it, then exit (0: every file "
            "reached its outcome or waits by rule, rejections included; 1: the gateway failed)",
        )
    )
    worker = add("worker", _cmd_worker, None)
    config_arg(worker)
    worker.add_argument("--shard", required=True, metavar="K/N", help="serve the K-th of N shares")

    check = add("check", _cmd_check, "validate files or directories offline with the daemon's rules")
    check.add_argument(
        "-c", "--config", metavar="CONFIG", help=f"gateway YAML (default ${CONFIG_ENV}, else bundled rules)"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("paths", nargs="+", metavar="PATH")

    history = add("history", _cmd_history, "query or follow the sync history")
    config_arg(history)
    history.add_argument("--institution")
    history.add_argument("--table")
    history.add_argument("--date", help="data date YYYYMMDD")
    history.add_argument("--status", choices=EVENTS, metavar="STATUS", help="one of: " + ", ".join(EVENTS))
    history.add_argument("--name", help="file name or glob")
    history.add_argument(
        "--since", type=_moment, help="ISO date or time, e.g. 2026-11-25 or 2026-11-25T09:00 (config's zone)"
    )
    history.add_argument("--until", type=_moment, help="ISO time or date")
    history.add_argument("--json", action="store_true", help="one JSON object per line (UTF-8)")
    history.add_argument("--follow", action="store_true", help="the last events, then new ones as they come")
    history.add_argument(
        "-n", "--lines", type=int, default=10, metavar="N", help="with --follow: how many recent events first"
    )

    show = add("show", _cmd_show, "one file's whole story: every event, every finding, where it is now")
    config_arg(show)
    show.add_argument("--json", action="store_true")
    show.add_argument("file_id")

    status = add("status", _cmd_status, "files waiting, in work, deferred, held, quarantined per station")
    config_arg(status)
    status.add_argument("--json", action="store_true")

    nodes = add("nodes", _cmd_nodes, "the nodes of a PostgreSQL cluster, their mailboxes and leases")
    config_arg(nodes)
    nodes.add_argument("--json", action="store_true")

    replay = add("replay", _cmd_replay, "send a quarantined file through the pipeline again")
    config_arg(replay)
    replay.add_argument("file_id")

    config_arg(add("config-check", _cmd_config_check, "validate a config and its registry"))

    config_arg(add("web", _cmd_web, "serve the web console (institutions' files, operators' stations)"))
    web_user = add("web-user", _cmd_web_user, "manage web console accounts")
    config_arg(web_user)
    web_user.add_argument("action", choices=["add", "passwd", "remove", "unlock", "list", "demo"])
    web_user.add_argument("username", nargs="?", default="")
    web_user.add_argument("--institution", help="an institution's account (scoped to its transfer codes)")
    web_user.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    from gateway.obligations.command import add_arguments

    due = add("due", _cmd_due, "what is due, by when, and its state; exit 1 if missing or at risk")
    report = add("report", _cmd_report, "write the daily reconciliation report (JSON and CSV)")
    config_arg(due)
    config_arg(report)
    add_arguments(due, report)
    return parser


def _moment(text: str) -> datetime:
    """An ISO date or time; without a zone it is read in the config's zone later."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        example = "2026-11-25 or 2026-11-25T09:00"
        raise argparse.ArgumentTypeError(f"{text!r} is not a date or time ({example})") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: _Handler = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"fdep-gateway {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"fdep-gateway: bad configuration in {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
