"""How the suite is spread over xdist workers (tests/support/parallel.py), and the Playwright
behaviour that decides where the browser tests may run."""

from __future__ import annotations

import asyncio

import pytest
from playwright.sync_api import sync_playwright

from tests.support import parallel


@pytest.mark.parametrize(
    ("nodeid", "unit"),
    [
        ("tests/web/test_auth.py::test_sign_in", "tests/web/"),
        ("tests/web/test_chat.py::TestChat::test_stream[openai]", "tests/web/"),
        ("tests/api/test_crud.py::test_create[agents]", "tests/api/test_crud.py"),
        ("tests/api/test_crud.py::TestX::test_y", "tests/api/test_crud.py"),
        ("tests/webhooks_elsewhere.py::test_z", "tests/webhooks_elsewhere.py"),
    ],
)
def test_a_module_is_one_unit_and_tests_web_is_one_unit(nodeid: str, unit: str) -> None:
    assert parallel.scope_of(nodeid) == unit


def test_the_worker_count_follows_the_cpus_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 1)
    assert parallel.auto_workers() == 2
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    assert parallel.auto_workers() == 3  # one more than the CPUs: the suite waits a lot
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 64)
    assert parallel.auto_workers() == parallel.MAX_WORKERS
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "5")
    assert parallel.auto_workers() == 5


def test_a_worker_count_that_is_not_a_number_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "two")
    with pytest.raises(pytest.UsageError, match="PYTEST_XDIST_AUTO_NUM_WORKERS='two'"):
        parallel.auto_workers()


def test_playwright_blocks_asyncio_only_while_it_runs() -> None:
    """Why tests/web/conftest.py scopes Playwright to its package: while the sync API runs, the
    main thread has a running loop (no `asyncio.run`, no pytest-asyncio test); once it has
    stopped, asyncio works again. If the first half ever fails, a Playwright release changed
    this and the package scope may no longer be needed; if the second does, tests after
    tests/web would fail."""
    with sync_playwright():
        assert asyncio._get_running_loop() is not None
        refused = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
            asyncio.run(refused)
        refused.close()
    assert asyncio._get_running_loop() is None
    assert asyncio.run(asyncio.sleep(0, result="ran")) == "ran"
