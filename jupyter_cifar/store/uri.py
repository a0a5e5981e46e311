"""Reading the user information out of a store URI, so that no message ever shows a password.

Passwords are often written unescaped (``mongodb://cifar:TopSec?ret99@host/db``), and a parser that
splits the query off first (as ``urllib.parse`` does, at the first ``?``) takes part of the password
for the query and shows the rest as a host. Here the user information is whatever stands between
``://`` and the last ``@`` of the authority, found as MongoDB's own parser finds it, and otherwise (an
unescaped ``/`` in the password) at the last ``@`` that is followed by a plain host list.
"""

from __future__ import annotations

import re


def split_userinfo(uri: str) -> tuple[str, str, str]:
    """``(scheme "://", userinfo, the rest)``: ``userinfo`` is "" when the URI has none; the rest
    starts after its ``@``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "", "", uri
    hosts = rest.split("/", 1)[0]
    if "@" in hosts:  # as pymongo reads it: the last '@' before the first '/'
        at = hosts.rfind("@")
    else:  # an unescaped '/' in the password, or none at all: the last '@' before a plain host list
        at = -1
        for match in re.finditer("@", rest):
            before, after = rest[: match.start()], rest[match.end() :]
            host_list = re.split(r"[/?#]", after, maxsplit=1)[0]
            if "=" not in before and not re.search(r"[=&]", host_list):  # not inside the query
                at = match.start()
    if at < 0:
        return scheme + sep, "", rest
    return scheme + sep, rest[:at], rest[at + 1 :]


def redacted(uri: str) -> str:
    """The URI with its password (everything after the user name's ``:``) shown as ``***``."""
    head, userinfo, rest = split_userinfo(uri)
    if not userinfo:
        return uri
    user, colon, _ = userinfo.partition(":")
    return f"{head}{user}{':***' if colon else ''}@{rest}"
