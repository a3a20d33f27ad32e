"""Local HTTP fakes of the services the plugins call, speaking their request/response shapes:
Slack Web API, Notion API v1, Google's OAuth token endpoint (verifying the JWT's RS256
signature with the test key's public key), Sheets API v4 and BigQuery API v2.

Each fake records every request (method, path, query, headers, JSON body) and answers from a
small in-memory state, so tests assert both what the plugin sent and what it made of the answer.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.http_stub import StubHandler


@dataclass
class Seen:
    method: str
    path: str  # raw (still percent-encoded)
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    form: dict[str, str] = field(default_factory=dict)


Reply = tuple[int, Any]
Route = Callable[[Seen, re.Match[str]], Reply]


class Fake:
    """A recording HTTP server; subclasses register (method, path regex) routes."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.routes: list[tuple[str, re.Pattern[str], Route]] = []
        self.url = ""

    def route(self, method: str, pattern: str, fn: Route) -> None:
        self.routes.append((method, re.compile(pattern + r"\Z"), fn))

    def handle(self, seen: Seen) -> Reply:
        self.seen.append(seen)
        for method, pattern, fn in self.routes:
            m = pattern.match(seen.path)
            if m and method == seen.method:
                return fn(seen, m)
        return 404, {"error": f"no route {seen.method} {seen.path}"}

    @contextmanager
    def running(self) -> Iterator[Fake]:
        fake = self

        class Handler(StubHandler):
            def _any(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                ctype = self.headers.get("Content-Type", "")
                body: Any = None
                form: dict[str, str] = {}
                if raw and "json" in ctype:
                    body = json.loads(raw)
                elif raw and "form" in ctype:
                    form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                seen = Seen(
                    self.command,
                    parts.path,
                    {k: v[0] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    form,
                )
                status, answer = fake.handle(seen)
                self.reply(status, json.dumps(answer).encode())

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


# --- Slack ----------------------------------------------------------------------------------
SLACK_TOKEN = "xoxb-test-bot-token"


class SlackFake(Fake):
    def __init__(self) -> None:
        super().__init__()
        self.channels = {
            "C1": {"id": "C1", "name": "general", "is_private": False, "num_members": 3,
                   "topic": {"value": "company news"}, "purpose": {"value": "all hands"}},
            "C2": {"id": "C2", "name": "ops", "is_private": True, "num_members": 2,
                   "topic": {"value": ""}, "purpose": {"value": ""}},
        }  # fmt: skip
        self.history = {
            "C1": [
                {"type": "message", "ts": "1700000002.000200", "user": "U2", "text": "deploy done",
                 "thread_ts": "1700000002.000200", "reply_count": 1},
                {"type": "message", "ts": "1700000001.000100", "user": "U1", "text": "hello"},
            ]
        }  # fmt: skip
        self.posted: list[dict[str, Any]] = []
        self.reactions: list[dict[str, Any]] = []
        self.route("GET", r"/api/(?P<method>[a-z.A-Z]+)", self._api)
        self.route("POST", r"/api/(?P<method>[a-z.A-Z]+)", self._api)

    def _api(self, seen: Seen, m: re.Match[str]) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {SLACK_TOKEN}":
            return 200, {"ok": False, "error": "invalid_auth"}
        args = seen.body if seen.method == "POST" else seen.query
        method = m["method"]
        channel = args.get("channel")
        if channel is not None and channel not in self.channels:
            return 200, {"ok": False, "error": "channel_not_found"}
        if method == "conversations.list":
            return 200, {"ok": True, "channels": list(self.channels.values()),
                         "response_metadata": {"next_cursor": "dGVhbTpDMDYx"}}  # fmt: skip
        if method == "conversations.info":
            return 200, {"ok": True, "channel": self.channels[channel]}
        if method == "conversations.history":
            msgs = self.history.get(channel, [])[: int(args.get("limit", 100))]
            return 200, {"ok": True, "messages": msgs, "has_more": False}
        if method == "conversations.replies":
            parent = next(x for x in self.history[channel] if x["ts"] == args["ts"])
            reply = {"ts": "1700000003.000300", "user": "U1", "text": "thanks!",
                     "thread_ts": args["ts"]}  # fmt: skip
            return 200, {"ok": True, "messages": [parent, reply], "has_more": False}
        if method == "search.messages":
            matches = [
                {**x, "channel": {"id": "C1", "name": "general"},
                 "permalink": f"https://example.slack.com/archives/C1/p{x['ts']}"}
                for x in self.history["C1"]
                if args["query"] in x["text"]
            ]  # fmt: skip
            return 200, {"ok": True, "query": args["query"],
                         "messages": {"total": len(matches), "matches": matches}}  # fmt: skip
        if method == "chat.postMessage":
            self.posted.append(args)
            ts = f"17000001{len(self.posted):02d}.000100"
            return 200, {"ok": True, "channel": channel, "ts": ts,
                         "message": {"text": args["text"], "ts": ts}}  # fmt: skip
        if method == "reactions.add":
            if any(r == args for r in self.reactions):
                return 200, {"ok": False, "error": "already_reacted"}
            self.reactions.append(args)
            return 200, {"ok": True}
        return 200, {"ok": False, "error": "unknown_method"}


# --- Notion ---------------------------------------------------------------------------------
NOTION_TOKEN = "secret_notion_test"


def _notion_error(status: int, code: str, message: str) -> Reply:
    return status, {"object": "error", "status": status, "code": code, "message": message}


class NotionFake(Fake):
    def __init__(self) -> None:
        super().__init__()
        self.pages: dict[str, dict[str, Any]] = {
            "p1": {"object": "page", "id": "p1", "parent": {"database_id": "db1"},
                   "properties": {"Name": {"title": [{"plain_text": "Roadmap"}]}}},
        }  # fmt: skip
        self.blocks: dict[str, list[dict[str, Any]]] = {
            "p1": [{"object": "block", "id": "b1", "type": "paragraph",
                    "paragraph": {"rich_text": [{"plain_text": "Q1 goals"}]}}]
        }  # fmt: skip
        self.route("POST", r"/v1/databases/(?P<id>[^/]+)/query", self._query)
        self.route("GET", r"/v1/pages/(?P<id>[^/]+)", self._get_page)
        self.route("PATCH", r"/v1/pages/(?P<id>[^/]+)", self._update_page)
        self.route("POST", r"/v1/pages", self._create_page)
        self.route("GET", r"/v1/blocks/(?P<id>[^/]+)/children", self._children)
        self.route("PATCH", r"/v1/blocks/(?P<id>[^/]+)/children", self._append)
        self.route("POST", r"/v1/search", self._search)

    def handle(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {NOTION_TOKEN}":
            self.seen.append(seen)
            return _notion_error(401, "unauthorized", "API token is invalid.")
        if seen.headers.get("notion-version") != "2022-06-28":
            self.seen.append(seen)
            return _notion_error(400, "missing_version", "Notion-Version header failed validation")
        return super().handle(seen)

    def _list(self, items: list[Any]) -> dict[str, Any]:
        return {"object": "list", "results": items, "next_cursor": None, "has_more": False}

    def _query(self, seen: Seen, m: re.Match[str]) -> Reply:
        if m["id"] != "db1":
            return _notion_error(404, "object_not_found", f"Could not find database {m['id']}.")
        rows = [p for p in self.pages.values() if p["parent"].get("database_id") == "db1"]
        return 200, self._list(rows)

    def _get_page(self, seen: Seen, m: re.Match[str]) -> Reply:
        page = self.pages.get(m["id"])
        if page is None:
            return _notion_error(
                404, "object_not_found", f"Could not find page with ID: {m['id']}."
            )
        return 200, page

    def _update_page(self, seen: Seen, m: re.Match[str]) -> Reply:
        page = self.pages[m["id"]]
        page["properties"].update(seen.body.get("properties", {}))
        if "archived" in seen.body:
            page["archived"] = seen.body["archived"]
        return 200, page

    def _create_page(self, seen: Seen, m: re.Match[str]) -> Reply:
        pid = f"p{len(self.pages) + 1}"
        page = {"object": "page", "id": pid, "parent": seen.body["parent"],
                "properties": seen.body["properties"]}  # fmt: skip
        self.pages[pid] = page
        self.blocks[pid] = list(seen.body.get("children", []))
        return 200, page

    def _children(self, seen: Seen, m: re.Match[str]) -> Reply:
        return 200, self._list(self.blocks.get(m["id"], []))

    def _append(self, seen: Seen, m: re.Match[str]) -> Reply:
        self.blocks.setdefault(m["id"], []).extend(seen.body["children"])
        return 200, self._list(seen.body["children"])

    def _search(self, seen: Seen, m: re.Match[str]) -> Reply:
        q = (seen.body or {}).get("query", "").lower()
        hits = [p for p in self.pages.values() if q in json.dumps(p).lower()]
        return 200, self._list(hits)


# --- Google (OAuth token endpoint, Sheets v4, BigQuery v2) ----------------------------------
def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class GoogleFake(Fake):
    """One server for the token endpoint and both APIs (paths differ: /token, /v4, /bigquery)."""

    EMAIL = "agent@test-project.iam.gserviceaccount.com"

    def __init__(self) -> None:
        super().__init__()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tokens: dict[str, str] = {}  # access token -> scope
        self.assertions: list[dict[str, Any]] = []
        self.sheets: dict[str, dict[str, Any]] = {
            "Data": {"sheetId": 0, "index": 0, "values": [["name", "qty"], ["apple", "3"],
                                                          ["pear", "5"], ["fig", "7"]]},
        }  # fmt: skip
        self.polls = 0
        self.route("POST", r"/token", self._token)
        self.route("GET", r"/v4/spreadsheets/(?P<id>[^/:]+)", self._meta)
        self.route("POST", r"/v4/spreadsheets/(?P<id>[^/:]+):batchUpdate", self._batch)
        self.route("GET", r"/v4/spreadsheets/(?P<id>[^/:]+)/values/(?P<rng>[^:]+)", self._get)
        self.route("PUT", r"/v4/spreadsheets/(?P<id>[^/:]+)/values/(?P<rng>[^:]+)", self._put)
        self.route(
            "POST", r"/v4/spreadsheets/(?P<id>[^/:]+)/values/(?P<rng>[^:]+):(?P<act>\w+)", self._act
        )
        bq = r"/bigquery/v2/projects/(?P<p>[^/]+)"
        self.route("POST", bq + r"/queries", self._bq_query)
        self.route("GET", bq + r"/queries/(?P<job>[^/]+)", self._bq_results)
        self.route("GET", bq + r"/datasets", self._bq_datasets)
        self.route("GET", bq + r"/datasets/(?P<d>[^/]+)/tables", self._bq_tables)

    def credentials(self) -> str:
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return json.dumps({
            "type": "service_account", "project_id": "test-project", "private_key_id": "k1",
            "private_key": pem, "client_email": self.EMAIL, "token_uri": f"{self.url}/token",
        })  # fmt: skip

    # token endpoint: verifies the assertion as Google does (signature, iss, aud, exp)
    def _token(self, seen: Seen, m: re.Match[str]) -> Reply:
        if seen.form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type"}
        head, claims, sig = seen.form["assertion"].split(".")
        try:
            self.key.public_key().verify(
                _unb64(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        header, body = json.loads(_unb64(head)), json.loads(_unb64(claims))
        self.assertions.append({"header": header, "claims": body})
        ok = (
            header.get("alg") == "RS256"
            and body.get("iss") == self.EMAIL
            and body.get("aud") == f"{self.url}/token"
            and body["iat"] <= time.time() + 5 < body["exp"]
        )
        if not ok:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT claims."}
        token = f"ya29.test{len(self.tokens)}"
        self.tokens[token] = body["scope"]
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _scope(self, seen: Seen) -> str | None:
        auth = seen.headers.get("authorization", "")
        return self.tokens.get(auth.removeprefix("Bearer "))

    def handle(self, seen: Seen) -> Reply:
        if seen.path != "/token":
            scope = self._scope(seen)
            if scope is None:
                self.seen.append(seen)
                return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                       "message": "Request had invalid authentication credentials."}}  # fmt: skip
            writes = seen.method in ("PUT", "POST") and seen.path.startswith("/v4/")
            if writes and scope.endswith(".readonly"):
                self.seen.append(seen)
                return 403, {"error": {"code": 403, "status": "PERMISSION_DENIED",
                                       "message": "Request had insufficient authentication scopes."}}  # fmt: skip
        return super().handle(seen)

    # Sheets
    def _sheet(self, rng: str) -> dict[str, Any] | None:
        return self.sheets.get(unquote(rng).split("!")[0].strip("'"))

    def _meta(self, seen: Seen, m: re.Match[str]) -> Reply:
        if m["id"] != "sheet-1":
            return 404, {"error": {"code": 404, "status": "NOT_FOUND",
                                   "message": "Requested entity was not found."}}  # fmt: skip
        sheets = [
            {"properties": {"sheetId": s["sheetId"], "title": t, "index": s["index"],
                            "gridProperties": {"rowCount": 1000, "columnCount": 26}}}
            for t, s in self.sheets.items()
        ]  # fmt: skip
        return 200, {"spreadsheetId": m["id"], "sheets": sheets,
                     "properties": {"title": "Inventory", "locale": "en_US",
                                    "timeZone": "Europe/Oslo"}}  # fmt: skip

    def _get(self, seen: Seen, m: re.Match[str]) -> Reply:
        sheet = self._sheet(m["rng"])
        if sheet is None:
            return 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                   "message": f"Unable to parse range: {unquote(m['rng'])}"}}  # fmt: skip
        return 200, {
            "range": unquote(m["rng"]),
            "majorDimension": "ROWS",
            "values": sheet["values"],
        }

    def _batch(self, seen: Seen, m: re.Match[str]) -> Reply:
        title = seen.body["requests"][0]["addSheet"]["properties"]["title"]
        props = {"sheetId": 100 + len(self.sheets), "title": title, "index": len(self.sheets),
                 "gridProperties": {"rowCount": 1000, "columnCount": 26}}  # fmt: skip
        self.sheets[title] = {"sheetId": props["sheetId"], "index": props["index"], "values": []}
        return 200, {"spreadsheetId": m["id"], "replies": [{"addSheet": {"properties": props}}]}

    def _put(self, seen: Seen, m: re.Match[str]) -> Reply:
        sheet = self._sheet(m["rng"])
        assert sheet is not None and seen.query.get("valueInputOption") == "USER_ENTERED"
        sheet["values"] = seen.body["values"]
        rows = len(seen.body["values"])
        return 200, {"spreadsheetId": m["id"], "updatedRange": unquote(m["rng"]), "updatedRows": rows,
                     "updatedColumns": max(len(r) for r in seen.body["values"]),
                     "updatedCells": sum(len(r) for r in seen.body["values"])}  # fmt: skip

    def _act(self, seen: Seen, m: re.Match[str]) -> Reply:
        sheet = self._sheet(m["rng"])
        assert sheet is not None
        if m["act"] == "clear":
            sheet["values"] = []
            return 200, {"spreadsheetId": m["id"], "clearedRange": unquote(m["rng"])}
        assert m["act"] == "append" and seen.query.get("insertDataOption") == "INSERT_ROWS"
        sheet["values"].extend(seen.body["values"])
        n = len(seen.body["values"])
        return 200, {"spreadsheetId": m["id"], "updates": {
            "updatedRange": unquote(m["rng"]), "updatedRows": n, "updatedColumns": 2,
            "updatedCells": 2 * n}}  # fmt: skip

    # BigQuery
    def _bq_rows(self) -> dict[str, Any]:
        rows = [{"f": [{"v": "apple"}, {"v": "3"}]}, {"f": [{"v": "pear"}, {"v": "5"}]},
                {"f": [{"v": "fig"}, {"v": "7"}]}]  # fmt: skip
        return {
            "kind": "bigquery#queryResponse",
            "schema": {
                "fields": [{"name": "name", "type": "STRING"}, {"name": "qty", "type": "INTEGER"}]
            },
            "jobReference": {"projectId": "test-project", "jobId": "job_1", "location": "EU"},
            "totalRows": "3",
            "rows": rows,
            "jobComplete": True,
        }

    def _bq_query(self, seen: Seen, m: re.Match[str]) -> Reply:
        if "missing_table" in seen.body["query"]:
            return 404, {"error": {"code": 404, "status": "NOT_FOUND",
                                   "message": "Not found: Table test-project:shop.missing_table"}}  # fmt: skip
        answer = self._bq_rows()
        answer["rows"] = answer["rows"][: seen.body.get("maxResults", 100)]
        if "slow" in seen.body["query"]:
            return 200, {"jobReference": answer["jobReference"], "jobComplete": False}
        return 200, answer

    def _bq_results(self, seen: Seen, m: re.Match[str]) -> Reply:
        self.polls += 1
        if self.polls < 2:
            return 200, {"jobReference": {"jobId": m["job"]}, "jobComplete": False}
        answer = self._bq_rows()
        answer["rows"] = answer["rows"][: int(seen.query.get("maxResults", 100))]
        return 200, answer

    def _bq_datasets(self, seen: Seen, m: re.Match[str]) -> Reply:
        return 200, {"kind": "bigquery#datasetList", "datasets": [
            {"id": f"{m['p']}:shop", "location": "EU",
             "datasetReference": {"projectId": m["p"], "datasetId": "shop"}}]}  # fmt: skip

    def _bq_tables(self, seen: Seen, m: re.Match[str]) -> Reply:
        if m["d"] != "shop":
            return 404, {"error": {"code": 404, "status": "NOT_FOUND",
                                   "message": f"Not found: Dataset {m['p']}:{m['d']}"}}  # fmt: skip
        return 200, {"kind": "bigquery#tableList", "totalItems": 1, "tables": [
            {"tableReference": {"projectId": m["p"], "datasetId": "shop", "tableId": "orders"},
             "type": "TABLE"}]}  # fmt: skip
