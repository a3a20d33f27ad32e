"""`bigquery_read`: read-only BigQuery through the REST API v2 with a service account.

Queries go to `jobs.query` (standard SQL). Only SELECT / WITH statements pass the same lexical
guard mysql_read uses (sqlguard.py); the job runs with the caller's `maxResults` cap, and the
access token asks for the BigQuery scope only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from tbd_agents.plugins.base import Plugin, PluginError, base_url, operation_of
from tbd_agents.plugins.google_auth import ServiceAccount, access_token, google_error
from tbd_agents.plugins.sqlguard import check_read_only

BIGQUERY_API = "https://bigquery.googleapis.com/bigquery/v2"
SCOPE = "https://www.googleapis.com/auth/bigquery"
OPERATIONS = ("run_query", "list_datasets", "list_tables")
#: How long jobs.query waits server-side before answering "not complete yet", per poll.
_WAIT_MS = 10_000


class BigqueryReadPlugin(Plugin):
    name = "bigquery_read"
    description = (
        "BigQuery (read-only): run a SELECT query (standard SQL), list datasets, list tables. "
        "Rows are capped at max_rows."
    )
    tags = ("bigquery", "sql", "google")
    env_config = {
        "BIGQUERY_CREDENTIALS_JSON": "{{token:bigquery-credentials}}",
        "BIGQUERY_PROJECT_ID": "{{token:bigquery-project-id}}",
    }
    parameters_schema = {
        "type": "object",
        "properties": {
            "operation": {"type": "string", "enum": list(OPERATIONS)},
            "query": {"type": "string", "description": "A SELECT / WITH … SELECT (run_query)."},
            "project_id": {
                "type": "string",
                "description": "Project to use (default BIGQUERY_PROJECT_ID, then the key's).",
            },
            "dataset_id": {"type": "string", "description": "list_tables; default dataset."},
            "table_id": {
                "type": "string",
                "description": "run_query without a query: preview this table of dataset_id.",
            },
            "max_rows": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
        },
        "required": ["operation"],
    }
    timeout_seconds = 120.0

    async def execute(
        self, args: Mapping[str, Any], env: Mapping[str, str], http: httpx.AsyncClient
    ) -> Any:
        op = operation_of(args, OPERATIONS)
        account = ServiceAccount.parse(
            self.need(env, "BIGQUERY_CREDENTIALS_JSON"), "BIGQUERY_CREDENTIALS_JSON"
        )
        project = args.get("project_id") or env.get("BIGQUERY_PROJECT_ID") or account.project_id
        if not project:
            raise PluginError("no project: pass project_id or set BIGQUERY_PROJECT_ID")
        api = _Api(
            http,
            f"{base_url(env, 'BIGQUERY_API_URL', BIGQUERY_API)}/projects/{quote(str(project), safe='')}",
            await access_token(http, account, SCOPE),
        )
        max_rows = int(args.get("max_rows") or 100)
        if op == "list_datasets":
            body = await api.call("GET", "datasets", params={"maxResults": 1000})
            return {"datasets": [
                {"dataset_id": d.get("datasetReference", {}).get("datasetId"),
                 "location": d.get("location")}
                for d in body.get("datasets", [])
            ]}  # fmt: skip
        if op == "list_tables":
            dataset = quote(str(self.arg(args, "dataset_id", op)), safe="")
            body = await api.call("GET", f"datasets/{dataset}/tables", params={"maxResults": 1000})
            return {"tables": [
                {"table_id": t.get("tableReference", {}).get("tableId"), "type": t.get("type")}
                for t in body.get("tables", [])
            ]}  # fmt: skip
        return await self._query(api, args, str(project), max_rows)

    async def _query(
        self, api: _Api, args: Mapping[str, Any], project: str, max_rows: int
    ) -> dict[str, Any]:
        query = args.get("query")
        if not query:
            table, dataset = args.get("table_id"), args.get("dataset_id")
            if not (table and dataset):
                raise PluginError("run_query needs query (or dataset_id and table_id to preview)")
            query = f"SELECT * FROM `{project}.{dataset}.{table}`".replace("\n", " ")
        check_read_only(str(query), dialect="bigquery")
        request: dict[str, Any] = {
            "query": query, "useLegacySql": False, "maxResults": max_rows, "timeoutMs": _WAIT_MS,
        }  # fmt: skip
        if args.get("dataset_id"):
            request["defaultDataset"] = {"projectId": project, "datasetId": args["dataset_id"]}
        body = await api.call("POST", "queries", request)
        job = body.get("jobReference", {})
        params: dict[str, Any] = {"maxResults": max_rows, "timeoutMs": _WAIT_MS}
        if job.get("location"):
            params["location"] = job["location"]
        while not body.get("jobComplete", True):
            if not job.get("jobId"):
                raise PluginError("BigQuery answered an unfinished query without a jobId")
            await asyncio.sleep(0)  # the server itself waited up to timeoutMs
            body = await api.call(
                "GET", f"queries/{quote(str(job['jobId']), safe='')}", params=params
            )
        fields = [f.get("name") for f in (body.get("schema") or {}).get("fields", [])]
        rows = [
            dict(zip(fields, (cell.get("v") for cell in row.get("f", [])), strict=False))
            for row in body.get("rows", [])[:max_rows]
        ]
        total = int(body.get("totalRows") or len(rows))
        return {"columns": fields, "rows": rows, "row_count": len(rows), "total_rows": total,
                "truncated": total > len(rows)}  # fmt: skip


class _Api:
    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        r = await self.http.request(
            method, f"{self.url}/{path}", json=body, params=params, headers=self.headers
        )
        if r.status_code >= 400:
            raise google_error(r, "BigQuery")
        data = Plugin.json_body(r, "BigQuery")
        return data if isinstance(data, dict) else {}
