"""Which acks a listener sends for the requests of one read (fastrpc.drivers.amqp.acks.Settled).

One ``multiple`` ack may only cover tags that are all settled by it or
before it: an ack for a tag another thread is still taking would make that
thread's own ack fail the channel (RabbitMQ: "unknown delivery tag").
"""

from __future__ import annotations

import random

import pytest

from fastrpc.drivers.amqp.acks import Settled

pytestmark = pytest.mark.twins


def test_in_order_reads_get_one_multiple_ack_each() -> None:
    s = Settled()
    assert s.settle([1, 2, 3], [1, 2, 3]) == [(3, True)]
    assert s.settle([4], [4]) == [(4, False)]
    assert s.settle([5, 6], [5, 6]) == [(6, True)]
    assert s.upto == 6 and not s.early


def test_rejected_tags_are_settled_but_not_acked() -> None:
    s = Settled()
    # 2 was rejected: the multiple ack of 3 covers only 1 (2 is gone already).
    assert s.settle([1, 2, 3], [1, 3]) == [(3, True)]
    # A read whose last request was rejected acks up to the one before it.
    assert s.settle([4, 5], [4]) == [(4, False)]
    # All rejected: nothing to send, but the tags count as settled.
    assert s.settle([6, 7], []) == []
    assert s.settle([8, 9], [8, 9]) == [(9, True)]


def test_a_read_taken_before_an_older_one_is_acked_tag_by_tag() -> None:
    s = Settled()
    # Another thread still takes 1..3: acking 6 with multiple would cover them.
    assert s.settle([4, 5, 6], [4, 6]) == [(4, False), (6, False)]
    assert s.upto == 0
    # The older read then settles 1..3, and the early ones are absorbed.
    assert s.settle([1, 2, 3], [1, 2, 3]) == [(3, True)]
    assert s.upto == 6 and not s.early
    assert s.settle([7, 8], [7, 8]) == [(8, True)]


def test_tags_with_a_gap_are_acked_one_by_one() -> None:
    s = Settled()
    # 3 belongs to a read another thread takes: never cover it.
    assert s.settle([1, 2, 4], [1, 2, 4]) == [(1, False), (2, False), (4, False)]
    assert s.settle([3], [3]) == [(3, False)]
    assert s.upto == 4 and not s.early


def test_random_interleavings_never_ack_a_tag_twice_or_before_it_is_taken() -> None:
    """Model the broker: a multiple ack settles every outstanding tag up to it,
    and an ack of a tag no longer outstanding is a channel error."""
    rng = random.Random(1234)
    for _ in range(300):
        reads = []
        tag = 1
        for _ in range(rng.randint(1, 12)):
            n = rng.randint(1, 5)
            reads.append(list(range(tag, tag + n)))
            tag += n
        last = tag - 1
        order = reads[:]
        # Threads take reads roughly in order, sometimes swapped.
        for i in range(len(order) - 1):
            if rng.random() < 0.3:
                order[i], order[i + 1] = order[i + 1], order[i]
        # A thread sometimes takes two reads at once, not always adjacent ones.
        i = 0
        while i < len(order) - 1:
            if rng.random() < 0.25:
                order[i:i + 2] = [sorted(order[i] + order[i + 1])]
            i += 1
        s = Settled()
        outstanding = set(range(1, last + 1))
        taken: set[int] = set()
        for read in order:
            rejected = {t for t in read if rng.random() < 0.2}
            outstanding -= rejected  # basic.reject goes out first
            taken.update(read)
            for t, multiple in s.settle(read, [t for t in read if t not in rejected]):
                assert t in outstanding, (order, t)
                covered = {x for x in outstanding if x <= t} if multiple else {t}
                assert covered <= taken, "acked a request nobody has taken yet"
                outstanding -= covered
        assert not outstanding, (order, outstanding)
        assert s.upto == last and not s.early
