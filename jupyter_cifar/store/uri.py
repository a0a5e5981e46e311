"""Reading the user information out of a store URI, so that no message ever shows a password.

Passwords are often written unescaped (``mongodb://cifar:TopSec?ret99@host/db``), and a parser that
splits the query off first (as ``urllib.parse`` does, at the first ``?``) takes part of the password
for the query and shows the rest as a host. Here the user information is whatever stands between
``://`` and the last ``@`` of the authority, found as MongoDB's own parser finds it, and otherwise (an
unescaped ``/`` in the password) at the last ``@`` that is followed by a plain host list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from ..errors import BadParameter

# Query options whose values are secrets (and values that look like one).
SECRET_OPTION = re.compile(r"password|secret|token", re.IGNORECASE)


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


@dataclass(frozen=True)
class MongoUri:
    """What a URI may show: the hosts, the user, and the URI with every secret replaced."""

    redacted: str
    hosts: str
    user: str
    options: set[str]  # the options it sets, lower-cased
    secrets: list[str]  # the password and secret options, as written and decoded
    unescaped: bool  # the user information holds a character that should have been percent-escaped

    @classmethod
    def parse(cls, uri: str) -> MongoUri:
        head, userinfo, rest = split_userinfo(uri)
        if not head:
            raise BadParameter("--store", "a MongoDB URI starts with mongodb:// or mongodb+srv://")
        location, qmark, query = rest.partition("?")
        hosts = location.split("/", 1)[0] or "localhost"
        user, colon, password = userinfo.partition(":")
        secrets = [s for s in {password, unquote(password)} if s] if colon else []
        shown, options = [], set()
        for pair in query.split("&") if query else []:
            key, eq, value = pair.partition("=")
            options.add(unquote(key).lower())
            if SECRET_OPTION.search(unquote(key)) or SECRET_OPTION.search(unquote(value)):
                secrets += [s for s in {value, unquote(value)} if s]
                value = "***"
            shown.append(f"{key}{eq}{value}")
        redacted = head
        if userinfo:
            redacted += f"{user}:***@" if colon else f"{user}@"
        redacted += location + (qmark + "&".join(shown) if qmark else "")
        unescaped = bool(re.search(r"[/?#@\[\]]", userinfo)) or userinfo.count(":") > 1
        secrets.sort(key=len, reverse=True)  # longest first: a secret containing another is replaced whole
        return cls(redacted, hosts, unquote(user), options, secrets, unescaped)

    def scrub(self, text: str) -> str:
        """``text`` with every secret of the URI replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text
