"""The API server as a process of its own, for the test that kills it (kill -9) while a run
awaits approval: `python -m tests.runtime.approval_proc DATA_DIR POSTGRES_URI PORT`."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from tbd_agents.api import create_app
from tests.runtime.approval_support import approval_settings

if __name__ == "__main__":
    data_dir, postgres_uri, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = approval_settings(Path(data_dir), postgres_uri)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
