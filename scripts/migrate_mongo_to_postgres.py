#!/usr/bin/env python
"""Migrate TBD Agents data from MongoDB (live, or a mongodump) into PostgreSQL.

The guide's entry point; the same command as `tbd-agents migrate from-mongo`. Connections come
from MONGO_URI, MONGO_DB_NAME and POSTGRES_URI (or `.env`). Run with --help for every flag.
"""

import sys
from pathlib import Path

# Works from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tbd_agents.cli.migrate import single_command

if __name__ == "__main__":
    single_command("from-mongo")(prog_name="migrate_mongo_to_postgres.py")
