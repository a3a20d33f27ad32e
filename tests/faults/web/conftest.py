"""The dashboard's browser fixtures (headless Chromium, the API on a real socket), for the
fault suite's dashboard findings."""

from tests.web.conftest import browser, dashboard, model_server, page, playwright_session  # noqa: F401
