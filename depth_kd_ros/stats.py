"""Frame counters and timings behind /diagnostics. Plain Python, shared by the callback and worker threads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class StatsReport:
    """What happened since the previous report (rates, means) and since start (counts)."""

    input_rate_hz: float
    output_rate_hz: float
    inference_ms_mean: float
    latency_ms_mean: float
    frames_in: int
    frames_out: int
    dropped: int
    bad_inputs: dict[str, int] = field(default_factory=dict)
    new_bad_inputs: int = 0
    stage_ms_mean: dict[str, float] = field(default_factory=dict)  # where a frame's time goes, in order
    last_bad_input: str = ""  # the latest problem, as logged (the log itself is throttled)


class FrameStats:
    """Thread-safe counters; `report()` closes one measurement window."""

    def __init__(self, clock=time.monotonic, wall_clock=time.time) -> None:
        self._clock, self._wall_clock = clock, wall_clock
        self._lock = threading.Lock()
        self.frames_in = self.frames_out = self.dropped = 0
        self.bad_inputs: Counter[str] = Counter()
        self._window_start = clock()
        self._window_in = self._window_out = self._window_bad = 0
        self._last_bad_input = ""
        self._latency_s: list[float] = []
        self._stage_s: dict[str, list[float]] = {}

    def frame_in(self) -> None:
        with self._lock:
            self.frames_in += 1
            self._window_in += 1

    def stages(self, seconds: dict[str, float]) -> None:
        """One frame's time per stage (arrival, decode, inference, publish...), in the order they ran; the
        "inference" stage is also reported on its own."""
        with self._lock:
            for name, value in seconds.items():
                self._stage_s.setdefault(name, []).append(value)

    def frame_out(self, stamp) -> None:
        """`stamp` is the input header's builtin_interfaces/Time: latency = now - capture time."""
        latency = self._wall_clock() - (stamp.sec + stamp.nanosec * 1e-9)
        with self._lock:
            self.frames_out += 1
            self._window_out += 1
            self._latency_s.append(latency)

    def bad_input(self, kind: str, description: str = "") -> None:
        with self._lock:
            self.bad_inputs[kind] += 1
            self._window_bad += 1
            self._last_bad_input = description or self._last_bad_input

    def report(self) -> StatsReport:
        with self._lock:
            now = self._clock()
            span = max(now - self._window_start, 1e-9)
            report = StatsReport(
                input_rate_hz=self._window_in / span,
                output_rate_hz=self._window_out / span,
                inference_ms_mean=1e3 * _mean(self._stage_s.get("inference", [])),
                latency_ms_mean=1e3 * _mean(self._latency_s),
                frames_in=self.frames_in,
                frames_out=self.frames_out,
                dropped=self.dropped,
                bad_inputs=dict(self.bad_inputs),
                new_bad_inputs=self._window_bad,
                stage_ms_mean={name: 1e3 * _mean(values) for name, values in self._stage_s.items()},
                last_bad_input=self._last_bad_input,
            )
            self._window_start = now
            self._window_in = self._window_out = self._window_bad = 0
            self._latency_s.clear()
            self._stage_s.clear()
            return report

    def drop(self) -> None:
        with self._lock:
            self.dropped += 1


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
