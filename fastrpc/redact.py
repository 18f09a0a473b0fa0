"""Passwords out of transport URLs (and secrets out of messages) before they
reach a log, a repr or an exception. A leaf module: anything may import it."""

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


# Key names (lower case) whose values mask_secrets() hides: passwords, tokens,
# secrets and private keys under the names OpenStack services give them.
SECRET_KEY_PARTS = ("pass", "pswd", "token", "secret", "credential", "private_key", "encryption_key")


def mask_secrets(value: object, _depth: int = 0) -> object:
    """A copy of ``value`` with the values of secret-looking keys of its
    mappings (at any depth) replaced by ``****``: for logging a message."""
    if _depth > 64:
        return MASK  # deeper than any real message: hide rather than recurse on
    if isinstance(value, dict):
        return {key: MASK if isinstance(key, str) and any(part in key.lower() for part in SECRET_KEY_PARTS)
                else mask_secrets(item, _depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(item, _depth + 1) for item in value]
    return value
