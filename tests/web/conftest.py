"""Dashboard fixtures: a live server (uvicorn in a thread) on a seeded SQLite file, Chromium."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.config import Settings
from broker.db import session_scope
from tests.broker.conftest import Api, make_settings, operator_token

from .seed import Seeded, clusters_toml, now_utc, seed

CHROMIUM = os.environ.get("BROKER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@dataclass
class LiveServer:
    url: str
    app: FastAPI
    data: Seeded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[LiveServer]:
    """The whole app served over HTTP, as an operator's browser reaches it."""
    tmp = tmp_path_factory.mktemp("web")
    db = tmp / "broker.db"
    shutil.copy(sqlite_template, db)
    clusters_file = tmp / "clusters.toml"
    clusters_file.write_text(clusters_toml(str(tmp)))
    settings = Settings(
        database_url=f"sqlite:///{db}",
        data_dir=tmp / "data",
        environment="test",
        worker_enabled=False,
        clusters_file=clusters_file,
    )
    app = create_app(settings, run_worker=False)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard server did not start")
        time.sleep(0.02)
    with session_scope(app.state.session_factory) as s:
        data = seed(s, app.state.adapters, now_utc())
    yield LiveServer(f"http://127.0.0.1:{port}", app, data)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test file: Playwright's sync API keeps an event loop running in
    the main thread while it is open, and every test after it in the process that calls
    ``asyncio.run`` would fail (on a pytest-xdist worker other files follow these)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: deploy/test.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)
    context.add_init_script("window.OPS_REFRESH_MS = 400;")  # live refresh, quicker for tests
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # JS exceptions and CSP refusals fail the test; a 4xx page (a refused login) does not.
    pg.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield pg
    context.close()
    assert errors == [], f"browser errors: {errors}"


def login(page: Any, token: str) -> None:
    """Log in, and return once the form's answer (the dashboard, or the login page with
    its error) has loaded: a navigation started meanwhile would race the form's."""
    page.goto("/ops/login")
    page.fill("input[name=token]", token)
    with page.expect_navigation():
        page.click("form[action='/ops/login'] button[type=submit]")


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# -- in-process client (SQLite and PostgreSQL) ----------------------------------------
@dataclass
class Ops:
    """A TestClient logged in to the dashboard, with the API helper beside it."""

    client: TestClient
    api: Api

    def csrf(self, path: str = "/ops") -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.client.get(path).text)
        assert match, "no CSRF field on the page"
        return match.group(1)

    def post(self, path: str, **data: str) -> Any:
        data.setdefault("csrf", self.csrf())
        return self.client.post(path, data=data)

    def flashes(self, html: str) -> list[str]:
        return re.findall(r'class="flash[^"]*"[^>]*>([^<]+)<', html)


def log_in(client: TestClient, token: str) -> Any:
    form = client.get("/ops/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf
    return client.post(
        "/ops/login",
        data={"csrf": csrf.group(1), "token": token, "next": "/ops"},
        follow_redirects=False,
    )


@pytest.fixture
def ops(db_url: str, tmp_path: Path) -> Iterator[Ops]:
    app = create_app(make_settings(db_url, tmp_path), run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        assert log_in(client, api.operator).status_code == 303
        yield Ops(client, api)
