"""Which process serves which mailbox: each transfer code exactly one, always the same one."""

from __future__ import annotations

import pytest

from gateway.daemon.shard import WHOLE, Shard

CODES = [f"TC{41000000 + n * 37:08d}" for n in range(1000)]


@pytest.mark.parametrize("count", [2, 3, 4])
def test_every_code_has_exactly_one_process_and_the_shares_are_even(count: int) -> None:
    shards = [Shard(i, count) for i in range(count)]
    owners = [[s for s in shards if s.owns(code)] for code in CODES]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(o[0] is s for o in owners) for s in shards]
    assert min(sizes) > 0.8 * len(CODES) / count


def test_the_same_code_goes_to_the_same_process_in_every_process() -> None:
    assert [Shard(1, 3).owns(c) for c in CODES] == [Shard(1, 3).owns(c) for c in CODES]
    assert all(WHOLE.owns(c) for c in CODES)
    assert str(Shard(1, 3)) == "2/3"


def test_a_shard_must_be_one_of_its_count() -> None:
    with pytest.raises(ValueError, match="shard 3 of 3"):
        Shard(3, 3)
