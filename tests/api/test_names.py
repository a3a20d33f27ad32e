"""Names: a request must give 1 to 512 characters; a stored record with a name outside that
(the existing TBD Agents had no limit) still reads and updates."""

from __future__ import annotations

import httpx

from tbd_agents.domain.models import Skill
from tests.api.conftest import Api


async def test_requests_need_a_name_of_1_to_512_characters(alice: httpx.AsyncClient) -> None:
    for name, fragment in (("", "at least 1 character"), ("s" * 513, "at most 512")):
        refused = await alice.post("/api/skills", json={"name": name, "instructions": "x"})
        assert refused.status_code == 422 and fragment in refused.text
    ok = await alice.post("/api/skills", json={"name": "s" * 512, "instructions": "x"})
    assert ok.status_code == 201


async def test_a_stored_record_with_a_long_or_empty_name_reads_and_updates(
    api: Api, admin: httpx.AsyncClient
) -> None:
    long = Skill(name="s" * 600, instructions="old")
    empty = Skill(name="", instructions="old")
    async with api.store.unit_of_work() as repos:
        await repos.skills.create(long)
        await repos.skills.create(empty)
    for record in (long, empty):
        got = await admin.get(f"/api/skills/{record.id}")
        assert got.status_code == 200 and got.json()["name"] == record.name
        changed = await admin.patch(f"/api/skills/{record.id}", json={"instructions": "new"})
        assert changed.status_code == 200 and changed.json()["instructions"] == "new"
