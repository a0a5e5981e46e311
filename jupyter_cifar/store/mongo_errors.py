"""What a MongoDB driver error means for the store: the one translation into the store's errors, and
the questions the retry logic asks of a failure (may a retry cure it, may the write have landed).

Messages name the host(s), never the password: every driver message passes through
:meth:`~jupyter_cifar.store.uri.MongoUri.scrub` on its way out.
"""

from __future__ import annotations

import re

from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from ..errors import Conflict, StoreError, StoreUnavailable
from .uri import MongoUri

AUTH_FAILED = 18  # the server's code for AuthenticationFailed
UNAUTHORIZED = 13  # ... and for Unauthorized


def translate(e: PyMongoError, uri: MongoUri) -> StoreError:
    """The store's error for a driver error met while talking to the server ``uri`` names."""
    cause = uri.scrub(short(e))
    where = f"MongoDB at {uri.hosts}"
    if isinstance(e, OperationFailure) and e.code == AUTH_FAILED:
        who = f" for user {uri.user!r}" if uri.user else ""
        return StoreUnavailable(
            f"{where}: authentication failed{who} (check the user name, password and authSource)"
        )
    if isinstance(e, OperationFailure) and e.code == UNAUTHORIZED:
        return StoreUnavailable(f"{where}: not authorized: {cause}")
    if isinstance(e, ConfigurationError):  # at operation time: the SRV/TXT lookup failed
        return StoreUnavailable(f"{where} cannot be found: {cause}")
    if transient(e):
        return StoreUnavailable(f"{where} is unreachable: {cause}")
    return StoreError(f"{where}: {cause}")


def short(e: BaseException) -> str:
    """The first, useful part of a driver message (no topology dump, no server reply dump)."""
    text = str(e)
    if isinstance(e, OperationFailure) and isinstance(e.details, dict) and e.details.get("errmsg"):
        text = str(e.details["errmsg"])
    text = text.split(", Timeout:")[0].split(", full error:")[0]
    text = re.sub(r"\s*\(configured timeouts:[^)]*\)", "", text)
    text = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def transient(e: BaseException) -> bool:
    """A failure a retry may cure: the server was unreachable or lost its primary role meanwhile."""
    if isinstance(e, ConnectionFailure | WriteConcernError):
        return True
    return isinstance(e, PyMongoError) and e.has_error_label("RetryableWriteError")


def unreachable(e: BaseException) -> bool:
    """No server could be selected for a whole timeout (pymongo raises that, or, when it was already
    retrying, the error before it): trying again at once would only wait as long again."""
    return isinstance(e, ServerSelectionTimeoutError) or isinstance(
        e.__context__, ServerSelectionTimeoutError
    )


def may_have_been_applied(e: BaseException) -> bool:
    """False only when the server certainly did not write (it refused, or the key was taken)."""
    if isinstance(e, DuplicateKeyError | Conflict):
        return False
    return not (isinstance(e, OperationFailure) and not transient(e))
