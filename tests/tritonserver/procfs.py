"""Read /proc to find what is left of a Triton process group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STUB = "triton_python_backend_stub"


@dataclass(frozen=True)
class Proc:
    """One live process as /proc shows it."""

    pid: int
    ppid: int
    pgid: int
    argv: tuple[str, ...]


def live_processes() -> list[Proc]:
    """Every live (non-zombie) process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        # Fields after the parenthesized command name: state, ppid, pgrp, ...
        state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if state != "Z":
            found.append(Proc(int(entry.name), int(ppid), int(pgrp), tuple(a for a in argv if a)))
    return found


def group_members(pgid: int) -> list[Proc]:
    """Live processes of process group `pgid`."""
    return [p for p in live_processes() if p.pgid == pgid]


def group_is_gone(pgid: int) -> bool:
    """Whether no process of group `pgid` exists any more (killpg answers ESRCH)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def stubs_of(triton_pid: int) -> list[Proc]:
    """Python-backend stubs started by that tritonserver: in its group, its children, or naming its pid."""
    return [
        p
        for p in live_processes()
        if p.argv
        and p.argv[0].endswith(STUB)
        and (p.pgid == triton_pid or p.ppid == triton_pid or str(triton_pid) in p.argv[1:])
    ]
