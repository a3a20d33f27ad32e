"""The client's request and response types under the official SDK's module path
(`from tbd_agents.types import WorkflowCreate`)."""

from tbd_agents.client.types import *  # noqa: F403
