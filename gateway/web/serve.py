"""``fdep-gateway web`` and ``fdep-gateway web-user``: serve the console; manage its accounts.

The console is its own process, not a task in the daemon: a slow page or a crash of the web stack can
never hold up a file, it can run as a user with fewer rights, and it keeps working while the daemon is
restarted. It reads the history and the spool and changes the spool only through ``replay``, as the CLI.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from datetime import timedelta

from gateway.config import GatewayConfig
from gateway.web.accounts import AccountError, Accounts, Role
from gateway.web.settings import SecretError, accounts_path, audit_path, index_path, session_secret

EXIT_OK = 0
EXIT_FAILED = 1


def open_accounts(config: GatewayConfig) -> Accounts:
    return Accounts(
        accounts_path(config),
        max_failed=config.web.max_failed_logins,
        lockout=timedelta(minutes=config.web.lockout_minutes),
    )


def serve(config: GatewayConfig) -> int:
    import uvicorn

    from gateway.web.app import Console, create_app
    from gateway.web.audit import AuditLog
    from gateway.web.reader import HistoryIndex
    from gateway.web.security import Throttle

    try:
        secret = session_secret(config)
    except SecretError as exc:
        print(f"fdep-gateway web: {exc}", file=sys.stderr)
        return EXIT_FAILED
    reader = HistoryIndex(config.history.dir, index_path(config))
    reader.refresh()  # the first read of a long history happens here, not in someone's first page
    web = config.web
    console = Console(
        config,
        reader,
        open_accounts(config),
        AuditLog(audit_path(config)),
        Throttle(web.logins_per_address, web.logins_window_seconds),
    )
    host, port = web.listen.rsplit(":", 1)
    uvicorn.run(
        create_app(console, secret=secret),
        host=host,
        port=int(port),
        ssl_certfile=str(web.tls_cert) if web.tls_cert else None,
        ssl_keyfile=str(web.tls_key) if web.tls_key else None,
        proxy_headers=web.forwarded_allow_ips is not None,
        forwarded_allow_ips=web.forwarded_allow_ips,
        server_header=False,
        log_level="info",
    )
    return EXIT_OK


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def manage_users(config: GatewayConfig, args: argparse.Namespace) -> int:
    accounts = open_accounts(config)
    try:
        action = args.action
        if action == "add":
            role = Role.INSTITUTION if args.institution else Role.OPERATOR
            if role is Role.INSTITUTION and not any(
                e.institution == args.institution for e in config.transfer_codes.values()
            ):
                raise AccountError(f"no transfer code of institution {args.institution} in the registry")
            accounts.add(args.username, _password(args), role, args.institution)
            print(f"added {role.value} {args.username}")
        elif action == "passwd":
            accounts.set_password(args.username, _password(args))
            print(f"password of {args.username} changed")
        elif action == "remove":
            accounts.remove(args.username)
            print(f"removed {args.username}")
        elif action == "unlock":
            accounts.unlock(args.username)
            print(f"unlocked {args.username}")
        elif action == "list":
            for account, locked in accounts.all():
                scope = f" {account.institution}" if account.institution else ""
                print(f"{account.username}\t{account.role.value}{scope}{' LOCKED' if locked else ''}")
        else:
            return _demo(config, accounts)
    except AccountError as exc:
        print(f"fdep-gateway web-user: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        accounts.close()
    return EXIT_OK


def _demo(config: GatewayConfig, accounts: Accounts) -> int:
    """An operator and one account for the registry's first institution, with fresh random passwords."""
    institution = next((e.institution for e in config.transfer_codes.values()), None)
    made: list[tuple[str, Role, str | None]] = [("demo-operator", Role.OPERATOR, None)]
    if institution is not None:
        made.append((f"demo-{institution}", Role.INSTITUTION, institution))
    for username, role, scope in made:
        password = secrets.token_urlsafe(12)
        if accounts.get(username) is None:
            accounts.add(username, password, role, scope)
        else:
            accounts.set_password(username, password)
        print(f"{username}\t{password}\t{role.value}{' ' + scope if scope else ''}")
    return EXIT_OK
