"""TLS connections (fixture ``tls_broker``: CA, server cert CN=localhost with
SAN localhost/127.0.0.1, client cert)."""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import Any

import pytest

from fastrpc.amqp import spec
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.exceptions import TLSError

pytestmark = pytest.mark.twins

WAIT = 15.0


def test_tls_connect_verified_round_trip(tls_broker: Any) -> None:
    with Connection(tls_broker.tls_url, cafile=tls_broker.ca_file, connect_timeout=WAIT) as c:
        assert c.params.ssl and c.params.verify
        assert c.server_properties["capabilities"]["publisher_confirms"] is True
        ch = c.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        ch.confirm_select()
        body = hashlib.sha256(b"tls").digest() * 20000  # several TLS records and AMQP frames
        futures = [ch.basic_publish("", qname, body + bytes([i])) for i in range(20)]
        assert all(f is not None and f.result(timeout=WAIT) is True for f in futures)
        got: queue.Queue[spec.Delivery] = queue.Queue()
        ch.basic_consume(qname, got.put, no_ack=True)
        bodies = [got.get(timeout=WAIT).body for _ in range(20)]
        assert bodies == [body + bytes([i]) for i in range(20)]


def test_tls_concurrent_senders(tls_broker: Any) -> None:
    with Connection(tls_broker.tls_url, cafile=tls_broker.ca_file) as c:
        ch = c.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        ch.confirm_select()
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                futures = [ch.basic_publish("", qname, f"{n}-{i}".encode()) for i in range(200)]
                for f in futures:
                    assert f is not None and f.result(timeout=WAIT) is True
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT * 2)
        assert errors == [] and not any(t.is_alive() for t in threads)
        assert ch.queue_declare(qname, passive=True)[1] == 800


def test_tls_client_certificate(tls_broker: Any) -> None:
    with Connection(
        tls_broker.tls_url,
        cafile=tls_broker.ca_file,
        certfile=tls_broker.client_cert,
        keyfile=tls_broker.client_key,
    ) as c:
        assert c.channel().queue_declare("", exclusive=True)[0]


def test_tls_without_ca_fails_verification(tls_broker: Any) -> None:
    c = Connection(tls_broker.tls_url, connect_timeout=WAIT)  # system store: our test CA is unknown
    with pytest.raises(TLSError) as info:
        c.connect()
    assert "verif" in str(info.value).lower()
    assert "guest:guest" not in str(info.value)


def test_tls_hostname_mismatch(tls_broker: Any) -> None:
    c = Connection(
        tls_broker.tls_url, cafile=tls_broker.ca_file, server_hostname="not-the-broker.example", connect_timeout=WAIT
    )
    with pytest.raises(TLSError) as info:
        c.connect()
    assert "hostname" in str(info.value).lower() or "mismatch" in str(info.value).lower()


def test_tls_ip_address_in_san(tls_broker: Any) -> None:
    url = tls_broker.tls_url.replace("@localhost:", "@127.0.0.1:")
    with Connection(url, cafile=tls_broker.ca_file) as c:
        assert c.is_open


def test_tls_verify_off_connects_without_ca(tls_broker: Any) -> None:
    with Connection(tls_broker.tls_url + "?verify=false") as c:
        assert c.is_open


def test_tls_to_plain_port_fails_cleanly(broker: Any) -> None:
    url = broker.url.replace("amqp://", "amqps://")
    with pytest.raises(TLSError):
        Connection(url, connect_timeout=WAIT).connect()
