"""A broker that someone else runs, named by a URL (e.g. FASTRPC_TEST_URL)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit


class ExternalBroker:
    """Exposes ``url``, ``host`` and ``port`` like RabbitNode; cannot be paused or administered."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError("broker URL must start with amqp:// or amqps://")
        self.url: str = url
        self.host: str = unquote(parts.hostname or "127.0.0.1")
        self.port: int = parts.port or (5671 if parts.scheme == "amqps" else 5672)

    def _unsupported(self, what: str) -> RuntimeError:
        return RuntimeError(f"{what} needs a private RabbitNode; unset FASTRPC_TEST_URL to run this test")

    def ctl(self, *args: str, timeout: float = 60.0, quiet: bool = True) -> str:
        raise self._unsupported("rabbitmqctl")

    def pause(self) -> None:
        raise self._unsupported("pause()")

    def resume(self) -> None:
        raise self._unsupported("resume()")

    def stop(self) -> None:
        """Nothing to stop: the broker belongs to someone else."""

    def __repr__(self) -> str:
        # The URL may carry a password; show only where the broker is.
        return f"ExternalBroker({self.host}:{self.port})"
