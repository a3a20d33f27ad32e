"""google_sheets_read, google_sheets and bigquery_read against local fakes of Google's token
endpoint (which verifies the signed JWT with the test key's public key), Sheets v4 and
BigQuery v2."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tbd_agents.plugins.bigquery import BigqueryReadPlugin
from tbd_agents.plugins.google_sheets import GoogleSheetsPlugin, GoogleSheetsReadPlugin
from tests.plugins.conftest import run
from tests.plugins.fakes import GoogleFake


@pytest.fixture
def google() -> Iterator[GoogleFake]:
    with GoogleFake().running() as fake:
        yield fake


def sheets_env(fake: GoogleFake) -> dict[str, str]:
    return {
        "GOOGLE_SHEETS_CREDENTIALS_JSON": fake.credentials(),
        "GOOGLE_SHEETS_API_URL": f"{fake.url}/v4",
    }


def bq_env(fake: GoogleFake) -> dict[str, str]:
    return {
        "BIGQUERY_CREDENTIALS_JSON": fake.credentials(),
        "BIGQUERY_PROJECT_ID": "test-project",
        "BIGQUERY_API_URL": f"{fake.url}/bigquery/v2",
    }


async def test_sheets_read_operations_with_a_signed_service_account_grant(
    google: GoogleFake,
) -> None:
    e = sheets_env(google)
    vals = await run(
        GoogleSheetsReadPlugin(),
        {"operation": "get_values", "spreadsheet_id": "sheet-1", "range": "Data!A1:B4",
         "max_rows": 2},
        e,
    )  # fmt: skip
    assert not vals.is_error, vals.content
    assert vals.data["values"] == [["name", "qty"], ["apple", "3"]]
    assert vals.data["truncated"] is True
    # one grant: the JWT verified against the public key, with the read-only scope
    [grant] = google.assertions
    assert grant["claims"]["scope"] == "https://www.googleapis.com/auth/spreadsheets.readonly"
    assert grant["header"] == {"alg": "RS256", "typ": "JWT", "kid": "k1"}
    get = google.seen[-1]
    assert get.path == "/v4/spreadsheets/sheet-1/values/Data%21A1%3AB4"
    assert get.headers["authorization"] == "Bearer ya29.test0"

    listed = await run(
        GoogleSheetsReadPlugin(), {"operation": "list_sheets", "spreadsheet_id": "sheet-1"}, e
    )
    assert listed.data == {"sheets": [{"sheet_id": 0, "title": "Data", "index": 0,
                                       "row_count": 1000, "column_count": 26}]}  # fmt: skip
    meta = await run(
        GoogleSheetsReadPlugin(), {"operation": "get_metadata", "spreadsheet_id": "sheet-1"}, e
    )
    assert meta.data["title"] == "Inventory" and meta.data["time_zone"] == "Europe/Oslo"
    assert len(google.assertions) == 1  # the token was cached for the later calls

    by_name = await run(
        GoogleSheetsReadPlugin(),
        {"operation": "get_values", "spreadsheet_id": "sheet-1", "sheet_name": "Data"},
        e,
    )
    assert by_name.data["row_count"] == 4


async def test_the_read_plugin_offers_no_writes(google: GoogleFake) -> None:
    res = await run(
        GoogleSheetsReadPlugin(),
        {"operation": "clear_range", "spreadsheet_id": "sheet-1", "range": "Data"},
        sheets_env(google),
    )
    assert res.is_error and "invalid arguments" in res.content
    assert google.sheets["Data"]["values"]


async def test_sheets_write_operations(google: GoogleFake) -> None:
    e = sheets_env(google)
    made = await run(
        GoogleSheetsPlugin(),
        {"operation": "create_sheet", "spreadsheet_id": "sheet-1", "sheet_name": "Q3"},
        e,
    )
    assert not made.is_error, made.content
    assert made.data["sheet"]["title"] == "Q3"
    assert google.seen[-1].path == "/v4/spreadsheets/sheet-1:batchUpdate"
    assert google.assertions[0]["claims"]["scope"] == "https://www.googleapis.com/auth/spreadsheets"

    wrote = await run(
        GoogleSheetsPlugin(),
        {"operation": "write_values", "spreadsheet_id": "sheet-1", "range": "Q3!A1",
         "values": [["a", "b"], ["1", "2"]]},
        e,
    )  # fmt: skip
    assert wrote.data["updated_cells"] == 4
    assert google.seen[-1].method == "PUT" and google.seen[-1].body["majorDimension"] == "ROWS"

    appended = await run(
        GoogleSheetsPlugin(),
        {"operation": "append_values", "spreadsheet_id": "sheet-1", "range": "Q3",
         "values": [["3", "4"]]},
        e,
    )  # fmt: skip
    assert appended.data["updated_rows"] == 1
    assert google.sheets["Q3"]["values"] == [["a", "b"], ["1", "2"], ["3", "4"]]

    cleared = await run(
        GoogleSheetsPlugin(),
        {"operation": "clear_range", "spreadsheet_id": "sheet-1", "range": "Q3"},
        e,
    )
    assert cleared.data == {"cleared_range": "Q3"}
    assert google.sheets["Q3"]["values"] == []


async def test_sheets_errors_and_bad_credentials(google: GoogleFake) -> None:
    e = sheets_env(google)
    missing = await run(
        GoogleSheetsReadPlugin(), {"operation": "list_sheets", "spreadsheet_id": "nope"}, e
    )
    assert missing.is_error and "NOT_FOUND: Requested entity was not found." in missing.content

    no_range = await run(
        GoogleSheetsReadPlugin(), {"operation": "get_values", "spreadsheet_id": "sheet-1"}, e
    )
    assert no_range.is_error and "range" in no_range.content and "sheet_name" in no_range.content

    # a key the token endpoint does not know: the signature check fails there
    other = GoogleFake()
    forged = json.loads(other.credentials())
    forged["token_uri"] = f"{google.url}/token"
    forged["client_email"] = GoogleFake.EMAIL
    bad = await run(
        GoogleSheetsReadPlugin(),
        {"operation": "list_sheets", "spreadsheet_id": "sheet-1"},
        {**e, "GOOGLE_SHEETS_CREDENTIALS_JSON": json.dumps(forged)},
    )
    assert bad.is_error and "refused the service account" in bad.content
    assert "Invalid JWT Signature" in bad.content

    garbage = await run(
        GoogleSheetsReadPlugin(),
        {"operation": "list_sheets", "spreadsheet_id": "sheet-1"},
        {**e, "GOOGLE_SHEETS_CREDENTIALS_JSON": "not json"},
    )
    assert garbage.is_error and "GOOGLE_SHEETS_CREDENTIALS_JSON is not JSON" in garbage.content


async def test_bigquery_operations(google: GoogleFake) -> None:
    e = bq_env(google)
    rows = await run(
        BigqueryReadPlugin(),
        {"operation": "run_query", "query": "SELECT name, qty FROM shop.stock", "max_rows": 2},
        e,
    )
    assert not rows.is_error, rows.content
    assert rows.data["rows"] == [{"name": "apple", "qty": "3"}, {"name": "pear", "qty": "5"}]
    assert rows.data["total_rows"] == 3 and rows.data["truncated"] is True
    sent = google.seen[-1]
    assert sent.path == "/bigquery/v2/projects/test-project/queries"
    assert sent.body["useLegacySql"] is False and sent.body["maxResults"] == 2
    assert google.assertions[0]["claims"]["scope"] == "https://www.googleapis.com/auth/bigquery"

    slow = await run(
        BigqueryReadPlugin(), {"operation": "run_query", "query": "SELECT 'slow' AS s"}, e
    )
    assert slow.data["row_count"] == 3 and google.polls == 2
    assert google.seen[-1].path == "/bigquery/v2/projects/test-project/queries/job_1"
    assert google.seen[-1].query["location"] == "EU"

    ds = await run(BigqueryReadPlugin(), {"operation": "list_datasets"}, e)
    assert ds.data == {"datasets": [{"dataset_id": "shop", "location": "EU"}]}
    tables = await run(
        BigqueryReadPlugin(),
        {"operation": "list_tables", "dataset_id": "shop", "project_id": "other-project"},
        e,
    )
    assert tables.data == {"tables": [{"table_id": "orders", "type": "TABLE"}]}
    assert google.seen[-1].path == "/bigquery/v2/projects/other-project/datasets/shop/tables"

    preview = await run(
        BigqueryReadPlugin(),
        {"operation": "run_query", "dataset_id": "shop", "table_id": "orders", "max_rows": 1},
        e,
    )
    assert preview.data["row_count"] == 1
    assert google.seen[-1].body["query"] == "SELECT * FROM `test-project.shop.orders`"


async def test_bigquery_refuses_writes_and_reports_api_errors(google: GoogleFake) -> None:
    e = bq_env(google)
    before = len(google.seen)
    for query in (
        "DELETE FROM shop.stock WHERE true",
        "SELECT 1; DROP TABLE shop.stock",
        "CREATE TABLE shop.x AS SELECT 1",
        "EXPORT DATA OPTIONS(uri='gs://b/*') AS SELECT 1",
        "MERGE shop.a USING shop.b ON a.id = b.id WHEN MATCHED THEN DELETE",
    ):
        res = await run(BigqueryReadPlugin(), {"operation": "run_query", "query": query}, e)
        assert res.is_error and "read-only" in res.content, query
    assert all(s.path == "/token" for s in google.seen[before:])  # no query reached the API

    gone = await run(
        BigqueryReadPlugin(), {"operation": "run_query", "query": "SELECT * FROM missing_table"}, e
    )
    assert gone.is_error and "NOT_FOUND: Not found: Table" in gone.content
    no_ds = await run(BigqueryReadPlugin(), {"operation": "list_tables", "dataset_id": "x"}, e)
    assert no_ds.is_error and "Dataset test-project:x" in no_ds.content
