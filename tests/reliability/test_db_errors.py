"""Database errors become 503 Unavailable, and none can break a response already sent.

FastAPI runs the per-request session's teardown after the response has started; a
commit failing there (the database went away after the handler finished) cannot be
turned into a 503 and used to drop the connection ("Caught handled exception, but
response already started"). Reads and handlers that committed themselves must not
touch the database in that teardown.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ..broker.conftest import Api

pytestmark = pytest.mark.filterwarnings("ignore:PluginImportFixer:ImportWarning")


def _gone() -> OperationalError:
    return OperationalError("COMMIT", {}, Exception("terminating connection (test)"))


def _patch(api: Api, attr: str, make: Callable[[Session], None]) -> None:
    state = api.client.app.state  # type: ignore[attr-defined]
    original = getattr(state, attr)

    def factory(*a: Any, **kw: Any) -> Session:
        session: Session = original(*a, **kw)
        make(session)
        return session

    setattr(state, attr, factory)


def test_read_does_not_commit_after_the_response_started(api: Api) -> None:
    _, member, project = api.tenant()
    api.submit(project["id"], member)

    def break_commit(session: Session) -> None:
        def commit() -> None:
            raise _gone()

        session.commit = commit  # type: ignore[method-assign]

    _patch(api, "read_session_factory", break_commit)
    r = api.get("/jobs", member)
    assert r.status_code == 200 and len(r.json()["items"]) == 1


def test_handler_that_committed_is_not_committed_again(api: Api) -> None:
    _, member, project = api.tenant()
    job = api.submit(project["id"], member).json()

    def second_commit_fails(session: Session) -> None:
        real = session.commit
        calls = []

        def commit() -> None:
            calls.append(1)
            if len(calls) > 1:
                raise _gone()
            real()

        session.commit = commit  # type: ignore[method-assign]

    _patch(api, "session_factory", second_commit_fails)
    r = api.post(f"/jobs/{job['id']}/cancel", member)
    assert r.status_code == 202 and r.json()["state"] == "cancelled"


def test_database_down_during_a_request_is_503(api: Api) -> None:
    _, member, _ = api.tenant()

    def break_execute(session: Session) -> None:
        def execute(*a: Any, **kw: Any) -> Any:
            raise _gone()

        session.execute = execute  # type: ignore[method-assign]
        session.scalar = execute  # type: ignore[method-assign]
        session.scalars = execute  # type: ignore[method-assign]

    _patch(api, "read_session_factory", break_execute)
    r = api.get("/jobs", member)
    assert r.status_code == 503
    assert r.json()["error"] == "Unavailable" and "database" in r.json()["detail"]
    assert r.headers["Retry-After"]


def test_close_failing_after_the_response_started_is_not_an_error(api: Api) -> None:
    """A session whose connection was terminated fails in close() too: nothing to lose."""
    _, member, project = api.tenant()
    job = api.submit(project["id"], member).json()

    def break_close(session: Session) -> None:
        real = session.close

        def close() -> None:
            real()
            if sys._getframe(1).f_code.co_name != "__exit__":  # not the auth lookup's `with`
                raise _gone()

        session.close = close  # type: ignore[method-assign]

    _patch(api, "read_session_factory", break_close)
    assert api.get("/jobs", member).status_code == 200
    _patch(api, "session_factory", break_close)
    assert api.post(f"/jobs/{job['id']}/cancel", member).status_code == 202
