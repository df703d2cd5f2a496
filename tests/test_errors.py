"""The error tree drawn in ``idwall.errors`` is the tree the code defines, and every error answers as RFC 9457."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass

import pytest

import idwall
from idwall import errors
from idwall.errors import PROBLEM_BASE, IDWallError

# "    │   ├── Name    400 slug    module: why" (the two drawings), or "    Name    module: why" for roots.
_LINE = re.compile(r"^    (?P<prefix>(?:│   |    )*)(?:[├└]── )?(?P<name>[A-Z]\w+)\s+"
                   r"(?:(?P<status>\d{3}) (?P<slug>[a-z-]+)\s+)?(?P<module>[a-z0-9_.]+): \S")


@dataclass(frozen=True)
class Drawn:
    name: str
    parent: str | None
    status: int | None
    slug: str | None
    module: str


def drawing() -> dict[str, Drawn]:
    """Every class the docstring draws, with the parent its indentation gives it."""
    drawn: dict[str, Drawn] = {}
    stack: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        depth = (match.start("name") - 4) // 4
        del stack[depth:]
        name = match["name"]
        assert name not in drawn, f"{name} drawn twice"
        drawn[name] = Drawn(name, stack[-1] if stack else None,
                            int(match["status"]) if match["status"] else None, match["slug"], match["module"])
        stack.append(name)
    return drawn


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Every public exception class defined in an ``idwall`` module."""
    found: dict[str, type[BaseException]] = {}
    for module in pkgutil.walk_packages(idwall.__path__, "idwall."):
        if module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.name
                    and not name.startswith("_")):
                assert found.setdefault(name, value) is value, f"two exception classes named {name}"
    return found


DRAWN = drawing()
DEFINED = defined_exceptions()


def test_every_defined_error_is_drawn_and_nothing_else() -> None:
    assert sorted(DEFINED) == sorted(DRAWN)


@pytest.mark.parametrize("name", sorted(DRAWN))
def test_drawn_parent_status_slug_and_module_are_the_code(name: str) -> None:
    cls, drawn = DEFINED[name], DRAWN[name]
    assert cls.__module__ in (f"idwall.{drawn.module}", f"idwall.{drawn.module}.__init__") or \
        cls.__module__.startswith(f"idwall.{drawn.module}."), (cls.__module__, drawn.module)
    if drawn.parent is None:
        assert not any(issubclass(cls, DEFINED[other]) for other in DEFINED if other != name)
        return
    assert cls.__bases__ == (DEFINED[drawn.parent],)
    if issubclass(cls, IDWallError):
        assert (cls.status, cls.slug) == (drawn.status, drawn.slug)


def test_each_problem_type_has_one_status_and_one_title() -> None:
    by_slug: dict[str, set[tuple[int, str]]] = {}
    for cls in DEFINED.values():
        if issubclass(cls, IDWallError):
            by_slug.setdefault(cls.slug, set()).add((cls.status, cls.title))
    assert {slug: answers for slug, answers in by_slug.items() if len(answers) > 1} == {}


def test_errors_outside_the_api_are_not_problem_answers() -> None:
    outside = [name for name, drawn in DRAWN.items() if drawn.status is None]
    assert outside and not any(issubclass(DEFINED[name], IDWallError) for name in outside)


def test_a_leaf_answers_with_its_type_and_keeps_log_detail_out_of_the_body() -> None:
    from idwall.store.base import LimitReached

    error = LimitReached("12 enrollments are open; finish one first", log_detail="user u-1", open=12)
    assert error.problem() == {
        "type": PROBLEM_BASE + "limit-reached", "title": "Too many pending requests", "status": 429,
        "detail": "12 enrollments are open; finish one first", "open": 12,
    }
    assert "u-1" not in repr(error.problem())


def test_store_outage_is_unavailable_so_callers_fail_closed_on_one_class() -> None:
    from idwall.errors import Unavailable
    from idwall.store import StoreError

    assert issubclass(StoreError, Unavailable) and StoreError().problem()["status"] == 503
