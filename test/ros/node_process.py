"""A node executable as a subprocess: its output lines with their arrival times, signals, its exit."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def node_environment(domain_id: int, **extra: str) -> dict[str, str]:
    """This environment with discovery on this host in `domain_id` and the repository importable."""
    return dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


class NodeProcess:
    """`command` running with stdout and stderr read line by line (`lines`: (monotonic time, line))."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path = REPO_ROOT):
        self.lines: list[tuple[float, str]] = []
        self.signalled_at: float | None = None
        self.process = subprocess.Popen(command, env=env, cwd=str(cwd), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                        start_new_session=True)  # a group of its own: `close` ends its children too
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def module(cls, module: str, ros_args: list[str], domain_id: int) -> NodeProcess:
        """`python -m module --ros-args ...`."""
        return cls([sys.executable, "-m", module, "--ros-args", *ros_args], node_environment(domain_id))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for_line(self, text: str, timeout: float) -> bool:
        """Wait until a line containing `text` was printed (False on timeout or exit)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for _, line in self.lines):
                return True
            if self.process.poll() is not None:
                self._reader.join(1.0)
                return any(text in line for _, line in self.lines)
            time.sleep(0.005)
        return False

    def send(self, number: int, times: int = 1, gap_s: float = 0.05) -> None:
        """Send the signal `times` times, `gap_s` apart; the first one's time is `signalled_at`."""
        self.signalled_at = time.monotonic()
        for index in range(times):
            if index:
                time.sleep(gap_s)
            self.process.send_signal(number)

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """(exit code, seconds from the first signal to the exit); code None when it did not exit in time."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None, timeout
        elapsed = time.monotonic() - (self.signalled_at or time.monotonic())
        self._reader.join(2.0)
        return code, elapsed

    def lines_after_signal(self) -> list[str]:
        return [line for at, line in self.lines if self.signalled_at is not None and at >= self.signalled_at
                and line.strip()]

    def close(self) -> None:
        """Kill the process and whatever it started (e.g. launch's nodes) if they still run (a failed test)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone: the process and its children have exited
            pass
        self.process.wait(10)
