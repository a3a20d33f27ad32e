"""Install a skill on a workflow, or remove it: `POST` / `DELETE
/api/workflows/{workflow_id}/skills/{skill_id}`, answering the workflow, as the existing API did.

Installing a skill that is already installed is a 409; installing an unknown skill (or one the
caller cannot see) a 404; removing a skill the workflow does not have a 404. Both answer the
workflow's `ETag` and take `If-Match` (412 when the workflow changed since it was read).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from tbd_agents.api.crud import ERRORS, record_response
from tbd_agents.api.deps import Caller, Ctx
from tbd_agents.api.preconditions import IfMatch, expected_versions
from tbd_agents.api.present import present_one
from tbd_agents.api.schemas import output_schema
from tbd_agents.domain.models import Skill, Workflow
from tbd_agents.errors import Conflict, NotFound
from tbd_agents.services.records import Records

router = APIRouter(
    prefix="/api/workflows/{workflow_id}/skills/{skill_id}", tags=["workflows"], responses=ERRORS
)
WorkflowId = Annotated[str, Path(description="Workflow id.")]
SkillId = Annotated[str, Path(description="Skill id.")]


@router.post("", response_model=output_schema(Workflow), summary="Install a skill on a workflow")
async def install_skill(
    workflow_id: WorkflowId, skill_id: SkillId, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    expected = expected_versions(if_match)

    def add(workflow: Workflow) -> dict[str, Any]:
        if skill_id in workflow.skill_ids:
            raise Conflict(
                f"skill {skill_id!r} is already installed on workflow {workflow_id!r}",
                details={"skill_id": skill_id},
            )
        return {"skill_ids": [*workflow.skill_ids, skill_id]}

    async with ctx.store.unit_of_work() as repos:
        await Records(repos, caller, Skill).get(skill_id)
        # the list is read, changed and written back: conditional on the version read, so two
        # installs at once both land (`Records.modify`)
        updated = await Records(repos, caller, Workflow).modify(
            workflow_id, add, expected_versions=expected
        )
        body = await present_one(updated, repos, ctx)
    return record_response(body, updated)


@router.delete("", response_model=output_schema(Workflow), summary="Remove a skill from a workflow")
async def remove_skill(
    workflow_id: WorkflowId, skill_id: SkillId, ctx: Ctx, caller: Caller, if_match: IfMatch = None
) -> Response:
    expected = expected_versions(if_match)

    def drop(workflow: Workflow) -> dict[str, Any]:
        if skill_id not in workflow.skill_ids:
            raise NotFound(f"skill installed on workflow {workflow_id}", skill_id)
        return {"skill_ids": [s for s in workflow.skill_ids if s != skill_id]}

    async with ctx.store.unit_of_work() as repos:
        updated = await Records(repos, caller, Workflow).modify(
            workflow_id, drop, expected_versions=expected
        )
        body = await present_one(updated, repos, ctx)
    return record_response(body, updated)
