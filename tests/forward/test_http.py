"""HTTP core, one attempt at a time, against a real server on 127.0.0.1."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import HttpRoute
from gateway.forward import ForwardError, HttpForwarder, Rejected, TaskNotReady, Transient, make_forwarder
from gateway.forward.base import Misconfigured
from tests.forward.helpers import (
    NAME,
    Core,
    Reply,
    current_rss,
    free_port,
    outbound,
    peak_rss_since_reset,
    write_big_file,
)

MakeFile = Callable[[bytes], Path]
DATA = "41210000|示例基金销售有限公司|913100000000000000|01||||20220401\n".encode() * 500


def http_route(url: str, **overrides: Any) -> HttpRoute:
    return HttpRoute.model_validate({"type": "http", "url": url, "timeout_seconds": 2, **overrides})


@pytest.fixture
async def forwarder(core: Core) -> AsyncIterator[HttpForwarder]:
    sender = HttpForwarder(http_route(core.url))
    yield sender
    await sender.aclose()


async def test_make_forwarder_builds_an_http_forwarder(core: Core) -> None:
    sender = make_forwarder(http_route(core.url))
    assert isinstance(sender, HttpForwarder)
    await sender.aclose()


async def test_put_streams_the_exact_body_with_every_header(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    item = outbound(make_file(DATA), file_id="01J2ABCDEF")
    where = await forwarder.send(item)
    [request] = core.requests
    assert request.method == "PUT"
    assert request.path == "/files/01J2ABCDEF"
    assert request.body == DATA
    assert request.headers["content-length"] == str(len(DATA))
    assert "transfer-encoding" not in request.headers  # a plain body of known length, not chunked
    expected = {
        "x-station": "k1237",
        "x-transfer-code": "TC41210000",
        "x-institution": "41210000",
        "x-table": "D1001",
        "x-data-date": "20220401",
        "x-batch": "01",
        "x-mode": "Q",
        "x-sha256": hashlib.sha256(DATA).hexdigest(),
        "x-file-name": NAME,
    }
    assert {k: request.headers.get(k) for k in expected} == expected
    assert where == f"PUT {core.url}/files/01J2ABCDEF: 201"


async def test_empty_file_is_put_with_length_zero(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    await forwarder.send(outbound(make_file(b"")))
    [request] = core.requests
    assert request.headers["content-length"] == "0"
    assert request.body == b""


async def test_base_url_path_is_kept(core: Core, make_file: MakeFile) -> None:
    sender = HttpForwarder(http_route(core.url + "/core/api/"))
    try:
        await sender.send(outbound(make_file(b"x"), file_id="F1"))
    finally:
        await sender.aclose()
    assert core.requests[0].path == "/core/api/files/F1"


async def test_non_ascii_file_name_is_percent_encoded(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    await forwarder.send(outbound(make_file(b"x"), name="报送 文件.TXT"))
    header = core.requests[0].headers["x-file-name"]
    assert header == "%E6%8A%A5%E9%80%81%20%E6%96%87%E4%BB%B6.TXT"


async def test_same_file_id_put_twice_is_the_same_request(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    item = outbound(make_file(DATA))
    core.script(Reply(201), Reply(200, {"message": "already have it"}))
    first = await forwarder.send(item)
    second = await forwarder.send(item)
    one, two = core.requests
    assert (one.path, one.headers["x-sha256"], one.body) == (two.path, two.headers["x-sha256"], two.body)
    assert first.endswith("201")
    assert second.endswith("200")


async def test_409_task_not_in_preparation_is_task_not_ready(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    core.script(Reply(409, {"code": "TASK_NOT_IN_PREPARATION", "message": "任务不在数据准备状态"}))
    with pytest.raises(TaskNotReady) as caught:
        await forwarder.send(outbound(make_file(b"x")))
    assert caught.value.core_message == "任务不在数据准备状态"


@pytest.mark.parametrize("body", [{"code": "VERSION_CONFLICT", "message": "a newer batch exists"}, b""])
async def test_a_409_without_the_task_code_is_retried_never_a_rejection(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile, body: dict[str, str] | bytes
) -> None:
    """The contract (docs/http-core.md) keeps 409 for the task state: a core that answers a repeated
    PUT of a file it holds with 409 must not have the file rejected (it was CORE_REJECTED)."""
    core.script(Reply(409, body))
    with pytest.raises(Transient) as caught:
        await forwarder.send(outbound(make_file(b"x")))
    assert "TASK_NOT_IN_PREPARATION" in str(caught.value)


async def test_a_redirect_is_a_misconfigured_route(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    core.script(Reply(301, headers={"Location": "http://elsewhere/files"}))
    with pytest.raises(Misconfigured) as caught:
        await forwarder.send(outbound(make_file(b"x")))
    assert "http://elsewhere/files" in str(caught.value)


async def test_a_repeat_of_a_held_file_id_is_a_success_at_the_test_core(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    """Both sides of the contract: the test core holds what it answered 2xx for, even when the answer
    was cut off mid-body; the repeat answers 200 ALREADY_HELD, other bytes 422."""
    core.script(Reply(201, {"code": "STORED", "message": "stored, and a long message " * 20}, partial=True))
    item = outbound(make_file(b"x"))
    with pytest.raises(Transient):
        await forwarder.send(item)
    assert "200" in await forwarder.send(item)
    with pytest.raises(Rejected) as caught:
        await forwarder.send(outbound(make_file(b"y")))
    assert caught.value.core_message == "file id held with other bytes"


async def test_400_is_rejected_with_the_core_message(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    core.script(Reply(400, {"code": "BAD_FIELD", "message": "第3行 JGMC 超长"}))
    with pytest.raises(Rejected) as caught:
        await forwarder.send(outbound(make_file(b"x")))
    assert caught.value.code == "CORE_REJECTED"
    assert caught.value.core_message == "第3行 JGMC 超长"
    finding = caught.value.finding()
    assert finding.code == "CORE_REJECTED"
    assert "第3行 JGMC 超长" in finding.message_zh
    assert "第3行 JGMC 超长" in str(caught.value)


async def test_4xx_text_body_is_the_message_cut_to_500_chars(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    core.script(Reply(422, "没有" * 400, headers={"Content-Type": "text/plain; charset=utf-8"}))
    with pytest.raises(Rejected) as caught:
        await forwarder.send(outbound(make_file(b"x")))
    assert caught.value.core_message == ("没有" * 400)[:500]


async def test_4xx_without_body_names_the_status(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    core.script(Reply(403))
    with pytest.raises(Rejected, match="HTTP 403 Forbidden"):
        await forwarder.send(outbound(make_file(b"x")))


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429, 301])
async def test_server_errors_busy_and_redirects_are_transient(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile, status: int
) -> None:
    core.script(Reply(status, "try later", headers={"Location": "https://elsewhere/"}))
    with pytest.raises(Transient, match=str(status)):
        await forwarder.send(outbound(make_file(b"x")))


async def test_no_answer_within_timeout_is_transient(core: Core, make_file: MakeFile) -> None:
    core.script(Reply(201, delay=5))
    sender = HttpForwarder(http_route(core.url, timeout_seconds=0.2))
    try:
        with pytest.raises(Transient, match="timeout"):
            await sender.send(outbound(make_file(b"x")))
    finally:
        await sender.aclose()


async def test_refused_connection_is_transient(make_file: MakeFile) -> None:
    sender = HttpForwarder(http_route(f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(Transient, match="ConnectError"):
            await sender.send(outbound(make_file(b"x")))
    finally:
        await sender.aclose()


async def test_connection_dropped_without_answer_is_transient(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    core.script(Reply(close=True))
    with pytest.raises(Transient, match="RemoteProtocolError"):
        await forwarder.send(outbound(make_file(b"x")))


@pytest.mark.parametrize("change", ["content", "longer", "shorter"])
async def test_file_changed_since_validation_never_reaches_the_core_complete(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile, change: str
) -> None:
    original = b"a|b\n" * 800_000  # 3.2 MB: several chunks
    path = make_file(original)
    item = outbound(path)
    changed = {"content": original[:-2] + b"c\n", "longer": original + b"a", "shorter": original[:-1]}[change]
    path.write_bytes(changed)
    with pytest.raises(ForwardError, match="no longer matches") as caught:
        await forwarder.send(item)
    assert not isinstance(caught.value, Transient | Rejected)
    assert core.complete_requests() == []


async def test_missing_spool_file_is_not_blamed_on_the_core(
    core: Core, forwarder: HttpForwarder, make_file: MakeFile
) -> None:
    path = make_file(b"x")
    item = outbound(path)
    path.unlink()
    with pytest.raises(FileNotFoundError):
        await forwarder.send(item)
    assert core.complete_requests() == []


async def test_100_mb_body_is_streamed_in_bounded_memory(
    core: Core, forwarder: HttpForwarder, tmp_path: Path
) -> None:
    core.keep_bodies = False
    item = outbound(write_big_file(tmp_path / "big", 100))
    baseline = current_rss()
    peak = peak_rss_since_reset()
    await forwarder.send(item)
    grown = peak() - baseline
    assert grown < 30 * 2**20, f"peak RSS grew by {grown / 2**20:.0f} MiB while sending 100 MiB"
    [request] = core.requests
    assert (request.size, request.sha256) == (item.size, item.sha256)
