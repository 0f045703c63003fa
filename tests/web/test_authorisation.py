"""Who may reach what, over real HTTP: every route for anonymous, an institution and an operator.

``inst-a`` is institution 41210000 (its BOM file is "own"), ``inst-b`` 41220000 (its file is "other's").
"""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from contextlib import AbstractContextManager

import httpx
import pytest

from tests.web.conftest import PASSWORDS, Site, csrf_of, login, post_login

ANON, INST, OPS = "anonymous", "inst-a", "ops"
TO_LOGIN = (303, "/login")
MISSING_ID = "20200101-000000-000000-0000"

# (case, method, path) -> {role: status or (status, Location)}
TABLE: list[tuple[str, str, str, dict[str, object]]] = [
    ("home", "GET", "/", {ANON: TO_LOGIN, INST: (303, "/files"), OPS: (303, "/ops")}),
    ("login page", "GET", "/login", {ANON: 200, INST: 200, OPS: 200}),
    ("login wrong password", "POST", "/login", {ANON: 401, INST: 401, OPS: 401}),
    ("logout", "POST", "/logout", {ANON: TO_LOGIN, INST: TO_LOGIN, OPS: TO_LOGIN}),
    ("file list", "GET", "/files", {ANON: TO_LOGIN, INST: 200, OPS: 200}),
    ("own file", "GET", "/files/{own}", {ANON: TO_LOGIN, INST: 200, OPS: 200}),
    ("other's file", "GET", "/files/{other}", {ANON: TO_LOGIN, INST: 404, OPS: 200}),
    ("no such file", "GET", "/files/20200101-000000-000000-0000", {ANON: TO_LOGIN, INST: 404, OPS: 404}),
    ("own receipt", "GET", "/files/{own}/receipt", {ANON: TO_LOGIN, INST: 200, OPS: 200}),
    ("other's receipt", "GET", "/files/{other}/receipt", {ANON: TO_LOGIN, INST: 404, OPS: 200}),
    ("receipts zip", "GET", "/receipts.zip", {ANON: TO_LOGIN, INST: 200, OPS: 200}),
    ("operator view", "GET", "/ops", {ANON: TO_LOGIN, INST: 403, OPS: 200}),
    ("replay", "POST", "/ops/replay", {ANON: TO_LOGIN, INST: 403, OPS: (303, "/ops")}),
    ("style sheet", "GET", "/static/console.css", {ANON: 200, INST: 200, OPS: 200}),
]
CASES = [
    pytest.param(method, path, role, expected, id=f"{case}-{role}")
    for case, method, path, expected_by_role in TABLE
    for role, expected in expected_by_role.items()
]


def client_for(site: Site, role: str) -> AbstractContextManager[httpx.Client]:
    if role == ANON:
        return httpx.Client(base_url=site.url, timeout=30)
    return login(site.url, role)


@pytest.mark.parametrize(("method", "path", "role", "expected"), CASES)
def test_route_by_role(site: Site, method: str, path: str, role: str, expected: object) -> None:
    path = path.format(own=site.files["a_bad"]["file_id"], other=site.files["b_good"]["file_id"])
    with client_for(site, role) as client:
        if method == "GET":
            response = client.get(path)
        else:
            form = {"csrf_token": csrf_of(client, "/login"), "file_id": site.files["a_good"]["file_id"]}
            if path == "/login":
                form.update(username=role, password="not-the-password")  # noqa: S106
            response = client.post(path, data=form)
    status, location = expected if isinstance(expected, tuple) else (expected, None)
    assert response.status_code == status, response.text[-1500:]
    if location is not None:
        assert response.headers["location"] == location


def test_every_route_is_in_the_table(site: Site) -> None:
    from gateway.web.app import create_app

    app = create_app(_console_stub(site), secret="x" * 32)
    served = {
        (m, r.path) for r in app.routes if hasattr(r, "methods") for m in r.methods or () if m != "HEAD"
    }
    served |= {("GET", "/static/console.css")}
    tabled = {
        (m, re.sub(r"\{own\}|\{other\}|20200101-000000-000000-0000", "{file_id}", p)) for _, m, p, _ in TABLE
    }
    assert served <= tabled, served - tabled


def _console_stub(site: Site) -> object:
    from gateway.config import load_config
    from gateway.web.accounts import Accounts
    from gateway.web.app import Console
    from gateway.web.audit import AuditLog
    from gateway.web.reader import HistoryIndex

    config = load_config(site.gateway.config_path)
    root = site.gateway.root / "stub"
    return Console(
        config,
        HistoryIndex(config.history.dir, root / "index.sqlite"),
        Accounts(root / "accounts.sqlite"),
        AuditLog(root / "audit.jsonl"),
    )


# -- an institution never learns anything of another ------------------------------------------------------


def test_another_institutions_file_looks_like_no_file(site: Site) -> None:
    other = site.files["b_good"]
    with login(site.url, "inst-a") as client:
        guessed = client.get(f"/files/{other['file_id']}")
        missing = client.get(f"/files/{MISSING_ID}")
        assert guessed.status_code == missing.status_code == 404
        # the same page, but for the address it echoes (the language switch links back to it)
        assert guessed.text.replace(other["file_id"], "ID") == missing.text.replace(MISSING_ID, "ID")
        for query in (
            {"name": other["name"]},
            {"name": "41220000"},
            {"table": "D1001", "institution": "41220000"},
            {"transfer_code": "TC41220000", "page": "0"},
        ):
            found = results(client.get("/files", params=query).text)  # the page echoes the search itself
            assert other["name"] not in found and other["file_id"] not in found and "41220000" not in found
        own = results(client.get("/files").text)
        assert site.files["a_bad"]["name"] in own and site.files["a_good"]["name"] in own
        for query in ({}, {"name": other["name"]}, {"institution": "41220000"}):
            zipped = client.get("/receipts.zip", params=query)
            with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
                listed = archive.namelist()
                assert not any("41220000" in n or other["file_id"] in n for n in listed)
                assert not any("41220000" in archive.read(n).decode() for n in listed)
        with zipfile.ZipFile(io.BytesIO(client.get("/receipts.zip").content)) as archive:
            assert f"{site.files['a_bad']['file_id']}/" in " ".join(archive.namelist())


def results(page: str) -> str:
    """The result table of a files page ("" when nothing matched)."""
    match = re.search(r'<table id="files">.*?</table>', page, re.S)
    return match.group(0) if match else ""


def test_restricted_table_never_shows_values(site: Site) -> None:
    """An open table's finding shows its value; D1005's (是否受限) never does, not to operators either.

    The daemon already keeps restricted values out of the history; these events are written here with
    values, so the console's own guard is what is tested.
    """
    from gateway.config import load_config
    from gateway.store.history import HistoryEvent, HistoryWriter

    config = load_config(site.gateway.config_path)
    ids = {"D1001": "20200102-000000-000000-0001", "D1005": "20200102-000000-000000-0002"}
    finding = {
        "code": "ENUM_INVALID",
        "severity": "error",
        "message_zh": "m",
        "message_en": "m",
        "hint_zh": "h",
        "hint_en": "h",
        "line": 1,
        "field_no": 4,
        "field": "JGLX",
    }
    with HistoryWriter(config.history.dir, config.zone) as writer:
        writer.append(
            [
                HistoryEvent(
                    event="rejected",
                    file_id=file_id,
                    station="k1237",
                    transfer_code="TC41210000",
                    institution="41210000",
                    table=table,
                    name=f"{table}.TXT",
                    message="rejected",
                    findings=[{**finding, "value": f"VALUE-OF-{table}"}],
                    findings_total=1,
                )
                for table, file_id in ids.items()
            ]
        )
    for user in ("inst-a", "ops"):
        with login(site.url, user) as client:
            open_page = client.get(f"/files/{ids['D1001']}").text
            restricted_page = client.get(f"/files/{ids['D1005']}").text
        assert "VALUE-OF-D1001" in open_page
        assert "ENUM_INVALID" in restricted_page and "VALUE-OF-D1005" not in restricted_page


# -- CSRF --------------------------------------------------------------------------------------------------


def quarantined_id(site: Site) -> str:
    return str(site.files["a_bad"]["file_id"])


@pytest.mark.parametrize("sent", [None, "forged", "other-session"])
def test_replay_without_the_sessions_token_is_refused(site: Site, sent: str | None) -> None:
    with login(site.url, "ops") as client:
        form = {"file_id": quarantined_id(site)}
        if sent == "forged":
            form["csrf_token"] = "A" * 43
        elif sent == "other-session":
            with httpx.Client(base_url=site.url) as stranger:
                form["csrf_token"] = csrf_of(stranger, "/login")
        response = client.post("/ops/replay", data=form)
    assert response.status_code == 403
    assert not any(
        e["event"] == "replayed" and e["file_id"] == quarantined_id(site) for e in site.gateway.events()
    )


def test_login_and_logout_need_the_token(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        client.get("/login")
        response = client.post("/login", data={"username": "ops", "password": PASSWORDS["ops"]})
        assert response.status_code == 403
        assert client.get("/ops").status_code == 303  # not logged in
    with login(site.url, "ops") as client:
        assert client.post("/logout", data={}).status_code == 403
        assert client.get("/ops").status_code == 200  # still logged in


def test_logout_ends_the_session_even_for_a_copied_cookie(site: Site) -> None:
    with login(site.url, "inst-b") as client:
        copied = dict(client.cookies)
        assert client.post("/logout", data={"csrf_token": csrf_of(client, "/files")}).status_code == 303
    with httpx.Client(base_url=site.url, cookies=copied) as replayer:
        response = replayer.get("/files")
    assert (response.status_code, response.headers.get("location")) == TO_LOGIN


def test_session_cookie_is_signed_httponly_and_samesite(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        response = post_login(client, "inst-a", PASSWORDS["inst-a"])
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        value = client.cookies["fdep_console"]
        signature = value.partition(".")[2]  # itsdangerous: payload.timestamp.signature
        forged = json.dumps({"user": "ops", "role": "operator", "generation": 0}).encode()

        client.cookies.set("fdep_console", base64.b64encode(forged).decode() + "." + signature)
        assert client.get("/ops").status_code == 303  # the signature no longer matches: no session


def test_audit_has_logins_and_operator_actions(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        post_login(client, "inst-a", "wrong-password-here")
    with login(site.url, "ops") as client:
        client.post(
            "/ops/replay",
            data={"csrf_token": csrf_of(client, "/ops"), "file_id": "20200101-000000-000000-0000"},
        )
    lines = [json.loads(line) for line in site.audit()]
    assert any(a["action"] == "login" and a["user"] == "inst-a" and a["outcome"] == "bad" for a in lines)
    assert any(a["action"] == "login" and a["user"] == "ops" and a["outcome"] == "ok" for a in lines)
    assert any(a["action"] == "replay" and a["user"] == "ops" and a["outcome"] == "failed" for a in lines)
    assert not any("password" in line for line in site.audit())


def test_a_page_number_past_any_file_is_an_empty_page_not_an_error(site: Site) -> None:
    with client_for(site, "inst-a") as client:
        response = client.get("/files", params={"page": "100000000000000000000"})
    assert response.status_code == 200
