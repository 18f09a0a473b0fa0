"""Passwords out of transport URLs before they reach a log, a repr or an
exception. A leaf module: anything may import it."""

from __future__ import annotations

MASK = "****"


def mask_url(url: str) -> str:
    """Return ``url`` with every password replaced by ``****``.

    Made for malformed URLs too: a password holding an unencoded '/', '?',
    '#' or ',' must not survive, so the authority runs to the first '/'
    after the last '@' (over-masking a strange URL beats leaking a secret).
    """
    try:
        scheme, rest = url.split("://", 1)
    except ValueError:
        return url
    last_at = rest.rfind("@")
    if last_at < 0:
        return url  # no user info, nothing to hide
    slash = rest.find("/", last_at)
    if slash < 0:
        netloc, tail = rest, ""
    else:
        netloc, tail = rest[:slash], rest[slash:]
    items = netloc.split(",")
    last_credentialed = max(i for i, item in enumerate(items) if "@" in item)
    masked = []
    in_secret = False  # inside a password that an unencoded ',' cut apart
    for index, item in enumerate(items):
        if "@" in item:
            userinfo, hostport = item.rsplit("@", 1)
            if in_secret:
                userinfo = MASK
            elif ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":" + MASK
            item = f"{userinfo}@{hostport}"
            in_secret = False
        elif in_secret:
            item = MASK
        elif index < last_credentialed and ":" in item and not item.rsplit(":", 1)[1].isdigit():
            # Before a later user info and not host:port: the start of a
            # password cut at a ','; the rest up to the next '@' is secret too.
            item = item.split(":", 1)[0] + ":" + MASK
            in_secret = True
        masked.append(item)
    return f"{scheme}://{','.join(masked)}{tail}"
