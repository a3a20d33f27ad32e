"""The agent engine: providers, one tool loop, MCP and sandboxed tools, guardrails, compaction."""
