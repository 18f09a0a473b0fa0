"""Ack bookkeeping of one listener channel: which delivery tags are settled,
and which ack frames settle a read; a read's deliveries with that channel's
bookkeeping (:class:`Read`).

Import this module as ``fastrpc.drivers.amqp.acks``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.acks`` (see fastrpc._impl); its C
layout is fastrpc/_ext/acks.pxi.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from fastrpc.amqp import spec

__all__ = ["Read", "Settled"]


class Settled:
    """Which delivery tags of a listener's channel are settled (acked or rejected).

    The requests of one read are acked with one ``multiple`` ack of the
    highest tag; that is only right when every lower tag is settled already
    (otherwise it would also ack a request another thread is still taking,
    whose own ack would then fail the channel). Tags run 1, 2, 3, ... per
    channel in delivery order. Use under a lock, and send what ``settle``
    returns under the same lock, so that frames leave in the order decided.
    """

    def __init__(self) -> None:
        self.upto = 0  # every tag <= upto is settled
        self.early: set[int] = set()  # settled tags above upto

    def settle(self, tags: list[int], ack: list[int]) -> list[tuple[int, bool]]:
        """Mark ``tags`` (ascending) settled, of which ``ack`` still need an
        ack (the others were rejected); return the acks to send as
        ``(delivery_tag, multiple)``."""
        first = tags[0]
        last = tags[-1]
        if first == self.upto + 1 and last - first == len(tags) - 1:
            self.upto = last
            frames = [(ack[-1], len(ack) > 1)] if ack else []
            if not self.early:  # the usual case
                return frames
        else:
            frames = [(tag, False) for tag in ack]
            self.early.update(tags)
        early = self.early
        if early:
            upto = self.upto
            while upto + 1 in early:
                upto += 1
                early.discard(upto)
            self.upto = upto
        return frames


class Read(NamedTuple):
    """The deliveries of one read of a listener's channel, taken together."""

    gen: int  # the listener's connection generation they came on
    channel: Any
    settled: Settled  # that channel's
    deliveries: list[spec.Delivery]
