"""A pool of identical boards: jobs spread over them in parallel, one job per board at a time.

A board that fails (unreachable, auth, host key, timeout, connection lost) ``max_failures`` times in a row
leaves the pool and its job moves to another board; the pool works while any board does.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgeslim.measure import LatencyStats
from edgeslim.ssh import BOARD_FAILURES, SSHRunner


class BoardPool:
    def __init__(self, runners: list[SSHRunner], max_failures: int = 2) -> None:
        self.runners = runners
        self.max_failures = max_failures
        self.where = f"pool of {len(runners)} board(s)"
        self._free: queue.Queue[SSHRunner] = queue.Queue()
        for runner in runners:
            self._free.put(runner)
        self._failures = {r.where: 0 for r in runners}
        self.removed: dict[str, str] = {}  # board -> why it left the pool
        self.removed_status: dict[str, str] = {}
        self.jobs_per_board = {r.where: 0 for r in runners}
        self._lock = threading.Lock()
        self.warnings: list[str] = []

    @property
    def healthy(self) -> list[SSHRunner]:
        return [r for r in self.runners if r.where not in self.removed]

    def check_host_keys(self) -> list[str]:
        """Connect to every board; warn when two present the same host key (cloned SD cards)."""
        seen: dict[str, str] = {}
        for runner in self.healthy:
            try:
                runner.connect()
            except Exception:
                continue
            fp = runner.host_key_fingerprint
            if fp and fp in seen:
                self.warnings.append(f"boards {seen[fp]} and {runner.where} present the same host key "
                                     f"(SHA256:{fp}): cloned SD cards? measurements may land on one device")
            elif fp:
                seen[fp] = runner.where
        return self.warnings

    def _take(self) -> SSHRunner | None:
        while True:
            with self._lock:
                if not self.healthy:
                    return None
            try:
                runner = self._free.get(timeout=0.5)
            except queue.Empty:
                continue
            if runner.where in self.removed:
                continue
            return runner

    def run_job(self, job: dict[str, Any], timeout_s: float) -> LatencyStats:
        while True:
            runner = self._take()
            if runner is None:
                return self._no_board_left()
            result = runner.run_job(job, timeout_s)
            with self._lock:
                self.jobs_per_board[runner.where] += 1
                if result.status in BOARD_FAILURES:
                    self._failures[runner.where] += 1
                    if self._failures[runner.where] >= self.max_failures:
                        self.removed[runner.where] = result.error or result.status
                        self.removed_status[runner.where] = result.status
                        runner.close()
                else:
                    self._failures[runner.where] = 0
            if runner.where not in self.removed:
                self._free.put(runner)
            if result.status not in BOARD_FAILURES:
                return result
            # a board failure says nothing about the model: try the job on another board

    def _no_board_left(self) -> LatencyStats:
        """One line per board, each board's own failure; typed as the boards failed when they all failed
        alike (a host-key refusal stays `host_key`, so the hint that fixes it is the one shown)."""
        statuses = set(self.removed_status.values())
        status = statuses.pop() if len(statuses) == 1 else "unreachable"
        reasons = list(dict.fromkeys(self.removed.values()))  # two boards with one cause: say it once
        prefix = "" if len(self.runners) == 1 else f"no board of {len(self.runners)} left: "
        return LatencyStats(status=status, where=self.where, error=prefix + "; ".join(reasons))

    def run_many(self, jobs: list[dict[str, Any]], timeout_s: float) -> list[LatencyStats]:
        with ThreadPoolExecutor(max_workers=max(1, len(self.runners))) as executor:
            return list(executor.map(lambda j: self.run_job(j, timeout_s), jobs))

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
