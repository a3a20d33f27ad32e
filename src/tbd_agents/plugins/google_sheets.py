"""`google_sheets_read` and `google_sheets`: Google Sheets through the Sheets REST API v4 with a
service account (google_auth.py). The read plugin asks for the read-only scope, so even a key
with edit rights cannot write through it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from tbd_agents.plugins.base import Plugin, PluginError, base_url, operation_of
from tbd_agents.plugins.google_auth import ServiceAccount, access_token, google_error

SHEETS_API = "https://sheets.googleapis.com/v4"
READ_SCOPE = "https://www.googleapis.com/auth/spreadsheets.readonly"
WRITE_SCOPE = "https://www.googleapis.com/auth/spreadsheets"
READ_OPS = ("get_values", "list_sheets", "get_metadata")
WRITE_OPS = ("create_sheet", "write_values", "append_values", "clear_range")
ENV = "GOOGLE_SHEETS_CREDENTIALS_JSON"


def _schema(ops: tuple[str, ...], write: bool) -> dict[str, Any]:
    props: dict[str, Any] = {
        "operation": {"type": "string", "enum": list(ops)},
        "spreadsheet_id": {"type": "string", "description": "The id in the spreadsheet's URL."},
        "range": {"type": "string", "description": "A1 range, e.g. Sheet1!A1:D20."},
        "sheet_name": {
            "type": "string",
            "description": "A sheet (tab) title: the whole sheet when no range is given"
            + ("; the new sheet's title for create_sheet." if write else "."),
        },
        "max_rows": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
    }
    if write:
        props["values"] = {
            "type": "array",
            "items": {"type": "array"},
            "description": "Rows of cell values (write_values, append_values).",
        }
    return {"type": "object", "properties": props, "required": ["operation", "spreadsheet_id"]}


class GoogleSheetsReadPlugin(Plugin):
    name = "google_sheets_read"
    description = (
        "Google Sheets (read-only): read cell values, list the sheets of a spreadsheet and get "
        "its metadata (service account)."
    )
    tags: ClassVar[tuple[str, ...]] = ("google", "sheets")
    env_config = {ENV: "{{token:google-sheets-credentials}}"}
    parameters_schema = _schema(READ_OPS, write=False)
    operations: ClassVar[tuple[str, ...]] = READ_OPS
    scope: ClassVar[str] = READ_SCOPE

    async def execute(
        self, args: Mapping[str, Any], env: Mapping[str, str], http: httpx.AsyncClient
    ) -> Any:
        op = operation_of(args, self.operations)
        account = ServiceAccount.parse(self.need(env, ENV), ENV)
        api = _Sheets(
            http,
            base_url(env, "GOOGLE_SHEETS_API_URL", SHEETS_API),
            await access_token(http, account, self.scope),
            str(self.arg(args, "spreadsheet_id", op)),
        )
        return await self.run(op, args, api)

    async def run(self, op: str, args: Mapping[str, Any], api: _Sheets) -> Any:
        if op == "get_values":
            max_rows = int(args.get("max_rows") or 100)
            body = await api.call("GET", f"values/{quote(_range(args, op), safe='')}")
            rows = body.get("values", [])
            return {
                "range": body.get("range"),
                "values": rows[:max_rows],
                "row_count": min(len(rows), max_rows),
                "truncated": len(rows) > max_rows,
            }
        sheets = await api.call(
            "GET", "", params={"fields": "spreadsheetId,properties,sheets.properties"}
        )
        listed = [_sheet(s.get("properties", {})) for s in sheets.get("sheets", [])]
        if op == "list_sheets":
            return {"sheets": listed}
        props = sheets.get("properties", {})
        return {
            "spreadsheet_id": sheets.get("spreadsheetId"),
            "title": props.get("title"),
            "locale": props.get("locale"),
            "time_zone": props.get("timeZone"),
            "sheets": listed,
        }


class GoogleSheetsPlugin(GoogleSheetsReadPlugin):
    name = "google_sheets"
    description = (
        "Google Sheets: read values, list sheets, get metadata, create a sheet, write, append "
        "and clear ranges (service account with edit access)."
    )
    parameters_schema = _schema(READ_OPS + WRITE_OPS, write=True)
    operations = READ_OPS + WRITE_OPS
    scope = WRITE_SCOPE

    async def run(self, op: str, args: Mapping[str, Any], api: _Sheets) -> Any:
        if op in READ_OPS:
            return await super().run(op, args, api)
        if op == "create_sheet":
            title = self.arg(args, "sheet_name", op)
            body = await api.call(
                "POST",
                ":batchUpdate",
                {"requests": [{"addSheet": {"properties": {"title": title}}}]},
            )
            replies = body.get("replies") or [{}]
            return {"sheet": _sheet(replies[0].get("addSheet", {}).get("properties", {}))}
        rng = quote(_range(args, op), safe="")
        if op == "clear_range":
            body = await api.call("POST", f"values/{rng}:clear", {})
            return {"cleared_range": body.get("clearedRange")}
        values = self.arg(args, "values", op)
        params = {"valueInputOption": "USER_ENTERED"}
        payload = {"majorDimension": "ROWS", "values": values}
        if op == "write_values":
            body = await api.call("PUT", f"values/{rng}", payload, params)
            return _updates(body)
        params["insertDataOption"] = "INSERT_ROWS"
        body = await api.call("POST", f"values/{rng}:append", payload, params)
        return _updates(body.get("updates", {}))


def _range(args: Mapping[str, Any], op: str) -> str:
    rng = args.get("range") or args.get("sheet_name")
    if not rng:
        raise PluginError(f"{op} needs range (e.g. Sheet1!A1:C10) or sheet_name")
    return str(rng)


def _sheet(p: Mapping[str, Any]) -> dict[str, Any]:
    grid = p.get("gridProperties") or {}
    return {
        "sheet_id": p.get("sheetId"),
        "title": p.get("title"),
        "index": p.get("index"),
        "row_count": grid.get("rowCount"),
        "column_count": grid.get("columnCount"),
    }


def _updates(u: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "updated_range": u.get("updatedRange"),
        "updated_rows": u.get("updatedRows"),
        "updated_columns": u.get("updatedColumns"),
        "updated_cells": u.get("updatedCells"),
    }


class _Sheets:
    def __init__(self, http: httpx.AsyncClient, url: str, token: str, spreadsheet: str) -> None:
        self.http = http
        self.url = f"{url}/spreadsheets/{quote(spreadsheet, safe='')}"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        sep = "" if not path or path.startswith(":") else "/"
        r = await self.http.request(
            method, f"{self.url}{sep}{path}", json=body, params=params, headers=self.headers
        )
        if r.status_code >= 400:
            raise google_error(r, "Google Sheets")
        data = Plugin.json_body(r, "Google Sheets")
        return data if isinstance(data, dict) else {}
