"""The console's pages: an ASGI app (Starlette), server-rendered with Jinja2.

Every route decides who may see it in one place (``_require``); an institution's reads all go through
its own transfer codes, and anything outside them answers exactly like a file that does not exist.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.config import GatewayConfig
from gateway.ops.operate import ReplayError, mailbox_status, replay_file, summed
from gateway.pipeline.receipts import find_receipt
from gateway.web.accounts import Account, Accounts, LoginResult, Role
from gateway.web.audit import AuditLog
from gateway.web.i18n import LANGUAGES, text
from gateway.web.reader import STATE_EVENTS, ConsoleReader, FileFilter, FileRow
from gateway.web.security import CSRF_FIELD, SecurityHeaders, Throttle, csrf_ok, csrf_token
from spool.ids import is_file_id
from spool.layout import SpoolLayout, State, StationLayout
from spool.recovery import StateEntry, scan_states

PAGE = 50
RECEIPTS_MAX = 1000
MAX_PAGE = 1_000_000
"""Pages beyond this hold nothing (50 million files); a larger number must not overflow SQLite's LIMIT."""
_HERE = Path(__file__).parent
_LIST_LIMIT = 200


@dataclass
class Console:
    config: GatewayConfig
    reader: ConsoleReader
    accounts: Accounts
    audit: AuditLog
    throttle: Throttle = field(default_factory=Throttle)

    def codes_of(self, account: Account) -> frozenset[str] | None:
        """The transfer codes an account may see; None is every code (operators)."""
        if account.role is Role.OPERATOR:
            return None
        codes = self.config.transfer_codes.items()
        return frozenset(code for code, entry in codes if entry.institution == account.institution)

    def restricted(self, table: str | None) -> bool:
        """Whether values must be hidden: a restricted table, or one the catalogue does not know."""
        spec = self.config.tables.get(table or "")
        return spec is None or spec.restricted


def create_app(console: Console, *, secret: str) -> Starlette:
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    config = console.config.web
    routes = [
        Route("/", _home),
        Route("/login", _login_page, methods=["GET"]),
        Route("/login", _login, methods=["POST"]),
        Route("/logout", _logout, methods=["POST"]),
        Route("/files", _files),
        Route("/files/{file_id}", _file),
        Route("/files/{file_id}/receipt", _receipt),
        Route("/receipts.zip", _receipts_zip),
        Route("/ops", _ops),
        Route("/ops/replay", _replay, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="fdep_console",
                max_age=int(config.session_hours * 3600),
                same_site="strict",
                https_only=config.secure_cookies or config.tls_cert is not None,
            ),
        ],
        exception_handlers={HTTPException: _error},
    )
    app.state.console = console
    app.state.templates = templates
    return app


# -- helpers ------------------------------------------------------------------------------------------


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _lang(request: Request) -> str:
    chosen = request.query_params.get("lang")
    if chosen in LANGUAGES:
        request.session["lang"] = chosen
    lang = request.session.get("lang")
    return lang if lang in LANGUAGES else "zh"


def _account(request: Request) -> Account | None:
    """The logged-in account, read again from the accounts store (a removed account is logged out)."""
    username = request.session.get("user")
    if not isinstance(username, str):
        return None
    account = _console(request).accounts.get(username)
    if (
        account is None
        or account.role.value != request.session.get("role")
        or account.generation != request.session.get("generation")
    ):
        request.session.clear()
        return None
    return account


def _require(request: Request, role: Role | None = None) -> Account:
    """The account, if logged in and (when ``role`` is given) of that role; else 303 to login or 403."""
    account = _account(request)
    if account is None:
        raise HTTPException(303, headers={"Location": "/login"})
    if role is not None and account.role is not role:
        raise HTTPException(403)
    return account


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def _render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    lang = _lang(request)
    templates: Jinja2Templates = request.app.state.templates

    switch = {**request.query_params, "lang": "en" if lang == "zh" else "zh"}
    return templates.TemplateResponse(
        request,
        template,
        {
            "t": lambda key: text(key, lang),
            "lang": lang,
            "account": context.pop("account", None),
            "csrf_field": CSRF_FIELD,
            "csrf": csrf_token(request.session),
            "switch_to": f"{request.url.path}?{urlencode(switch)}",
            "when": _when,
            **context,
        },
        status_code=status,
    )


def _when(ts: object) -> str:
    try:
        return datetime.fromisoformat(str(ts)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(ts)


async def _error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    if exc.status_code == 303 and exc.headers:
        return RedirectResponse(exc.headers["Location"], status_code=303)
    if exc.detail == "csrf":
        key = "csrf"
    else:
        key = {403: "forbidden", 404: "not_found"}.get(exc.status_code, "error")
    return _render(request, "error.html", status=exc.status_code, message_key=key, account=_account(request))


async def _form_with_csrf(request: Request) -> dict[str, str]:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(request.session, values.get(CSRF_FIELD)):
        raise HTTPException(403, detail="csrf")
    return values


# -- routes -------------------------------------------------------------------------------------------


async def _home(request: Request) -> Response:
    account = _account(request)
    if account is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/ops" if account.role is Role.OPERATOR else "/files", status_code=303)


async def _login_page(request: Request) -> Response:
    return _render(request, "login.html", account=_account(request))


async def _login(request: Request) -> Response:
    console = _console(request)
    form = await request.form()
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    ip = _client(request)
    if not csrf_ok(request.session, form.get(CSRF_FIELD)):
        console.audit.write("login", user=username, ip=ip, outcome="csrf")
        return _render(request, "login.html", status=403, error="csrf")
    if not console.throttle.allow(ip):
        console.audit.write("login", user=username, ip=ip, outcome="throttled")
        return _render(request, "login.html", status=429, error="login_throttled")
    result, account = await asyncio.to_thread(console.accounts.login, username, password)
    console.audit.write("login", user=username, ip=ip, outcome=result.value)
    if result is LoginResult.LOCKED:
        return _render(request, "login.html", status=403, error="login_locked")
    if account is None:
        return _render(request, "login.html", status=401, error="login_bad")
    lang = request.session.get("lang")
    request.session.clear()  # a fresh session (and CSRF token) at login: no fixation
    request.session.update(
        {"user": account.username, "role": account.role.value, "generation": account.generation}
    )
    if lang in LANGUAGES:
        request.session["lang"] = lang
    return RedirectResponse("/", status_code=303)


async def _logout(request: Request) -> Response:
    await _form_with_csrf(request)
    account = _account(request)
    console = _console(request)
    if account is not None:
        await asyncio.to_thread(console.accounts.end_sessions, account.username)
    user = account.username if account else None
    console.audit.write("logout", user=user, ip=_client(request), outcome="ok")
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _search(request: Request) -> FileFilter:
    q = request.query_params
    state = q.get("state") or None
    return FileFilter(
        table=(q.get("table") or "").strip() or None,
        date=(q.get("date") or "").strip() or None,
        name=(q.get("name") or "").strip() or None,
        state=state if state in STATE_EVENTS else None,
    )


async def _files(request: Request) -> Response:
    account = _require(request)
    console = _console(request)
    q = request.query_params
    flt = _search(request)
    try:
        page = min(max(0, int(q.get("page") or 0)), MAX_PAGE)
    except ValueError:
        page = 0
    rows = await asyncio.to_thread(
        console.reader.files, console.codes_of(account), flt, limit=PAGE + 1, offset=page * PAGE
    )
    search = {"table": flt.table, "date": flt.date, "name": flt.name, "state": flt.state}
    given = {k: v for k, v in search.items() if v}
    base = URL("/files").include_query_params(**given)
    return _render(
        request,
        "files.html",
        account=account,
        rows=rows[:PAGE],
        flt=flt,
        states=STATE_EVENTS,
        newer=str(base.include_query_params(page=page - 1)) if page > 0 else None,
        older=str(base.include_query_params(page=page + 1)) if len(rows) > PAGE else None,
        receipts=str(URL("/receipts.zip").include_query_params(**given)),
    )


async def _own_file(request: Request) -> tuple[Account, FileRow]:
    account = _require(request)
    console = _console(request)
    file_id = request.path_params["file_id"]
    row = None
    if is_file_id(file_id):
        row = await asyncio.to_thread(console.reader.file, console.codes_of(account), file_id)
    if row is None:
        raise HTTPException(404)
    return account, row


async def _file(request: Request) -> Response:
    account, row = await _own_file(request)
    console = _console(request)
    hide = console.restricted(row.table)
    events = []
    for event in await asyncio.to_thread(console.reader.events, row.file_id):
        findings = [dict(f) for f in event.get("findings") or [] if isinstance(f, dict)]
        if hide:
            for finding in findings:
                finding.pop("value", None)
        detail = event.get("detail") if account.role is Role.OPERATOR else None
        events.append({**event, "findings": findings, "detail": detail})
    receipt = await asyncio.to_thread(_receipt_text, console.config, row)
    return _render(request, "file.html", account=account, row=row, events=events, receipt=receipt)


def _receipt_file(config: GatewayConfig, row: FileRow) -> tuple[str, str] | None:
    """The file's own receipt from its out/ (not a later file's of the same name): its name there (the
    spec's, or the distinct one it had to take) and its text; None when there is none."""
    if not (row.station and row.transfer_code and row.name) or "/" in row.name:
        return None
    try:
        outbox = SpoolLayout(config.spool_root).station(row.station).outbox(row.transfer_code)
    except ValueError:
        return None
    found = find_receipt(outbox, row.name, row.file_id)
    return None if found is None else (found[0].name, found[1].decode("utf-8", errors="replace"))


def _receipt_text(config: GatewayConfig, row: FileRow) -> str | None:
    found = _receipt_file(config, row)
    return None if found is None else found[1]


async def _receipt(request: Request) -> Response:
    _, row = await _own_file(request)
    found = await asyncio.to_thread(_receipt_file, _console(request).config, row)
    if found is None:
        raise HTTPException(404)
    name, content = found
    filename = name.encode("ascii", "replace").decode()
    return PlainTextResponse(
        content,
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename.replace(chr(34), "_")}"'},
    )


async def _receipts_zip(request: Request) -> Response:
    """The receipts still in out/ of the files the search finds (the newest ``RECEIPTS_MAX``), zipped."""
    account = _require(request)
    console = _console(request)
    flt = _search(request)
    rows = await asyncio.to_thread(console.reader.files, console.codes_of(account), flt, limit=RECEIPTS_MAX)
    data = await asyncio.to_thread(_zip_receipts, console.config, rows)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="receipts.zip"'},
    )


def _zip_receipts(config: GatewayConfig, rows: list[FileRow]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for row in rows:
            found = _receipt_file(config, row)
            if found is not None:
                archive.writestr(f"{row.file_id}/{found[0]}", found[1])
    return buffer.getvalue()


async def _ops(request: Request) -> Response:
    account = _require(request, Role.OPERATOR)
    console = _console(request)
    view = await asyncio.to_thread(_operator_view, console)
    notice = request.session.pop("notice", None)
    return _render(request, "ops.html", account=account, notice=notice, **view)


def _operator_view(console: Console) -> dict[str, Any]:
    config = console.config
    layout = SpoolLayout(config.spool_root)
    today = datetime.now(config.zone).strftime("%Y%m%d")
    stations, mailboxes = [], []
    deferred: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    for name in config.stations:
        rows = mailbox_status(layout, name, today)
        stations.append(summed(name, rows))
        mailboxes += rows
        station = layout.station(name)
        for entry in scan_states(station, states=(State.DEFERRED, State.QUARANTINE)):
            if entry.state is State.DEFERRED:
                event = console.reader.last_event(entry.file_id, "deferred")
                deferred.append({"entry": entry, "station": name, "reason": (event or {}).get("message")})
            else:
                quarantine.append({"entry": entry, "station": name, "reason": _reason(station, entry)})
    quarantine.sort(key=lambda q: str(q["entry"].file_id), reverse=True)
    return {
        "stations": stations,
        "mailboxes": mailboxes,
        "deferred": deferred[:_LIST_LIMIT],
        "quarantine": quarantine[:_LIST_LIMIT],
    }


def _reason(station: StationLayout, entry: StateEntry) -> list[dict[str, Any]]:
    if entry.day is None:
        return []
    try:
        path = station.reason_path(entry.tc, entry.file_id, entry.day)
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    findings = data.get("findings") if isinstance(data, dict) else None
    return [f for f in findings or [] if isinstance(f, dict)][:3]


async def _replay(request: Request) -> Response:
    account = _require(request, Role.OPERATOR)
    console = _console(request)
    form = await _form_with_csrf(request)
    file_id = form.get("file_id", "")
    ip = _client(request)
    if not is_file_id(file_id):
        console.audit.write("replay", user=account.username, ip=ip, outcome="bad-id", file_id=file_id[:64])
        raise HTTPException(404)
    try:
        message = await asyncio.to_thread(
            replay_file, console.config, file_id, by=f"console:{account.username}"
        )
    except ReplayError as exc:
        console.audit.write("replay", user=account.username, ip=ip, outcome="failed", file_id=file_id)
        request.session["notice"] = ["replay_failed", str(exc)]
    else:
        console.audit.write("replay", user=account.username, ip=ip, outcome="ok", file_id=file_id)
        request.session["notice"] = ["replayed_ok", message]
    return RedirectResponse("/ops", status_code=303)
