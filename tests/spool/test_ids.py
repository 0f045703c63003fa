from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from spool.ids import FILE_ID_LENGTH, file_id_time, is_file_id, new_file_id, next_file_id, share_suffixes

SHANGHAI = timezone(timedelta(hours=8))


def test_a_tight_loop_gives_unique_ids_in_time_order() -> None:
    ids = [new_file_id(datetime.now(UTC)) for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert {len(i) for i in ids} == {FILE_ID_LENGTH}


def test_the_same_instant_over_and_over_stays_unique_and_ordered() -> None:
    moment = datetime(2024, 4, 1, 9, 30, 0, 123456, tzinfo=SHANGHAI)
    ids = [new_file_id(moment) for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert file_id_time(ids[0], SHANGHAI) == moment
    # 32768+ ids per microsecond spill into the next microseconds, never further than needed
    assert file_id_time(ids[-1], SHANGHAI) - moment <= timedelta(microseconds=4)


def test_concurrent_threads_read_the_clock_one_at_a_time_and_get_increasing_ids() -> None:
    """Claims run in several threads: each id is made from a clock read that no other thread's id can
    slip in after, so ids in the order they were made increase with their times."""
    base = datetime(2024, 4, 1, 9, 30, tzinfo=SHANGHAI)
    ticks: list[datetime] = []  # appended by the clock: the order the ids were made in
    inside = [0, 0]  # threads in the clock now, most ever

    def clock() -> datetime:
        inside[0] += 1
        inside[1] = max(inside)
        time.sleep(0.0002)  # a slow clock: without the lock another thread would read one meanwhile
        moment = base + timedelta(microseconds=len(ticks))
        ticks.append(moment)
        inside[0] -= 1
        return moment

    made: list[list[str]] = [[] for _ in range(8)]
    threads = [
        threading.Thread(target=lambda out=out: out.extend(next_file_id(clock) for _ in range(100)))
        for out in made
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = sorted(i for out in made for i in out)
    assert inside[1] == 1
    assert len(set(ids)) == 800
    assert [file_id_time(i, SHANGHAI) for i in ids] == ticks


def test_the_id_carries_the_time_as_given_in_its_zone() -> None:
    moment = datetime(2024, 4, 1, 9, 30, 5, 7, tzinfo=SHANGHAI)
    file_id = new_file_id(moment)
    assert file_id.startswith("20240401-093005-000007-")
    assert file_id_time(file_id, SHANGHAI) == moment
    assert file_id_time(file_id) == moment.replace(tzinfo=None)


def test_an_earlier_time_is_not_bent_to_keep_the_order() -> None:
    late = datetime(2030, 1, 1, tzinfo=UTC)
    early = datetime(2024, 1, 1, tzinfo=UTC)
    new_file_id(late)
    assert file_id_time(new_file_id(early), UTC) == early


def test_a_new_microsecond_starts_from_a_random_suffix() -> None:
    base = datetime(2024, 4, 1, tzinfo=UTC)
    suffixes = {new_file_id(base + timedelta(microseconds=n))[-4:] for n in range(200)}
    assert len(suffixes) > 150


@pytest.mark.parametrize(
    "text",
    [
        "20240401-093005-000007-00a",
        "20240401-093005-000007-00a1x",
        "20240401-093005-000007-00A1",
        "20240230-093005-000007-00a1",
        "20240401-253005-000007-00a1",
        "20240401-240000-000000-00a1",
        "20240401_093005-000007-00a1",
        "٢٠٢٤0401-093005-000007-00a1",
        "",
    ],
)
def test_is_file_id_rejects(text: str) -> None:
    assert not is_file_id(text)
    with pytest.raises(ValueError, match=r"file id|range|match|unconverted"):
        file_id_time(text)


def test_is_file_id_accepts() -> None:
    assert is_file_id("20240401-093005-000007-00a1")


@pytest.mark.parametrize("index", range(4))
def test_processes_sharing_suffixes_start_fresh_ones_in_their_own_part(index: int) -> None:
    share_suffixes(index, 4)
    try:
        start = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(days=index)  # later than any id made so far
        ids = [new_file_id(start + timedelta(microseconds=n)) for n in range(500)]
    finally:
        share_suffixes(0, 1)
    suffixes = {int(i[-4:], 16) for i in ids}
    assert min(suffixes) >= index * 0x2000 and max(suffixes) < (index + 1) * 0x2000


def test_a_share_must_be_one_of_its_count() -> None:
    with pytest.raises(ValueError, match="share 2 of 2"):
        share_suffixes(2, 2)
