"""How `python -m pytest` spreads the suite over worker processes (pytest-xdist).

The hooks in tests/conftest.py call these functions; this module imports xdist only inside them,
so the suite also runs without the plugin (`-p no:xdist`).

* Workers: one per CPU this process may run on plus one, at most `MAX_WORKERS`. Much of the
  suite waits (subprocesses, restarts, signals, timeouts, the browser): on 2 cores two workers
  kept the CPUs 58 % busy (655 s) and three 69 % (584 s), all else equal. Each worker starts its
  own embedded PostgreSQL 18 and migrates its own template databases, a few seconds each. `PYTEST_XDIST_AUTO_NUM_WORKERS=N` overrides the count, `-n N` too, and
  `-n 0` (or `-p no:xdist`) runs everything in this process.
* Units of work: a whole test module goes to one worker, so module-scoped fixtures (a migrated
  database, a live server) are set up once and the module's tests keep their order; every test
  under tests/web/ forms a single unit, so one worker runs the browser suite with one Chromium
  and one API server. Units are handed out most tests first (xdist's loadscope order), which
  starts the big parametrised modules and the browser suite early and leaves the many small
  modules for the end, where they even out the workers' finishing times.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

#: The default number of workers never exceeds this, whatever the CPU count.
MAX_WORKERS = 4
#: Node ids of the browser tests start with this (node ids are relative to the rootdir).
WEB_TESTS = "tests/web/"
#: The `--dist` mode that `python -m pytest` uses by default; `_split_scope` below replaces
#: xdist's own unit for it (module and class) with module, and tests/web as a whole.
DEFAULT_DIST = "loadscope"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        return os.cpu_count() or 1


def auto_workers() -> int:
    """The worker count of `-n auto`."""
    override = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if override:
        try:
            return max(0, int(override))
        except ValueError:
            raise pytest.UsageError(
                f"PYTEST_XDIST_AUTO_NUM_WORKERS={override!r} is not a number: "
                "set it to a worker count such as 2, or unset it"
            ) from None
    return max(1, min(usable_cpus() + 1, MAX_WORKERS))


def default_to_parallel(config: pytest.Config) -> None:
    """`-n auto` unless the command line gives `-n` (or `--tx`), and `--dist loadscope` unless
    it gives `--dist`."""
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return  # plugin disabled (-p no:xdist), or this is a worker process itself
    option = config.option
    if option.numprocesses is None and not option.tx and not option.collectonly:
        option.numprocesses = "auto"
    if option.dist == "no" and option.numprocesses != 0:
        option.dist = DEFAULT_DIST


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: tests/web as a whole, otherwise its module."""
    if nodeid.startswith(WEB_TESTS):
        return WEB_TESTS
    return nodeid.split("::", 1)[0]


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    """A loadscope scheduler whose units are `scope_of` (None: other modes keep xdist's)."""
    if config.option.dist != DEFAULT_DIST:
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ModuleScheduling(config, log)
