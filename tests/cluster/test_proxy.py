"""The partition tests' proxy on its own: through, refused, blackholed, silenced, healed (what was held
or silenced goes on)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from harness.postgres import PostgresServer
from harness.proxy import TcpProxy


def test_the_proxy_forwards_cuts_and_heals(postgres_server: PostgresServer) -> None:
    with TcpProxy(postgres_server.port) as proxy:
        dsn = make_conninfo(postgres_server.dsn, port=proxy.port, connect_timeout=1)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
            proxy.cut("refuse")
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")  # the open connection is closed under it
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn)
        assert time.monotonic() - started < 0.9  # refused at once, not timed out

        proxy.cut("blackhole")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn)
        assert time.monotonic() - started >= 0.9  # held until the client's own timeout
        assert proxy.held >= 1

        answers: list[object] = []

        def connect_while_held() -> None:
            with psycopg.connect(make_conninfo(dsn, connect_timeout=10), autocommit=True) as conn:
                answers.append(conn.execute("SELECT 1").fetchone())

        held_before = proxy.held
        waiting = threading.Thread(target=connect_while_held)
        waiting.start()
        deadline = time.monotonic() + 5
        while proxy.held == held_before and time.monotonic() < deadline:
            time.sleep(0.05)
        proxy.heal()
        waiting.join(timeout=10)
        assert answers == [(1,)]  # the held connection went through once healed
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_silenced_connection_hangs_until_healed_then_goes_on(postgres_server: PostgresServer) -> None:
    with TcpProxy(postgres_server.port) as proxy:
        dsn = make_conninfo(postgres_server.dsn, port=proxy.port)
        with psycopg.connect(dsn, autocommit=True) as conn:
            proxy.cut("blackhole", close_open=False)
            answers: list[object] = []
            asking = threading.Thread(target=lambda: answers.append(conn.execute("SELECT 7").fetchone()))
            asking.start()
            asking.join(timeout=1)
            assert asking.is_alive() and answers == []  # neither end hears of the cut
            proxy.heal()
            asking.join(timeout=10)
            assert answers == [(7,)]


def test_a_close_does_not_cross_a_silent_cut(postgres_server: PostgresServer) -> None:
    def alive(pid: int) -> bool:
        with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        return found is not None

    with TcpProxy(postgres_server.port) as proxy:
        conn = psycopg.connect(make_conninfo(postgres_server.dsn, port=proxy.port), autocommit=True)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        proxy.cut("blackhole", close_open=False)
        conn.close()  # the server never hears of it: its session lives on
        time.sleep(0.5)
        assert alive(row[0])
        proxy.heal()
        deadline = time.monotonic() + 5
        while alive(row[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(row[0])


@pytest.mark.parametrize("prepared", [False, True])
def test_cut_on_silences_right_after_the_marked_statement_reached_the_server(
    postgres_server: PostgresServer, prepared: bool
) -> None:
    """``prepared``: the statement ran prepared before, so this time only its name goes to the server."""
    lock = "SELECT pg_advisory_xact_lock(%s)"
    with TcpProxy(postgres_server.port) as proxy:
        conn = psycopg.connect(make_conninfo(postgres_server.dsn, port=proxy.port))  # in a transaction
        if prepared:
            conn.execute(lock, (4241,), prepare=True)
            conn.commit()
        conn.execute("SELECT 1")
        proxy.cut_on(b"pg_advisory_xact_lock")
        asking = threading.Thread(target=lambda: conn.execute(lock, (4242,), prepare=prepared))
        asking.start()
        assert proxy.was_cut.wait(timeout=5)
        held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted"
        with psycopg.connect(postgres_server.dsn, autocommit=True) as other:
            deadline = time.monotonic() + 5
            while other.execute(held).fetchone() != (1,):  # it ran there; its answer is held here
                assert time.monotonic() < deadline, "the statement never ran on the server"
                time.sleep(0.05)
            assert asking.is_alive()
            proxy.heal()
            asking.join(timeout=10)
            conn.rollback()
            assert other.execute(held).fetchone() == (0,)
        conn.close()
