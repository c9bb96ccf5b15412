"""Part of a recording, chosen on the command line by a suffix on the data path (no copy of the bag).

* ``BAG#frames=A:B``  -- image messages A..B-1 of the image topic (0-based, in receive order, counted before
  ``stride``); either end may be empty (``#frames=100:``, ``#frames=:50``).
* ``BAG#time=T0:T1``  -- frames whose stamp is T0 <= t < T1 seconds after the first image message's stamp;
  either end may be empty.

Both are half-open, so adjacent selections (``#frames=0:100`` and ``#frames=100:200``) never share a frame,
and ``stride`` counts from the bag's first image message, so together they keep exactly the frames the
whole bag would. Frame keys (teacher cache) do not depend on the selection. Image folders take ``#frames``
(files in name order) but not ``#time``. Malformed specs raise :class:`~depth_kd.config.ConfigError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from depth_kd.config import ConfigError

__all__ = ["Selection", "parse_data_spec", "strip_data_spec"]

_SUFFIX = re.compile(r"^([A-Za-z_]+)=(.*)$")
_KINDS = ("frames", "time")


@dataclass(frozen=True)
class Selection:
    """A half-open range of image messages (``kind="frames"``) or of seconds (``kind="time"``); None = open."""

    kind: str
    start: float | None = None
    stop: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"unknown selection {self.kind!r}; use #frames=A:B or #time=T0:T1")
        for value in (self.start, self.stop):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ConfigError(f"selection {self.spec()}: bounds must be finite and >= 0")
        if self.start is not None and self.stop is not None and self.start >= self.stop:
            raise ConfigError(f"selection {self.spec()}: empty range, the start must be below the end")

    def spec(self) -> str:
        """The suffix that selects this range, e.g. ``"#frames=10:20"``."""
        return f"#{self.kind}={_fmt(self.start)}:{_fmt(self.stop)}"

    def keeps_position(self, position: int) -> bool:
        """Whether the ``position``-th image message of the topic is inside a ``frames`` range (else True)."""
        return self.kind != "frames" or _inside(position, self.start, self.stop)

    def keeps_time(self, offset_ns: int) -> bool:
        """Whether a stamp ``offset_ns`` after the first image's is inside a ``time`` range (else True)."""
        if self.kind != "time":
            return True
        start = None if self.start is None else round(self.start * 1e9)
        stop = None if self.stop is None else round(self.stop * 1e9)
        return _inside(offset_ns, start, stop)


def _inside(value: float, start: float | None, stop: float | None) -> bool:
    return (start is None or value >= start) and (stop is None or value < stop)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _bound(text: str, kind: str, spec: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text) if kind == "frames" else float(text)
    except ValueError:
        want = "a whole number of image messages" if kind == "frames" else "seconds"
        raise ConfigError(f"{spec!r}: {text!r} is not {want}") from None


def parse_data_spec(text: str) -> tuple[str, Selection | None]:
    """``"run.mcap#frames=0:100"`` -> ``("run.mcap", Selection("frames", 0, 100))``; no suffix -> (text, None).

    A ``#`` whose tail does not look like ``key=value`` is part of the path. Raises ConfigError for an unknown
    key, a bound that is not a number, a negative bound, a missing ``:`` or a range whose start is not below
    its end.
    """
    path, sep, tail = text.rpartition("#")
    match = _SUFFIX.match(tail) if sep else None
    if match is None:
        return text, None
    kind, bounds = match.groups()
    if kind not in _KINDS:
        raise ConfigError(f"{text!r}: unknown selection {kind!r}; use PATH#frames=A:B or PATH#time=T0:T1")
    if not path:
        raise ConfigError(f"{text!r}: the selection has no path before '#'")
    start, colon, stop = bounds.partition(":")
    if not colon or ":" in stop:
        raise ConfigError(f"{text!r}: expected #{kind}=START:END (either end may be empty)")
    first, last = _bound(start, kind, text), _bound(stop, kind, text)
    try:
        return path, Selection(kind, first, last)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def strip_data_spec(text: str) -> str:
    """The path part of a data spec (checked by :func:`parse_data_spec`)."""
    return parse_data_spec(text)[0]
