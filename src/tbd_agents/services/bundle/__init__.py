"""Export and import of bundles in the existing TBD Agents format, with ids remapped.

The wire format is the existing system's (reference §4.17):

* full: `{"version": "1.0", "exported_at", "resource_type": "bundle", "skills": [...],
  "agents": [...], "workflows": [...], "knowledge_sources": [...]}`;
* per resource: `{"version": "1.0", "exported_at", "resource_type": "agent", "items": [...]}`.

What this hub adds are extra keys an existing reader ignores (its models allow extra keys):
every exported item carries its `id` (so an import can point references at the records it
creates), the full bundle also lists `providers`, `mcp_servers`, `custom_tools`, `guardrails`,
`scheduled_agents` (and `knowledge_items` on request), `tokens_required` names the tokens the
records use (values are never exported) and `redacted` says where a password was removed from a
connection string.

Import walks the kinds parents-first and always creates new records by default (`mode=create`,
as the existing system did); `skip`, `rename` and `overwrite` match a record of the importer by
its natural key instead. A reference is rewritten through the id map when it names a record of
the bundle, kept when it names a record the importer can see, and otherwise the item is not
imported and the reason is in its kind's `errors` (never a silently dangling id). Every item is
checked like a POST of the same record (through `check`, the API's request schema, and the
resource's service); an item that fails is reported and the others are imported.

Bundles written by earlier versions of this hub (`{"format": "tbd-agents-bundle", "version": 1,
"resources": {...}}`) are read too.
"""

from tbd_agents.services.bundle.export import export_agent, export_bundle, export_kind
from tbd_agents.services.bundle.importer import import_bundle
from tbd_agents.services.bundle.kinds import (
    BUNDLE_VERSION,
    KINDS,
    ORDER,
    ROUTED,
    ImportMode,
    Kind,
)
from tbd_agents.services.bundle.parse import ParsedBundle, parse_bundle
from tbd_agents.services.bundle.report import (
    BundleImportReport,
    ImportResult,
    ResourceImportReport,
    resource_report,
)

__all__ = [
    "BUNDLE_VERSION",
    "KINDS",
    "ORDER",
    "ROUTED",
    "BundleImportReport",
    "ImportMode",
    "ImportResult",
    "Kind",
    "ParsedBundle",
    "ResourceImportReport",
    "export_agent",
    "export_bundle",
    "export_kind",
    "import_bundle",
    "parse_bundle",
    "resource_report",
]
