"""The compatibility tests use the API fixtures (tests/api/conftest.py): a migrated database per
module, the app with its lifespan, clients holding real API keys of distinct users."""

from tests.api.conftest import admin, alice, api, api_db, bob  # noqa: F401
