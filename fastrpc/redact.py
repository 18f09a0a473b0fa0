"""Passwords out of transport URLs (and secrets out of messages) before they
reach a log, a repr or an exception. A leaf module: anything may import it."""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

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


# What mask_secrets() treats as a secret when oslo_utils is not installed:
# key names holding one of these (lower case) have their value hidden. They
# cover the names oslo_utils.strutils masks (tests/test_notify.py checks its
# list against this one) and a few more spellings.
SECRET_KEY_PARTS = (
    "pass",  # password, adminpass, new_pass, passphrase, chappassword, ...
    "pswd", "token", "secret", "credential", "private_key", "encrypted_key", "encryption_key", "encryptionkey",
    "sslkey", "fernetkey", "configdrive", "rabbitcookie", "swifthashsuffix", "cephclusterfsid",
    "barbicansimplecryptokek", "octaviaheartbeatkey", "pacemakerremoteauthkey", "designaterndckey",
    "migrationsshkey", r"ceph\w*key",  # cephadminkey, cephclientkey, cephmonkey, cephrgwkey, ...
)
_SECRET_KEY = re.compile("|".join(SECRET_KEY_PARTS), re.IGNORECASE)
# A word naming a secret inside a text (a command line, XML, JSON, key=value);
# bounded so that a long text costs linear time.
_NAME = rf"[\w.-]{{0,40}}(?:{'|'.join(SECRET_KEY_PARTS)})[\w.-]{{0,40}}"
_QUOTED = r"(?:\"[^\"]*\"|'[^']*')"
# (pattern, replacement): what follows a secret's name in a text is hidden.
_TEXT_SECRETS = [
    (re.compile(rf"(<({_NAME})(?:\s[^>]*)?>)[^<]*(</\2>)", re.IGNORECASE), rf"\g<1>{MASK}\g<3>"),  # <password>x</password>
    (re.compile(rf"([\"']{_NAME}[\"']\s*[:,]\s*[\"'])[^\"']*([\"'])", re.IGNORECASE),
     rf"\g<1>{MASK}\g<2>"),  # "password": "x", '--password', 'x'
    (re.compile(rf"(--{_NAME}\s+)(?!-)(?:{_QUOTED}|[^\s\"']+)", re.IGNORECASE), rf"\g<1>{MASK}"),  # --password x
    (re.compile(rf"((?<![\w.-]){_NAME}\s*=\s*)(?:{_QUOTED}|[^\s,;&\"']+)", re.IGNORECASE), rf"\g<1>{MASK}"),  # password=x
]
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)


def _mask_text(text: str, names: bool) -> str:
    """``text`` with the passwords of its URLs hidden, and with ``names``
    what follows a secret's name too."""
    if "://" in text and "@" in text:
        text = _URL.sub(lambda found: mask_url(found.group(0)), text)
    if names and _SECRET_KEY.search(text):
        for pattern, replacement in _TEXT_SECRETS:
            text = pattern.sub(replacement, text)
    return text


def _masked(value: object, names: bool, depth: int = 0) -> object:
    """A copy of ``value`` with its texts masked (see :func:`_mask_text`); with
    ``names`` the values of secret-looking keys hidden too."""
    if depth > 64:
        return MASK  # deeper than any real message: hide rather than recurse on
    if isinstance(value, str):
        return _mask_text(value, names)
    if isinstance(value, Mapping):
        return {key: MASK if names and isinstance(key, str) and _SECRET_KEY.search(key)
                else _masked(item, names, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(item, names, depth + 1) for item in value]
    return value


def _oslo_strutils() -> Any:
    """oslo_utils.strutils, or None without oslo_utils."""
    try:
        return importlib.import_module("oslo_utils.strutils")
    except ImportError:
        return None


def mask_secrets(value: object) -> object:
    """A copy of ``value`` (a message: mappings, lists, texts) fit for a log.

    The passwords of URLs in its texts are hidden (:func:`mask_url`), then
    oslo_utils' ``mask_dict_password`` masks it as oslo's log notification
    driver does: values of secret-looking keys, and secrets named inside
    texts (``--password x``, ``<password>x</password>``, ``password=x``).
    Without oslo_utils, fastrpc's own rules do the same (the names in
    :data:`SECRET_KEY_PARTS`). Secrets become ``****``.
    """
    strutils = _oslo_strutils()
    if strutils is None:
        return _masked(value, names=True)
    # mask_dict_password takes a mapping only: anything else goes in one.
    return strutils.mask_dict_password({"value": _masked(value, names=False)}, secret=MASK)["value"]
