"""The client's exceptions under the official SDK's module path (`tbd_agents.exceptions`)."""

from tbd_agents.client.errors import ApiError, TbdAgentsError, TransportError

__all__ = ["ApiError", "TbdAgentsError", "TransportError"]
