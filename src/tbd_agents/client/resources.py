"""The client's resources: one class per API collection, methods named as in the official SDK."""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Generic, TypeVar

from pydantic import BaseModel

from tbd_agents.client import types as t
from tbd_agents.client.sse import iter_sse_messages

if TYPE_CHECKING:
    from tbd_agents.client.http import TbdAgentsClient

M = TypeVar("M", bound=BaseModel)
Payload = BaseModel | Mapping[str, Any]


def to_body(payload: Payload | None) -> dict[str, Any] | None:
    """A request body: a model sends the fields that were set (defaults the caller did not
    touch are left to the server), a mapping is sent as it is."""
    if payload is None:
        return None
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json", exclude_unset=True)
    return dict(payload)


def _tags(tags: builtins.list[str] | None) -> str | None:
    return ",".join(tags) if tags else None


def _params(**values: Any) -> dict[str, Any] | None:
    kept = {k: v for k, v in values.items() if v is not None}
    return kept or None


class Resource:
    def __init__(self, client: TbdAgentsClient) -> None:
        self._client = client

    def _one(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self._client.request(method, path, **kwargs))

    def _many(self, model: type[M], path: str, params: Mapping[str, Any] | None = None) -> list[M]:
        data = self._client.request("GET", path, params=params)
        return [model.model_validate(item) for item in data or []]


class CrudResource(Resource, Generic[M]):
    """list / get / create / update / delete on `/api/<path>`, answering `model` records."""

    path = ""
    model: type[M]

    def create(self, payload: Payload) -> M:
        return self._one(self.model, "POST", self.path, json=to_body(payload))

    def list(self) -> builtins.list[M]:
        return self._many(self.model, self.path)

    def get(self, record_id: str) -> M:
        return self._one(self.model, "GET", f"{self.path}/{record_id}")

    def update(self, record_id: str, payload: Payload) -> M:
        return self._one(self.model, "PUT", f"{self.path}/{record_id}", json=to_body(payload))

    def delete(self, record_id: str) -> None:
        self._client.request("DELETE", f"{self.path}/{record_id}")


class _Bundles(CrudResource[M]):
    """Resources with `export` / `import_` bundles."""

    def export(self, record_id: str | None = None) -> t.ExportBundle:
        path = f"{self.path}/export" if record_id is None else f"{self.path}/{record_id}/export"
        return self._one(t.ExportBundle, "GET", path)

    def import_(self, payload: Payload) -> t.ImportResult:
        return self._one(t.ImportResult, "POST", f"{self.path}/import", json=to_body(payload))


class HealthResource(Resource):
    def get(self) -> t.HealthStatus:
        return t.HealthStatus.model_validate(self._client.request("GET", "/health", api=False))


class AgentsResource(_Bundles[t.Agent]):
    path, model = "/agents", t.Agent


class SkillsResource(_Bundles[t.Skill]):
    path, model = "/skills", t.Skill


class McpsResource(CrudResource[t.McpServer]):
    path, model = "/mcps", t.McpServer

    def test(self, server_id: str) -> t.McpTestResult:
        return self._one(t.McpTestResult, "POST", f"/mcps/{server_id}/test")

    def list_tools(self, server_id: str) -> t.McpTools:
        return self._one(t.McpTools, "GET", f"/mcps/{server_id}/tools")

    def update_tools(
        self, server_id: str, allowed_tools: builtins.list[str] | t.AllowedToolsUpdate
    ) -> t.AllowedToolsUpdate:
        body = (
            {"allowed_tools": allowed_tools}
            if isinstance(allowed_tools, builtins.list)
            else to_body(allowed_tools)
        )
        return self._one(t.AllowedToolsUpdate, "PUT", f"/mcps/{server_id}/tools", json=body)


class KnowledgeSourcesResource(_Bundles[t.KnowledgeSource]):
    path, model = "/knowledge-sources", t.KnowledgeSource

    def list(self, *, tags: builtins.list[str] | None = None) -> builtins.list[t.KnowledgeSource]:
        return self._many(t.KnowledgeSource, self.path, _params(tags=_tags(tags)))

    def test(self, source_id: str) -> t.KnowledgeSourceTestResult:
        return self._one(t.KnowledgeSourceTestResult, "POST", f"{self.path}/{source_id}/test")


def _file_part(
    file: bytes | str | Path | BinaryIO, filename: str | None
) -> tuple[str, bytes | BinaryIO, bool]:
    """(file name, content, whether we opened it and must close it)."""
    if isinstance(file, str | Path):
        path = Path(file)
        return filename or path.name, path.open("rb"), True
    if isinstance(file, bytes):
        return filename or "upload.bin", file, False
    return filename or Path(getattr(file, "name", "upload.bin")).name, file, False


class KnowledgeItemsResource(CrudResource[t.KnowledgeItem]):
    path, model = "/knowledge-items", t.KnowledgeItem

    def list(
        self,
        *,
        source_id: str | None = None,
        tags: builtins.list[str] | None = None,
        content_type: str | None = None,
    ) -> builtins.list[t.KnowledgeItem]:
        params = _params(source_id=source_id, tags=_tags(tags), content_type=content_type)
        return self._many(t.KnowledgeItem, self.path, params)

    def query(self, *, tags: builtins.list[str], limit: int = 10) -> t.KnowledgeQueryResponse:
        body = {"tags": tags, "limit": limit}
        return self._one(t.KnowledgeQueryResponse, "POST", f"{self.path}/query", json=body)

    def upload(
        self,
        *,
        source_id: str,
        file: bytes | BinaryIO | str | Path,
        filename: str | None = None,
        content_type: str | None = None,
        tags: builtins.list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> t.KnowledgeItem:
        name, content, opened = _file_part(file, filename)
        try:
            files = {"file": (name, content, content_type or "application/octet-stream")}
            data = {
                "source_id": source_id,
                "tags": json.dumps(tags or []),
                "metadata": json.dumps(metadata or {}),
            }
            return self._one(t.KnowledgeItem, "POST", f"{self.path}/upload", files=files, data=data)
        finally:
            if opened and not isinstance(content, bytes):
                content.close()

    def download(self, item_id: str) -> t.DownloadedContent:
        response = self._client.raw_request("GET", f"{self.path}/{item_id}/content")
        self._client.raise_for_status(response)
        disposition = response.headers.get("content-disposition", "")
        filename = None
        if "filename=" in disposition:
            filename = disposition.split("filename=", 1)[1].split(";", 1)[0].strip().strip('"')
        return t.DownloadedContent(
            content=response.content,
            content_type=response.headers.get("content-type"),
            filename=filename,
        )


class ProvidersResource(CrudResource[t.Provider]):
    path, model = "/providers", t.Provider


class TokensResource(CrudResource[t.Token]):
    path, model = "/tokens", t.Token


class ModelsResource(Resource):
    def list(self, *, provider_id: str | None = None) -> builtins.list[dict[str, Any]]:
        data = self._client.request("GET", "/models", params=_params(provider_id=provider_id))
        return builtins.list(data or [])


class TasksResource(Resource):
    def list(self) -> list[t.TaskExecutionSummary]:
        return self._many(t.TaskExecutionSummary, "/tasks")

    def get(self, task_id: str) -> t.TaskExecution:
        return self._one(t.TaskExecution, "GET", f"/tasks/{task_id}")

    def progress(self, task_id: str) -> t.TaskProgress:
        return self._one(t.TaskProgress, "GET", f"/tasks/{task_id}/progress")

    def list_for_workflow(self, workflow_id: str) -> builtins.list[t.TaskExecutionSummary]:
        return self._many(t.TaskExecutionSummary, f"/tasks/workflow/{workflow_id}")

    def stop(self, task_id: str) -> dict[str, Any]:
        """Ask a pending or running task to halt (202 `{status: "halt_requested", ...}`)."""
        return dict(self._client.request("POST", f"/tasks/{task_id}/stop") or {})

    def wait(
        self, task_id: str, *, interval: float = 0.5, timeout: float | None = 300.0
    ) -> t.TaskExecution:
        """Poll the task until it reaches a final status (TimeoutError after `timeout` s)."""
        started = time.monotonic()
        while True:
            task = self.get(task_id)
            if task.status in t.TERMINAL_TASK_STATUSES:
                return task
            if timeout is not None and time.monotonic() - started >= timeout:
                raise TimeoutError(f"timed out waiting for task {task_id}")
            time.sleep(interval)


class WorkflowsResource(_Bundles[t.Workflow]):
    path, model = "/workflows", t.Workflow
    TERMINAL_TASK_STATUSES = t.TERMINAL_TASK_STATUSES

    def send_prompt(
        self,
        workflow_id: str,
        *,
        prompt: str | None = None,
        request: dict[str, Any] | None = None,
        reasoning_effort: str | None = None,
    ) -> t.PromptResponse:
        body = t.PromptRequest(prompt=prompt, request=request, reasoning_effort=reasoning_effort)
        return self._one(
            t.PromptResponse,
            "POST",
            f"{self.path}/{workflow_id}/prompt",
            json=body.model_dump(mode="json", exclude_none=True),
        )

    def halt(self, workflow_id: str) -> t.DetailResponse:
        return self._one(t.DetailResponse, "POST", f"{self.path}/{workflow_id}/halt")

    def install_skill(self, workflow_id: str, skill_id: str) -> t.Workflow:
        return self._one(t.Workflow, "POST", f"{self.path}/{workflow_id}/skills/{skill_id}")

    def remove_skill(self, workflow_id: str, skill_id: str) -> t.Workflow:
        return self._one(t.Workflow, "DELETE", f"{self.path}/{workflow_id}/skills/{skill_id}")

    def list_tasks(self, workflow_id: str) -> builtins.list[t.TaskExecution]:
        return self._many(t.TaskExecution, f"/tasks/workflow/{workflow_id}")

    def wait_for_task(
        self,
        task_id: str,
        *,
        interval: float = 1.0,
        timeout: float | None = 300.0,
        predicate: Callable[[t.TaskExecution], bool] | None = None,
    ) -> t.TaskExecution:
        done = predicate or (lambda task: task.status in t.TERMINAL_TASK_STATUSES)
        started = time.monotonic()
        while True:
            task = self._client.tasks.get(task_id)
            if done(task):
                return task
            if timeout is not None and time.monotonic() - started >= timeout:
                raise TimeoutError(f"timed out waiting for task {task_id}")
            time.sleep(interval)

    def wait_for_workflow(
        self,
        workflow_id: str,
        *,
        interval: float = 1.0,
        timeout: float | None = 300.0,
        predicate: Callable[[t.Workflow], bool] | None = None,
    ) -> t.Workflow:
        first = self.get(workflow_id)
        changed = predicate or (
            lambda wf: wf.updated_at != first.updated_at or wf.task_count != first.task_count
        )
        started = time.monotonic()
        while True:
            workflow = self.get(workflow_id)
            if changed(workflow):
                return workflow
            if timeout is not None and time.monotonic() - started >= timeout:
                raise TimeoutError(f"timed out waiting for workflow {workflow_id}")
            time.sleep(interval)

    def run_prompt(
        self,
        workflow_id: str,
        *,
        prompt: str | None = None,
        request: dict[str, Any] | None = None,
        reasoning_effort: str | None = None,
        interval: float = 1.0,
        timeout: float | None = 300.0,
    ) -> t.TaskExecution:
        """Start a run and wait for it to end: the finished task (with `response`)."""
        known = {task.id for task in self.list_tasks(workflow_id)}
        started = self.send_prompt(
            workflow_id, prompt=prompt, request=request, reasoning_effort=reasoning_effort
        )
        task_id = started.task_id
        began = time.monotonic()
        while task_id is None:  # a server that does not name the task: find the new one
            task_id = next(
                (task.id for task in self.list_tasks(workflow_id) if task.id not in known), None
            )
            if task_id is None:
                if timeout is not None and time.monotonic() - began >= timeout:
                    raise TimeoutError(f"no task was created for workflow {workflow_id}")
                time.sleep(interval)
        return self.wait_for_task(task_id, interval=interval, timeout=timeout)

    def stream(
        self, workflow_id: str, *, last_event_id: str | int | None = None
    ) -> Iterator[t.WorkflowStreamEvent]:
        """The workflow's events as they happen (this server ends the stream after the run's
        final status); `last_event_id` replays the events after it."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        with self._client.stream("GET", f"{self.path}/{workflow_id}/stream", headers=headers) as r:
            self._client.raise_for_status(r)
            for message in iter_sse_messages(r.iter_lines()):
                if message.data:
                    yield t.WorkflowStreamEvent.model_validate_json(message.data)


class ChatResource(Resource):
    def send_message(
        self, agent_id: str, payload: t.ChatRequest | Mapping[str, Any]
    ) -> Iterator[str]:
        """The turn's SSE `data` frames (JSON text) as they arrive."""
        for message in self._frames(agent_id, payload):
            yield message.data

    def stream(
        self, agent_id: str, message: str, *, session_id: str | None = None
    ) -> Generator[t.ChatEvent, None, None]:
        """The turn as typed events: `session`, `delta` (`data["content"]`), `done`, `error`,
        and tool events. Closing the iterator stops the answer."""
        body = {"message": message, **({"session_id": session_id} if session_id else {})}
        for frame in self._frames(agent_id, body):
            data = json.loads(frame.data)
            kind = frame.event or (data.get("type") if isinstance(data, dict) else None) or ""
            yield t.ChatEvent(type=kind, data=data if isinstance(data, dict) else {"value": data})

    def _frames(self, agent_id: str, payload: Payload) -> Iterator[Any]:
        with self._client.stream("POST", f"/agents/{agent_id}/chat", json=to_body(payload)) as r:
            self._client.raise_for_status(r)
            for message in iter_sse_messages(r.iter_lines()):
                if message.data:
                    yield message

    def list_sessions(self, agent_id: str) -> list[t.ChatSessionResponse]:
        return self._many(t.ChatSessionResponse, f"/agents/{agent_id}/chat/sessions")

    def get_session(self, agent_id: str, session_id: str) -> t.ChatSessionDetail:
        path = f"/agents/{agent_id}/chat/sessions/{session_id}"
        return self._one(t.ChatSessionDetail, "GET", path)

    def delete_session(self, agent_id: str, session_id: str) -> None:
        self._client.request("DELETE", f"/agents/{agent_id}/chat/sessions/{session_id}")

    def start(self, payload: Mapping[str, Any] | BaseModel) -> t.ChatStartResponse:
        return self._one(t.ChatStartResponse, "POST", "/chat/start", json=to_body(payload))


class MemoriesResource(CrudResource[t.Memory]):
    path, model = "/memories", t.Memory

    def list(
        self,
        *,
        agent_id: str | None = None,
        scope: str | None = None,
        tags: builtins.list[str] | None = None,
    ) -> builtins.list[t.Memory]:
        params = _params(agent_id=agent_id, scope=scope and str(scope), tags=_tags(tags))
        return self._many(t.Memory, self.path, params)

    def search(self, payload: Payload) -> builtins.list[t.Memory]:
        data = self._client.request("POST", f"{self.path}/search", json=to_body(payload))
        return [t.Memory.model_validate(item) for item in data or []]

    def get_stm(self, agent_id: str) -> builtins.list[dict[str, Any]]:
        return builtins.list(self._client.request("GET", f"{self.path}/stm/{agent_id}") or [])


class GuardrailsResource(CrudResource[t.Guardrail]):
    path, model = "/guardrails", t.Guardrail

    def list(self, *, tag: str | None = None) -> builtins.list[t.Guardrail]:
        return self._many(t.Guardrail, self.path, _params(tag=tag))


class ScheduledAgentsResource(CrudResource[t.ScheduledAgent]):
    path, model = "/scheduled-agents", t.ScheduledAgent

    def update(self, sa_id: str, payload: Payload) -> t.ScheduledAgent:
        return self._one(t.ScheduledAgent, "PATCH", f"{self.path}/{sa_id}", json=to_body(payload))

    def enable(self, sa_id: str) -> t.ScheduledAgent:
        return self._one(t.ScheduledAgent, "PATCH", f"{self.path}/{sa_id}/enable")

    def disable(self, sa_id: str) -> t.ScheduledAgent:
        return self._one(t.ScheduledAgent, "PATCH", f"{self.path}/{sa_id}/disable")


class CustomToolsResource(CrudResource[t.CustomTool]):
    path, model = "/custom-tools", t.CustomTool

    def list(self, *, tag: str | None = None) -> builtins.list[t.CustomTool]:
        return self._many(t.CustomTool, self.path, _params(tag=tag))

    def run(self, tool_id: str, payload: Payload) -> t.CustomToolRunResponse:
        path = f"{self.path}/{tool_id}/run"
        return self._one(t.CustomToolRunResponse, "POST", path, json=to_body(payload))

    def validate(self, payload: Payload) -> t.CustomToolValidateResponse:
        path = f"{self.path}/validate"
        return self._one(t.CustomToolValidateResponse, "POST", path, json=to_body(payload))

    def upload(
        self,
        *,
        source_code: str | bytes | BinaryIO | Path,
        name: str,
        description: str = "",
        tags: builtins.list[str] | None = None,
    ) -> t.CustomTool:
        """Upload a `.py` file (a path, an open file, or the source itself as str/bytes)."""
        opened = False
        content: bytes | BinaryIO
        filename = f"{name}.py"
        if isinstance(source_code, Path) or (
            isinstance(source_code, str) and "\n" not in source_code and Path(source_code).is_file()
        ):
            path = Path(source_code)
            content, filename, opened = path.open("rb"), path.name, True
        elif isinstance(source_code, str):
            content = source_code.encode()
        else:
            content = source_code
        try:
            files = {"file": (filename, content, "text/x-python")}
            data = {"name": name, "description": description, "tags": json.dumps(tags or [])}
            return self._one(t.CustomTool, "POST", f"{self.path}/upload", files=files, data=data)
        finally:
            if opened and not isinstance(content, bytes):
                content.close()

    def get_env_mapping(self, tool_id: str) -> t.EnvMappingResponse:
        return self._one(t.EnvMappingResponse, "GET", f"{self.path}/{tool_id}/env-mapping")

    def update_env_mapping(self, tool_id: str, payload: Payload) -> t.EnvMappingResponse:
        path = f"{self.path}/{tool_id}/env-mapping"
        return self._one(t.EnvMappingResponse, "PUT", path, json=to_body(payload))


class ExportImportResource(Resource):
    def export_all(self) -> t.FullExportBundle:
        return self._one(t.FullExportBundle, "GET", "/export")

    def import_all(self, payload: Payload) -> t.BundleImportResult:
        return self._one(t.BundleImportResult, "POST", "/import", json=to_body(payload))
