"""A scheduler process for the multi-process test, driven by a shared clock file.

Usage: python -m tests.runtime.sched_proc DIR NAME. Settings come from the environment. The
process ticks once for every new time written to DIR/clock ("step|ISO time"), then writes the
step to DIR/ack-NAME; it stops when DIR/stop exists. Runs it fires execute in this process
(in-process backend), as with `tbd-agents scheduler` without REDIS_URL.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path

from tbd_agents.config import load_settings
from tbd_agents.runtime.service import process_runtime


async def main(directory: Path, name: str) -> None:
    async with process_runtime(load_settings(), f"scheduler-{name}") as runtime:
        await runtime.start()
        scheduler = runtime.scheduler()
        clock, ack, stop = directory / "clock", directory / f"ack-{name}", directory / "stop"
        seen = ""
        try:
            while not stop.exists():
                text = clock.read_text().strip() if clock.exists() else ""
                if text and text != seen:
                    step, _, instant = text.partition("|")
                    await scheduler.tick(datetime.fromisoformat(instant))
                    seen = text
                    ack.write_text(step)
                await asyncio.sleep(0.005)
        finally:
            await runtime.aclose(drain_seconds=5)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
