"""Domain model: the 15 entities, their enums and field types."""

from tbd_agents.domain.models import ENTITIES, ENTITY_BY_COLLECTION, Entity

__all__ = ["ENTITIES", "ENTITY_BY_COLLECTION", "Entity"]
