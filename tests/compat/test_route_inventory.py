"""Every route of the existing TBD Agents API (reference §1.1 to §1.17) exists here with its method.

The behaviour of each is tested in the other files of this package; this file makes sure none is
missing. (`GET /metrics` belongs to the observability work and is not listed here.)"""

from __future__ import annotations

import re

import httpx

ROUTES = """
GET /health
POST /api/agents
GET /api/agents
GET /api/agents/export
GET /api/agents/{id}/export
POST /api/agents/import
GET /api/agents/{id}
PUT /api/agents/{id}
DELETE /api/agents/{id}
POST /api/agents/{id}/chat
GET /api/agents/{id}/chat/sessions
GET /api/agents/{id}/chat/sessions/{id}
DELETE /api/agents/{id}/chat/sessions/{id}
POST /api/chat/start
POST /api/custom-tools
GET /api/custom-tools
GET /api/custom-tools/{id}
PUT /api/custom-tools/{id}
GET /api/custom-tools/{id}/env-mapping
PUT /api/custom-tools/{id}/env-mapping
DELETE /api/custom-tools/{id}
POST /api/custom-tools/{id}/run
POST /api/custom-tools/validate
POST /api/custom-tools/upload
GET /api/export
POST /api/import
POST /api/guardrails
GET /api/guardrails
GET /api/guardrails/{id}
PUT /api/guardrails/{id}
DELETE /api/guardrails/{id}
POST /api/knowledge-sources
GET /api/knowledge-sources
GET /api/knowledge-sources/export
GET /api/knowledge-sources/{id}/export
POST /api/knowledge-sources/import
GET /api/knowledge-sources/{id}
PUT /api/knowledge-sources/{id}
DELETE /api/knowledge-sources/{id}
POST /api/knowledge-sources/{id}/test
POST /api/knowledge-items
POST /api/knowledge-items/upload
GET /api/knowledge-items
GET /api/knowledge-items/{id}
GET /api/knowledge-items/{id}/content
PUT /api/knowledge-items/{id}
DELETE /api/knowledge-items/{id}
POST /api/knowledge-items/query
POST /api/mcps
GET /api/mcps
GET /api/mcps/{id}
PUT /api/mcps/{id}
DELETE /api/mcps/{id}
POST /api/mcps/{id}/test
GET /api/mcps/{id}/tools
PUT /api/mcps/{id}/tools
POST /api/memories
GET /api/memories
GET /api/memories/{id}
PUT /api/memories/{id}
DELETE /api/memories/{id}
POST /api/memories/search
GET /api/memories/stm/{id}
GET /api/models
POST /api/providers
GET /api/providers
GET /api/providers/{id}
PUT /api/providers/{id}
DELETE /api/providers/{id}
POST /api/scheduled-agents
GET /api/scheduled-agents
GET /api/scheduled-agents/{id}
PATCH /api/scheduled-agents/{id}
PATCH /api/scheduled-agents/{id}/enable
PATCH /api/scheduled-agents/{id}/disable
DELETE /api/scheduled-agents/{id}
POST /api/skills
GET /api/skills
GET /api/skills/export
GET /api/skills/{id}/export
POST /api/skills/import
GET /api/skills/{id}
PUT /api/skills/{id}
DELETE /api/skills/{id}
GET /api/tasks
GET /api/tasks/{id}
GET /api/tasks/{id}/progress
GET /api/tasks/workflow/{id}
POST /api/tasks/{id}/stop
POST /api/tokens
GET /api/tokens
GET /api/tokens/{id}
PUT /api/tokens/{id}
DELETE /api/tokens/{id}
POST /api/workflows
GET /api/workflows
GET /api/workflows/export
GET /api/workflows/{id}/export
POST /api/workflows/import
GET /api/workflows/{id}
PUT /api/workflows/{id}
DELETE /api/workflows/{id}
POST /api/workflows/{id}/prompt
POST /api/workflows/{id}/halt
POST /api/workflows/{id}/reset
GET /api/workflows/{id}/stream
POST /api/workflows/{id}/skills/{id}
DELETE /api/workflows/{id}/skills/{id}
"""


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{id}", path)


async def test_every_existing_route_is_served(alice: httpx.AsyncClient) -> None:
    document = (await alice.get("/openapi.json")).json()
    served = {
        (method.upper(), _shape(path))
        for path, operations in document["paths"].items()
        for method in operations
    }
    wanted = [tuple(line.split(" ", 1)) for line in ROUTES.strip().splitlines()]
    assert len(wanted) == 108
    missing = [f"{m} {p}" for m, p in wanted if (m, p) not in served]
    assert not missing, f"routes of the existing API not served: {missing}"
