"""`tbd-agents runs list|get|logs|cancel` (a workflow's runs are its task executions) and
`tbd-agents workflows run` (start one and wait for its answer)."""

from __future__ import annotations

from typing import Annotated

import typer

from tbd_agents.cli.remote import (
    DEFAULT_URL,
    KeyOption,
    Output,
    OutputOption,
    UrlOption,
    api_errors,
    connect,
    show,
)
from tbd_agents.client.types import TERMINAL_TASK_STATUSES

app = typer.Typer(
    help="Runs (task executions) of workflows on a running server.", no_args_is_help=True
)

COLUMNS = ("id", "workflow_title", "agent_name", "status", "model", "created_at", "elapsed_seconds")
RunId = Annotated[str, typer.Argument(help="The run's (task's) id.")]


@app.command("list")
@api_errors
def list_runs(
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only this workflow's runs.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    output: OutputOption = Output.table,
) -> None:
    """List your runs, newest first."""
    with connect(url, key) as client:
        runs = client.tasks.list_for_workflow(workflow) if workflow else client.tasks.list()
        show(runs, output, COLUMNS)


@app.command("get")
@api_errors
def get_run(
    run_id: RunId, url: UrlOption = DEFAULT_URL, key: KeyOption = None,
    output: OutputOption = Output.table,
) -> None:  # fmt: skip
    """Show one run: status, answer, usage, logs."""
    with connect(url, key) as client:
        show(client.tasks.get(run_id), output, COLUMNS)


@app.command("logs")
@api_errors
def run_logs(
    run_id: RunId,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep printing a running run's events until it ends.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Print a run's log (`--follow`: then its live events until it ends)."""
    with connect(url, key, timeout=None if follow else 30.0) as client:
        task = client.tasks.get(run_id)
        if output is Output.json and not follow:
            show(task.logs, output)
            return
        for entry in task.logs:
            typer.echo(f"{entry.timestamp or ''}  {entry.event}  {entry.detail}".rstrip())
        if follow and task.status not in TERMINAL_TASK_STATUSES:
            for event in client.workflows.stream(task.workflow_id):
                if output is Output.json:
                    show(event, output)
                elif event.type == "message_delta":
                    typer.echo((event.data or {}).get("content", ""), nl=False)
                elif event.type == "log":
                    data = event.data or {}
                    typer.echo(
                        f"\n{event.timestamp or ''}  {data.get('event', '')}  {data.get('detail', '')}"
                    )
                elif event.type == "status":
                    typer.echo(f"\nstatus: {(event.data or {}).get('status', '')}")


@app.command("cancel")
@api_errors
def cancel_run(run_id: RunId, url: UrlOption = DEFAULT_URL, key: KeyOption = None) -> None:
    """Ask a pending or running run to stop."""
    with connect(url, key) as client:
        answer = client.tasks.stop(run_id)
    typer.echo(f"Run {run_id}: {answer.get('status', 'halt requested')}.")


def run_workflow(
    workflow_id: Annotated[str, typer.Argument(help="The workflow's id.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to ask.")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the answer.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 600.0,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Start a run of a workflow; with --wait (default) print its answer when it ends."""
    with connect(url, key) as client:
        if not wait:
            show(client.workflows.send_prompt(workflow_id, prompt=prompt), output, COLUMNS)
            return
        task = client.workflows.run_prompt(
            workflow_id, prompt=prompt, interval=0.5, timeout=timeout
        )
        if output is Output.json:
            show(task, output)
        else:
            typer.echo(task.response or "")
            typer.echo(f"[{task.status}] run {task.id}", err=True)
    if str(task.status) != "completed":
        raise typer.Exit(1)
