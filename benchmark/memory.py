"""Peak memory of a stretch of work: GPU allocator peak on CUDA, sampled process RSS on CPU."""

from __future__ import annotations

import threading

import psutil
import torch


class PeakMemory:
    """Context manager measuring the peak memory (MiB) used while it is open.

    On the CPU the process's resident set is sampled every few milliseconds in a thread: torch's
    CPU allocator offers no peak counter, and the figure that matters to a user is what the process
    needed. The result is the peak, not the increase, so it includes the loaded base and experts.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._process = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.peak_mb = self._process.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def so_far_mb(self) -> float:
        """The peak up to now, while the context is still open."""
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
        return max(self.peak_mb, self._process.memory_info().rss / 2**20)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)
        if torch.cuda.is_available():
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
