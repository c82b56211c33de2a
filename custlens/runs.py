"""Who runs a training or scoring run: the host and pid recorded when it starts, and whether that
process is gone, so that the next start can mark a run that a killed process left `running`.

Only a process of this host can be known to be gone; a run of another host, or of a process that
cannot be seen, is taken as alive and left alone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

import psutil

# A process's start time is known to about a second (boot time + clock ticks): a process that
# started later than the run by more than this cannot be the one that began it.
_START_TIME_SLACK_SECONDS = 2.0


@dataclass(frozen=True)
class RunOwner:
    host: str
    pid: int

    @classmethod
    def here(cls) -> RunOwner:
        return cls(socket.gethostname(), os.getpid())

    def is_gone(self, run_started: datetime | None = None) -> bool:
        """True when this host has no such process: it ended, it is a zombie, or its pid now
        belongs to a process that started after the run (`run_started`, aware) began."""
        if self.host != socket.gethostname():
            return False
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
            started = process.create_time()
        except psutil.NoSuchProcess:  # ZombieProcess included
            return True
        except psutil.AccessDenied:
            return False  # alive, though not ours to look at
        return run_started is not None and started > run_started.timestamp() + _START_TIME_SLACK_SECONDS

    def killed_reason(self) -> str:
        return f"killed: process {self.pid} on {self.host} is gone"
