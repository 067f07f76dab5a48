"""PyMongo's and BSON's errors, translated once into the contract's (``common.errors``).

Every call into an engine (a shard server's rows, a balancer's metadata) runs inside
``engine_errors``; nothing above it sees a PyMongo exception:

    DuplicateKeyError, a bulk write's duplicate key       -> Conflict     409
    a value or document the engine cannot store            -> BadRequest   400
      (OverflowError, InvalidDocument, DocumentTooLarge, a lone surrogate)
    anything else from the engine: unreachable, timed out -> Unavailable  503

A shard server's client never gets a 500 for what it sent, and a balancer tells "the request
is wrong" (every replica refuses it) from "this replica is in trouble" (it alone fails).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bson.errors import BSONError
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from .errors import BadRequest, Conflict, Unavailable

__all__ = ["engine_errors"]

_DUPLICATE_KEY = 11000
_CANNOT_STORE = frozenset({2, 10334, 17280})  # BadValue, BSONObjectTooLarge, KeyTooLong


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Run an engine call; re-raise its failure as an ``ApiError`` whose message says ``what``."""
    try:
        yield
    except DuplicateKeyError as exc:
        raise Conflict(f"<Error> {what}: a row with that Stud_id exists") from exc
    except BulkWriteError as exc:
        codes = {err.get("code") for err in exc.details.get("writeErrors", [])}
        if codes == {_DUPLICATE_KEY}:
            raise Conflict(f"<Error> {what}: a row with that Stud_id exists") from exc
        if codes and codes <= _CANNOT_STORE | {_DUPLICATE_KEY}:
            raise BadRequest(f"<Error> {what}: the engine cannot store it ({_first(exc)})") from exc
        raise Unavailable(f"<Error> {what}: the engine failed ({_first(exc)})") from exc
    except (OverflowError, BSONError, UnicodeEncodeError) as exc:
        raise BadRequest(f"<Error> {what}: the engine cannot store it ({exc})") from exc
    except PyMongoError as exc:
        raise Unavailable(f"<Error> {what}: the engine is unavailable ({_brief(exc)})") from exc


def _first(exc: BulkWriteError) -> str:
    errors = exc.details.get("writeErrors", [])
    return _brief(errors[0].get("errmsg", exc)) if errors else _brief(exc)


def _brief(exc: object) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."
