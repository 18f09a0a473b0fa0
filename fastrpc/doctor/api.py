"""A small client of RabbitMQ's management HTTP API: GET and DELETE on JSON
resources, with the user and password of the URL sent as basic auth.

Only the standard library (urllib): ``fastrpc doctor`` must work wherever
fastrpc does. Errors say which resource failed and why, never the password.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from fastrpc.redact import mask_url

DEFAULT_PORT = 15672
TIMEOUT = 10.0


class ManagementError(RuntimeError):
    """The management API could not be reached or refused a request."""


class ManagementAPI:
    """``base_url``: ``http://[user:password@]host:port/`` (the API lives under ``api/``)."""

    def __init__(self, base_url: str, user: str | None = None, password: str | None = None,
                 timeout: float = TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ManagementError(f"not a management URL: {mask_url(base_url)} (want http://host:port/)")
        self.user = urllib.parse.unquote(parts.username) if parts.username else (user or "guest")
        password = urllib.parse.unquote(parts.password) if parts.password else (password or "guest")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in (parts.hostname or "") and not netloc.startswith("["):
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        self.base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/"
        self._auth = "Basic " + base64.b64encode(f"{self.user}:{password}".encode()).decode()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ManagementAPI({self.base!r}, user={self.user!r})"

    def _request(self, method: str, path: str) -> Any:
        url = self.base + "api/" + path
        request = urllib.request.Request(url, method=method, headers={"Authorization": self._auth,
                                                                      "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (http(s) only)
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise ManagementError(f"{method} {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementError(f"{method} {url}: {reason}") from None
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:  # a proxy's error page, a different service on that port
            raise ManagementError(f"{method} {url}: the answer is not JSON ({body[:40]!r}...)") from None

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def delete(self, path: str) -> None:
        self._request("DELETE", path)

    # -- resources ---------------------------------------------------------

    def _list(self, path: str) -> list[dict[str, Any]]:
        """A resource that must be a list of objects; anything else is an error, not a crash in a check."""
        result = self.get(path)
        if not isinstance(result, list) or not all(isinstance(item, dict) for item in result):
            raise ManagementError(f"GET {self.base}api/{path}: expected a list of objects, got {type(result).__name__}")
        return result

    def overview(self) -> dict[str, Any]:
        result = self.get("overview")
        if not isinstance(result, dict):
            raise ManagementError(f"GET {self.base}api/overview: expected an object, got {type(result).__name__}")
        return result

    def nodes(self) -> list[dict[str, Any]]:
        return self._list("nodes")

    def queues(self) -> list[dict[str, Any]]:
        return self._list("queues")

    def connections(self) -> list[dict[str, Any]]:
        return self._list("connections")

    def consumers(self) -> list[dict[str, Any]]:
        return self._list("consumers")

    def queue_bindings(self, vhost: str, name: str) -> list[dict[str, Any]]:
        return self._list(f"queues/{quote(vhost)}/{quote(name)}/bindings")

    def delete_queue(self, vhost: str, name: str) -> None:
        self.delete(f"queues/{quote(vhost)}/{quote(name)}")


def quote(segment: str) -> str:
    """One path segment of the API (the default vhost ``/`` is ``%2F``)."""
    return urllib.parse.quote(segment, safe="")
