"""Fixtures for the end-to-end tests: real servers, real Chromium, a page that records every error.

Run them with ``python -m pytest tests/e2e`` (they are marked ``e2e`` and ``slow``). They need Debian's
Chromium at /usr/bin/chromium (``.ci/install-browser.sh``), the Python packages playwright, notebook and
voila, and for the MongoDB variant the test extra's mongod. Screenshots go to $JUPYTER_CIFAR_SCREENSHOTS
(default: a folder of the test session's temporary directory, printed at the end of the run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import AppPage, NotebookServer, ServerKind, launch_chromium

SCREENSHOTS_ENV = "JUPYTER_CIFAR_SCREENSHOTS"
_screenshots_seen: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, so that the suite runs under --strict-markers before pyproject lists them.
    config.addinivalue_line("markers", "e2e: drives a real browser against a real Jupyter server")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"e2e_report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"e2e_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)  # a pytest-xdist worker's, to the controller
    if workeroutput is not None:
        workeroutput["e2e_screenshots"] = [str(folder) for folder in _screenshots_seen]  # tests/conftest.py


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for folder in _screenshots_seen:  # (under pytest-xdist, tests/conftest.py prints the workers')
        if names := sorted(p.name for p in folder.glob("*.png")):
            terminalreporter.write_line(f"e2e screenshots in {folder}: {', '.join(names)}")


# pytest_jupyter (a plugin of tests/conftest.py) has an autouse fixture that takes the current asyncio
# loop and closes it after each test. Under Playwright's sync API that loop is Playwright's own, still
# running: these tests start their servers as processes and need neither fixture.
@pytest.fixture
def jp_asyncio_loop() -> None:
    return None


@pytest.fixture
def jp_server_cleanup() -> None:
    return None


# ----------------------------------------------------------------------------------------- session-wide


@pytest.fixture(scope="session")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    _screenshots_seen.append(folder)
    return folder


@pytest.fixture(scope="module")  # stopped after each module: its event loop must not outlive e2e tests
def browser() -> Iterator[Any]:
    """One headless Chromium per module (each test gets a fresh context: its own profile state)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # not a skip: without a browser these tests would prove nothing
        raise ImportError("pip install playwright (and never run `playwright install`)") from e

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def e2e_data(cifar10_dir: Path, cifar10: Any) -> Path:
    """The real CIFAR-10 folder, its cache warmed once by this process (the kernels inherit the cache)."""
    return cifar10_dir


@pytest.fixture(scope="session")
def cat_jpeg(cifar10_dir: Path) -> Path:
    """A real test image: the first cat of the test set."""
    path = cifar10_dir / "test" / "cat" / "0000.jpg"
    assert path.is_file(), path
    return path


# ------------------------------------------------------------------------------------------- per test


@pytest.fixture(params=["embedded", "mongodb"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The model store behind the server: a fresh embedded folder, or a fresh database on a real mongod."""
    if request.param == "embedded":
        return str(tmp_path / "models")
    return str(request.getfixturevalue("mongo_uri"))


@pytest.fixture
def embedded_store(tmp_path: Path) -> str:
    return str(tmp_path / "models")


ServerFactory = Callable[..., NotebookServer]


@pytest.fixture
def start_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerFactory]:
    """``start_server(kind, store_uri, data_dir=None, notebook=None, cells=None)``: a started server.

    For Voilà give ``cells`` (the notebook is written before the server starts, as Voilà serves one
    notebook named on its command line).
    """
    servers: list[NotebookServer] = []

    def start(
        kind: ServerKind,
        store_uri: str,
        data_dir: Path | None = None,
        cells: list[str] | None = None,
        name: str = "app",
        extra: tuple[str, ...] = (),
    ) -> NotebookServer:
        from harness import write_notebook

        root = tmp_path_factory.mktemp(f"{kind}-server")
        server = NotebookServer(kind, root, store_uri=store_uri, data_dir=data_dir, extra=extra)
        server.work.mkdir(parents=True, exist_ok=True)
        if cells is not None:
            write_notebook(server.work, name, cells)
            server.notebook = f"{name}.ipynb"
        servers.append(server)
        return server.start()

    yield start
    failed = _failed(request)
    for server in servers:
        server.stop()
        if failed:
            print(f"--- {server.kind} server log ({server.root / 'server.log'}), last 6000 chars:")
            print(server.log()[-6000:])


@pytest.fixture
def lab_server(start_server: ServerFactory, store_uri: str, e2e_data: Path) -> NotebookServer:
    """`jupyter lab` on the embedded store or on MongoDB (parametrized), kernels given the real data."""
    return start_server("lab", store_uri, data_dir=e2e_data)


@pytest.fixture
def app_page(browser: Any, screenshots_dir: Path, request: pytest.FixtureRequest) -> Iterator[AppPage]:
    """A page in a fresh browser context that records page, console and kernel errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    context.set_default_timeout(60_000)
    page = AppPage(context.new_page(), screenshots_dir, name=request.node.name)
    yield page
    if _failed(request):
        try:
            page.screenshot(f"FAILED-{request.node.name}")
        except Exception as e:  # a crashed page: the report matters more
            print(f"(no failure screenshot: {e})")
        print("--- what the page collected:")
        print(page.report())
    context.close()
