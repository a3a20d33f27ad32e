"""`tbd-agents chat AGENT`: talk to an agent. With `-m` one message and its answer; without, a
REPL reading standard input: the answer is printed as it streams in, `/new` starts a new
session, `/sessions` lists yours, `/exit` (or end of input) quits, and Ctrl-C stops the answer
being written without leaving."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tbd_agents.cli.remote import (
    DEFAULT_URL,
    ExitCode,
    KeyOption,
    Output,
    OutputOption,
    UrlOption,
    api_errors,
    connect,
    die,
    show,
)
from tbd_agents.client import ApiError, TbdAgentsClient

HELP = "/new  a new session · /sessions  your sessions · /session ID  continue one · /exit  quit"


def resolve_agent(client: TbdAgentsClient, agent: str) -> tuple[str, str]:
    """(id, name) of the agent given by id or by name."""
    try:
        found = client.agents.get(agent)
        return found.id, found.name
    except ApiError as exc:
        if exc.status_code != 404:
            raise
    named = [a for a in client.agents.list() if a.name == agent]
    if len(named) == 1:
        return named[0].id, named[0].name
    if named:
        raise die(f"{len(named)} agents are named {agent!r}: give the id", ExitCode.USAGE)
    raise die(
        f"no agent with the id or name {agent!r} (tbd-agents agents list)", ExitCode.NOT_FOUND
    )


class Turn:
    """One message and its streamed answer."""

    def __init__(self, client: TbdAgentsClient, agent_id: str) -> None:
        self.client = client
        self.agent_id = agent_id
        self.session_id: str | None = None

    def send(self, message: str, *, echo: bool = True) -> tuple[str, bool]:
        """Send `message`; print the answer as it arrives (when `echo`); (answer, ok)."""
        parts: list[str] = []
        ok = True
        events = self.client.chat.stream(self.agent_id, message, session_id=self.session_id)
        try:
            for event in events:
                if event.type == "session":
                    self.session_id = event.data.get("session_id", self.session_id)
                elif event.type == "delta":
                    piece = str(event.data.get("content", ""))
                    parts.append(piece)
                    if echo:
                        sys.stdout.write(piece)
                        sys.stdout.flush()
                elif event.type == "error":
                    ok = False
                    typer.secho(f"\n[error] {event.data.get('message', '')}", err=True, fg="red")
                elif event.type == "tool_call" and echo:
                    typer.secho(f"\n[tool] {event.data.get('name', '')}", err=True, dim=True)
        except KeyboardInterrupt:
            events.close()  # closes the connection: the server stops the model call
            typer.secho("\n[stopped]", err=True, fg="yellow")
            ok = False
        if echo:
            sys.stdout.write("\n")
            sys.stdout.flush()
        return "".join(parts), ok


def repl(client: TbdAgentsClient, agent_id: str, agent_name: str, turn: Turn) -> None:
    interactive = sys.stdin.isatty()
    if interactive:
        typer.secho(f"Chatting with {agent_name}. {HELP}", err=True, dim=True)
    while True:
        try:
            if interactive:
                line = input("you> ")
            else:
                line = sys.stdin.readline()
                if not line:
                    break
        except EOFError:
            break
        except KeyboardInterrupt:
            typer.secho("\n(/exit to quit)", err=True, dim=True)
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/new":
            turn.session_id = None
            typer.echo("[new session]")
            continue
        if text == "/sessions":
            sessions = client.chat.list_sessions(agent_id)
            for s in sessions:
                mark = "*" if s.id == turn.session_id else " "
                typer.echo(f"{mark} {s.id}  {s.message_count:>3} msgs  {s.title or ''}")
            if not sessions:
                typer.echo("(no sessions yet)")
            continue
        if text.startswith("/session "):
            turn.session_id = text.split(None, 1)[1]
            typer.echo(f"[session {turn.session_id}]")
            continue
        if text.startswith("/"):
            typer.echo(HELP)
            continue
        try:
            turn.send(text)
        except ApiError as exc:  # a refused message does not end the REPL
            typer.secho(f"[{exc.status_code}] {exc.detail}", err=True, fg="red")


@api_errors
def chat(
    agent: Annotated[str, typer.Argument(help="The agent's id or name.")],
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Send one message, print the answer, exit."),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Continue this chat session.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Chat with an agent: a REPL, or one message with -m."""
    with connect(url, key, timeout=300.0) as client:
        agent_id, agent_name = resolve_agent(client, agent)
        turn = Turn(client, agent_id)
        turn.session_id = session
        if message is None:
            repl(client, agent_id, agent_name, turn)
            return
        if output is Output.json:
            answer, ok = turn.send(message, echo=False)
            show({"session_id": turn.session_id, "answer": answer, "ok": ok}, output)
        else:
            _, ok = turn.send(message)
        if not ok:
            raise typer.Exit(ExitCode.API_ERROR)
