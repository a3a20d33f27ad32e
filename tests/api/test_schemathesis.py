"""Property-based run of schemathesis against the app's own OpenAPI schema (bounded).

The full-size command is in docs/api.md. Here every operation gets a few dozen generated
requests (valid and invalid ones) over a real socket, authenticated as an admin; no 5xx and no
response that breaks the schema (status code, content type, body) is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tbd_agents.domain.auth import KeyScope
from tests.api.conftest import Api, make_settings
from tests.api.live import live_server

MAX_EXAMPLES = int(os.environ.get("TBD_SCHEMATHESIS_EXAMPLES", "5"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live_base(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = api.store.url.render_as_string(hide_password=False)
    config = make_settings(tmp_path_factory.mktemp("st"), postgres_uri=url, postgres_pool_size=4)
    with live_server(config) as base:
        yield base


@pytest.fixture(scope="module")
async def admin_key(api: Api) -> str:
    return await api.key("schemathesis-admin", KeyScope.ADMIN)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms_to_the_schema(
    live_base: str, admin_key: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{live_base}/openapi.json")
    headers = {"Authorization": f"Bearer {admin_key}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            if response.status_code == 400 and response.text == "Invalid HTTP request received.":
                return  # uvicorn's HTTP parser refused the bytes before the app saw them
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # No invalid input exists for an operation without parameters or body.
            assert mode is GenerationMode.NEGATIVE and not list(operation.iter_parameters())
            assert operation.method.upper() == "GET", operation.label
        except Exception as exc:  # collect every failing operation, then report them all
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    assert operations > 50
    assert not failures, "\n\n".join(failures)
