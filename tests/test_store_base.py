"""idwall.store.base: the storage interface and the store's errors. The SQLite backend implements the whole
interface with the same signatures; every store error is answered as the problem a client is promised.
(The records are tested in tests/test_model.py.)
"""

from __future__ import annotations

import inspect

import pytest

from idwall.errors import Conflict, Gone, NotFound, TooManyRequests, Unavailable
from idwall.store.base import AlreadyUsed, Expired, LastAdmin, LimitReached, Missing, Store, StoreError
from idwall.store.sqlite import SQLiteStore

def _interface() -> list[str]:
    return sorted(name for name, _ in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_"))


@pytest.mark.parametrize("name", _interface())
def test_sqlite_implements_every_method_with_the_same_signature(name: str) -> None:
    method = getattr(SQLiteStore, name)
    assert inspect.iscoroutinefunction(method), name
    assert inspect.signature(method) == inspect.signature(getattr(Store, name)), name


@pytest.mark.parametrize(("error", "parent", "status", "slug"), [
    (StoreError, Unavailable, 503, "store-unavailable"),
    (AlreadyUsed, Conflict, 409, "conflict"),
    (LastAdmin, Conflict, 409, "conflict"),
    (Expired, Gone, 410, "gone"),
    (Missing, NotFound, 404, "not-found"),
    (LimitReached, TooManyRequests, 429, "limit-reached"),
])
def test_store_errors_answer_as_the_problem_a_client_is_promised(error: type, parent: type, status: int,
                                                                 slug: str) -> None:
    raised = error("what happened; what to do", log_detail="sqlite: for the log only")
    assert isinstance(raised, parent)
    body = raised.problem()
    assert (body["status"], body["type"].rsplit("/", 1)[1], body["detail"]) == (
        status, slug, "what happened; what to do")
    assert "sqlite" not in str(body)
