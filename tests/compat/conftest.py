"""The compatibility suite drives the same in-process API as tests/api (embedded PostgreSQL)."""

from tests.api.conftest import admin, alice, api, api_db, bob, fresh_api  # noqa: F401
