"""The real daemon against a real HTTP core on 127.0.0.1 (spec 10): answers, retries, deferral, restarts.

The core is the scriptable server of the forwarder tests: it answers a scripted list of replies, then a
default, and records every request (headers, body) it got.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.daemon import (
    ORG,
    TC,
    Gateway,
    d1001_body,
    d1001_name,
    drop,
    launch,
    receipt_head,
    state_files,
    wait_for,
    yesterday,
)
from tests.conftest import base_config
from tests.forward.helpers import Core, Reply, free_port

NOT_READY = Reply(409, {"code": "TASK_NOT_IN_PREPARATION", "message": "任务不在数据准备状态"})


@pytest.fixture
def core() -> Iterator[Core]:
    server = Core()
    yield server
    server.stop()


def use_http_core(gateway: Gateway, url: str, **route: Any) -> None:
    """Route the test station k1237 to an HTTP core with waits small enough for a test."""
    routes = base_config(gateway.root)["routes"]
    routes["core-test"] = {
        "type": "http",
        "url": url,
        "timeout_seconds": 2,
        "task_retry_seconds": 0.2,
        "task_retry_total_seconds": 30,
        "max_backoff_seconds": 0.2,
        **route,
    }
    gateway.write_config(routes=routes)


def kinds(gateway: Gateway, name: str) -> list[str]:
    return [e["event"] for e in gateway.events() if e["name"] == name]


def event(gateway: Gateway, name: str, kind: str) -> dict[str, Any]:
    (found,) = [e for e in gateway.events() if e["name"] == name and e["event"] == kind]
    return found


def deferred_dir(gateway: Gateway) -> Path:
    return gateway.spool / "k1237" / ".gateway" / "deferred" / TC


def drop_one(gateway: Gateway, rows: int = 3) -> tuple[str, bytes]:
    name, body = d1001_name(), d1001_body(rows=rows)
    drop(gateway.inbox(), name, body)
    return name, body


def wait_outcome(gateway: Gateway, name: str, timeout: float = 30) -> None:
    """Until the file's outcome is recorded and the file itself has reached archive/ or quarantine/.

    The history event comes first (durable before anything else), then the receipt, then the move.
    """

    def ended() -> bool:
        done = state_files(gateway, "archive") + state_files(gateway, "quarantine")
        return name in gateway.outcomes() and any(p.name.endswith(f".{name}") for p in done)

    wait_for(ended, timeout=timeout, what=f"the outcome of {name}")


def test_2xx_is_forwarded_with_the_spec_headers_and_the_exact_body(gateway: Gateway, core: Core) -> None:
    use_http_core(gateway, core.url)
    name, body = drop_one(gateway, rows=25)
    gateway.drain()
    assert kinds(gateway, name) == ["received", "forwarded"]
    forwarded = event(gateway, name, "forwarded")
    file_id = forwarded["file_id"]
    (request,) = core.requests
    assert request.method == "PUT" and request.path == f"/files/{file_id}"
    assert request.complete and request.body == body
    headers = request.headers
    assert {k: headers.get(k.lower()) for k in SPEC_HEADERS} == {
        "X-Station": "k1237",
        "X-Transfer-Code": TC,
        "X-Institution": ORG,
        "X-Table": "D1001",
        "X-Data-Date": yesterday(),
        "X-Batch": "01",
        "X-Mode": "Q",
        "X-SHA256": hashlib.sha256(body).hexdigest(),
        "X-File-Name": name,
    }
    assert headers["content-length"] == str(len(body))
    assert f"/files/{file_id}" in forwarded["detail"]["core"] and "201" in forwarded["detail"]["core"]
    head = receipt_head(gateway.outbox() / f"{name[:-4]}_OK.TXT")
    assert head[1] == "OK" and head[2] == "25" and head[5] == file_id and head[6] == "forwarded"
    assert not gateway.core().exists() or not any(gateway.core().iterdir())  # the directory core is unused
    assert [p.name for p in state_files(gateway, "archive")] == [f"{file_id}.{name}"]


SPEC_HEADERS = (
    "X-Station",
    "X-Transfer-Code",
    "X-Institution",
    "X-Table",
    "X-Data-Date",
    "X-Batch",
    "X-Mode",
    "X-SHA256",
    "X-File-Name",
)


def test_409_task_not_ready_twice_then_201_is_deferred_then_forwarded(gateway: Gateway, core: Core) -> None:
    use_http_core(gateway, core.url)
    in_deferred: list[list[str]] = []  # what .gateway/deferred held as each request came in
    core.on_request = lambda _: in_deferred.append(sorted(p.name for p in deferred_dir(gateway).iterdir()))
    core.script(NOT_READY, NOT_READY, then=Reply(201))
    launch(gateway)
    name, body = drop_one(gateway)
    wait_outcome(gateway, name)
    assert kinds(gateway, name) == ["received", "deferred", "forwarded"]
    file_id = event(gateway, name, "forwarded")["file_id"]
    deferred = event(gateway, name, "deferred")
    assert "data-preparation" in deferred["detail"]["reason"] or "任务不在" in deferred["detail"]["reason"]
    assert "无需重发" in deferred["message"]  # tells the institution not to resend
    requests = core.requests
    assert [r.path for r in requests] == [f"/files/{file_id}"] * 3
    assert all(r.body == body for r in requests)
    assert requests[2].at - requests[1].at >= 0.15  # task_retry_seconds apart
    stored = f"{file_id}.{name}"
    assert in_deferred == [[], [stored], [stored]], "the retries must be sent from .gateway/deferred"
    assert list(deferred_dir(gateway).iterdir()) == []
    assert [p.name for p in state_files(gateway, "archive")] == [stored]
    assert receipt_head(gateway.outbox() / f"{name[:-4]}_OK.TXT")[6] == "forwarded"
    assert gateway.stop() == 0


def test_409_for_longer_than_the_task_retry_total_is_rejected_with_the_hint(
    gateway: Gateway, core: Core
) -> None:
    use_http_core(gateway, core.url, task_retry_seconds=0.2, task_retry_total_seconds=1)
    core.script(then=NOT_READY)
    launch(gateway)
    started = time.monotonic()
    name, _ = drop_one(gateway)
    wait_outcome(gateway, name)
    assert time.monotonic() - started >= 1
    assert kinds(gateway, name) == ["received", "deferred", "rejected"]
    rejected = event(gateway, name, "rejected")
    assert [f["code"] for f in rejected["findings"]] == ["TASK_NOT_IN_PREPARATION"]
    assert "数据准备状态" in rejected["message"]
    assert len(core.requests) >= 4  # retried every 0.2 s for 1 s
    lines = gateway.receipt(name, ok=False).splitlines()
    assert lines[0].split("|")[1] == "BAD" and lines[0].split("|")[6] == "rejected"
    finding = lines[1].split("|")
    assert finding[3] == "TASK_NOT_IN_PREPARATION"
    assert "退回数据准备状态" in finding[5], finding  # the hint: return the task, then resend
    assert not (gateway.outbox() / f"{name[:-4]}_OK.TXT").exists()
    assert list(deferred_dir(gateway).iterdir()) == []
    assert any(p.name.endswith(f".{name}") for p in state_files(gateway, "quarantine"))
    assert gateway.stop() == 0


def test_500_twice_then_201_is_retried_and_forwarded_once(gateway: Gateway, core: Core) -> None:
    use_http_core(gateway, core.url)
    core.script(Reply(500, "boom"), Reply(503, "busy"), then=Reply(201))
    launch(gateway)
    name, body = drop_one(gateway)
    wait_outcome(gateway, name)
    assert kinds(gateway, name) == ["received", "deferred", "forwarded"]
    file_id = event(gateway, name, "forwarded")["file_id"]
    assert "500" in event(gateway, name, "deferred")["detail"]["reason"]
    assert [(r.path, r.body) for r in core.requests] == [(f"/files/{file_id}", body)] * 3
    assert receipt_head(gateway.outbox() / f"{name[:-4]}_OK.TXT")[6] == "forwarded"
    assert gateway.stop() == 0


def test_400_is_rejected_as_core_rejected_with_the_cores_message(gateway: Gateway, core: Core) -> None:
    use_http_core(gateway, core.url)
    said = "SJRQ 与报送任务的期次不一致"
    core.script(then=Reply(400, {"code": "BAD_PERIOD", "message": said}))
    name, _ = drop_one(gateway)
    gateway.drain()
    assert kinds(gateway, name) == ["received", "rejected"]
    assert len(core.requests) == 1  # a 4xx is final: not retried
    rejected = event(gateway, name, "rejected")
    (finding,) = rejected["findings"]
    assert finding["code"] == "CORE_REJECTED" and said in finding["message_zh"]
    assert said in rejected["message"]
    line = gateway.receipt(name, ok=False).splitlines()[1].split("|")
    assert line[3] == "CORE_REJECTED" and said in line[4]
    assert not (gateway.outbox() / f"{name[:-4]}_OK.TXT").exists()
    assert any(p.name.endswith(f".{name}") for p in state_files(gateway, "quarantine"))


def test_core_hanging_past_the_timeout_then_answering_is_forwarded(gateway: Gateway, core: Core) -> None:
    use_http_core(gateway, core.url, timeout_seconds=0.5)
    core.script(Reply(201, delay=10), then=Reply(201))  # the first answer comes far too late
    launch(gateway)
    name, body = drop_one(gateway)
    wait_outcome(gateway, name)
    assert kinds(gateway, name) == ["received", "deferred", "forwarded"]
    file_id = event(gateway, name, "forwarded")["file_id"]
    assert "timeout" in event(gateway, name, "deferred")["detail"]["reason"].lower()
    requests = core.requests
    assert [(r.path, r.body) for r in requests] == [(f"/files/{file_id}", body)] * 2  # same id: idempotent
    assert requests[1].at - requests[0].at >= 0.5
    assert gateway.stop() == 0


def test_core_down_across_a_kill_9_keeps_the_file_deferred_and_forwards_it_once(gateway: Gateway) -> None:
    port = free_port()  # nothing listens: connections are refused
    use_http_core(gateway, f"http://127.0.0.1:{port}")
    launch(gateway)
    name, body = drop_one(gateway)
    wait_for(lambda: "deferred" in kinds(gateway, name), timeout=30, what="the deferral")
    file_id = event(gateway, name, "deferred")["file_id"]
    kept = deferred_dir(gateway) / f"{file_id}.{name}"
    assert kept.read_bytes() == body
    gateway.kill()

    offset = launch(gateway)
    wait_for(lambda: "forward_retry" in gateway.log()[offset:], timeout=30, what="a retry after the restart")
    assert kept.read_bytes() == body, "the deferred file must survive the restart where it was"
    assert name not in gateway.outcomes()

    late = Core(port)
    try:
        wait_outcome(gateway, name)
        assert kinds(gateway, name) == ["received", "deferred", "forwarded"]
        (request,) = late.requests  # exactly once at the core
        assert request.path == f"/files/{file_id}" and request.body == body
        assert event(gateway, name, "forwarded")["file_id"] == file_id
        assert not kept.exists() and list(deferred_dir(gateway).iterdir()) == []
        assert receipt_head(gateway.outbox() / f"{name[:-4]}_OK.TXT")[5:] == [file_id, "forwarded"]
        assert gateway.stop() == 0
        assert len(late.requests) == 1
    finally:
        late.stop()
