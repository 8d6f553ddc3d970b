"""Business days: the cut-over that closes a day in one step, and what a closed day holds.

A business day is named by the calendar date (in the configured time zone) on which it
starts, at the configured cut-over time: with a cut-over at 04:00 in Europe/Oslo, day
``20261122`` runs from 2026-11-22 04:00 to 2026-11-23 04:00 local time, so a sale at 01:30
belongs to the day before, as a store's till expects.

Every journal transfer belongs to exactly one business day: the day that was open when it
committed. The ledger keeps one :class:`~authsrv.model.BusinessDay` per day, holding the range of
journal sequence numbers it took. The cut-over runs inside a write transaction, the single
writer's or an operator's, so no transfer can commit "between" two days. The day that was open
gets its last sequence number and the closing balances of every non-card account. Days skipped
while the host was down are recorded closed and empty, so every date has a clearing file. The
next day opens. A closed day never changes: the journal is append-only, and its range is
fixed.

When the cut-over happens:

- automatically, in the writer (:class:`CutoverTimer`): the first batch or sweep at or after
  the start of the next day closes the open one. A transfer committed at or after that moment
  is in the new day, give or take the time a batch waits for the write lock.
- by hand (``authsrv settle cutover``): closes the open day at once. The next day then opens
  early, and closes at its own cut-over time. A second manual cut-over before the calendar has
  caught up is refused, so days never run ahead by more than one.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from authsrv.model import BusinessDay
from authsrv.store import Ledger

__all__ = [
    "DayClock",
    "DayError",
    "DayIndex",
    "close_open_day",
    "cutover_due",
    "next_day",
    "parse_cutover_time",
    "parse_timezone",
]

MS = 1000
DAYS_SKIPPED_MAX = 3660  # empty days recorded in one cut-over (ten years of a stopped host)
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])", re.ASCII)
_DAY = re.compile(r"[0-9]{8}", re.ASCII)


class DayError(Exception):
    """A cut-over or a day that cannot be done or found as asked; the text says why."""


def parse_cutover_time(text: str) -> dtime:
    """``HH:MM`` (24-hour clock) as a time of day.

    >>> parse_cutover_time("04:30")
    datetime.time(4, 30)
    """
    m = _HHMM.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a time HH:MM (24-hour clock), e.g. 00:00 or 04:30")
    return dtime(int(m.group(1)), int(m.group(2)))


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not an IANA time zone name, e.g. UTC or Europe/Oslo"
        ) from None


def parse_day(text: str) -> date:
    """A business day's name ``YYYYMMDD`` (a real calendar date)."""
    try:
        if not _DAY.fullmatch(text):
            raise ValueError
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise DayError(f"{text!r} is not a business day YYYYMMDD, e.g. 20261122") from None


def next_day(day: str) -> str:
    """
    >>> next_day("20261231")
    '20270101'
    """
    return (parse_day(day) + timedelta(days=1)).strftime("%Y%m%d")


@dataclass(frozen=True, slots=True)
class DayClock:
    """Where business days start: the cut-over time of day in a time zone."""

    cutover: dtime
    tz: ZoneInfo

    @classmethod
    def of(cls, cutover_time: str, timezone: str) -> DayClock:
        return cls(parse_cutover_time(cutover_time), parse_timezone(timezone))

    def day_of(self, at_ms: int) -> str:
        """The business day that the calendar says ``at_ms`` falls in.

        >>> DayClock.of("04:00", "UTC").day_of(1795401000000)  # 2026-11-22 01:10 UTC
        '20261121'
        """
        local = datetime.fromtimestamp(at_ms / MS, tz=self.tz)
        d = local.date()
        if local.time() < self.cutover:
            d -= timedelta(days=1)
        return d.strftime("%Y%m%d")

    def start_ms(self, day: str) -> int:
        """When ``day`` starts: its date at the cut-over time, local (a time that a clock
        change skips is taken as the same wall time after the change)."""
        start = datetime.combine(parse_day(day), self.cutover, tzinfo=self.tz)
        return int(start.astimezone(UTC).timestamp() * MS)


def _open(day: str, first_seq: int, now_ms: int) -> BusinessDay:
    return BusinessDay(day=day, opened_ms=now_ms, first_seq=first_seq)


def current_open_day(led: Ledger, clock: DayClock, now_ms: int) -> BusinessDay:
    """The open day; the first one is opened here (it takes every transfer so far)."""
    day = led.open_day()
    if day is not None:
        return day
    days = led.days()
    first_seq = days[-1].last_seq + 1 if days else 1
    day = _open(clock.day_of(now_ms), first_seq, now_ms)
    led.put_day(day)
    return day


def cutover_due(led: Ledger, clock: DayClock, now_ms: int) -> tuple[bool, int]:
    """Whether the open day should close now, and when the open day (after any close) ends."""
    day = current_open_day(led, clock, now_ms)
    ends_ms = clock.start_ms(next_day(day.day))
    return now_ms >= ends_ms, ends_ms


def close_open_day(
    led: Ledger, clock: DayClock, now_ms: int, *, how: str
) -> tuple[list[BusinessDay], BusinessDay]:
    """Close the open day (and record the days skipped since as closed and empty) inside the
    caller's write transaction; returns (the days closed, oldest first; the day now open).

    ``how`` is ``"auto"`` (the host at the cut-over time: refused before it) or ``"manual"``
    (at once; refused when the open day is already ahead of the calendar).

    Error handling: :class:`DayError` when the cut-over is refused; nothing is written then.
    """
    assert how in ("auto", "manual"), how
    day = current_open_day(led, clock, now_ms)
    calendar = clock.day_of(now_ms)
    following = next_day(day.day)
    if how == "auto" and now_ms < clock.start_ms(following):
        raise DayError(f"business day {day.day} is open until its cut-over")
    if how == "manual" and day.day > calendar:
        raise DayError(
            f"business day {day.day} opened early (a manual cut-over) and runs until "
            f"{_local(clock, clock.start_ms(following))}; a second cut-over before then would "
            "run days ahead of the calendar"
        )
    last_seq = led.last_transfer_seq()
    balances = led.non_card_balances()
    file_seq = _last_file_seq(led) + 1
    closed = [
        msgspec.structs.replace(
            day,
            closed_ms=now_ms,
            last_seq=last_seq,
            balances=balances,
            how=how,
            file_seq=file_seq,
        )
    ]
    new_day = max(following, calendar)
    skipped = following
    while skipped < new_day:
        if len(closed) > DAYS_SKIPPED_MAX:
            raise DayError(
                f"the open day {day.day} is more than {DAYS_SKIPPED_MAX} days old; "
                "check the host's clock and the settlement time zone"
            )
        file_seq += 1
        closed.append(
            BusinessDay(
                day=skipped,
                opened_ms=now_ms,
                first_seq=last_seq + 1,
                closed_ms=now_ms,
                last_seq=last_seq,
                balances=balances,
                how="empty",
                file_seq=file_seq,
            )
        )
        skipped = next_day(skipped)
    for record in closed:
        led.put_day(record)
    opened = _open(new_day, last_seq + 1, now_ms)
    led.put_day(opened)
    return closed, opened


def _last_file_seq(led: Ledger) -> int:
    days = led.days()
    for d in reversed(days):
        if d.closed:
            return d.file_seq
    return 0


def _local(clock: DayClock, at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / MS, tz=clock.tz).strftime("%Y-%m-%d %H:%M %Z")


class DayIndex:
    """Which business day a journal sequence number belongs to (all days, read once)."""

    def __init__(self, days: list[BusinessDay]) -> None:
        self.days = days
        self._firsts = [d.first_seq for d in days]
        self._by_name = {d.day: d for d in days}

    def get(self, day: str) -> BusinessDay | None:
        return self._by_name.get(day)

    def day_of_seq(self, seq: int) -> str:
        """The day whose range holds ``seq`` (the open day for the newest transfers)."""
        # Empty days share their first_seq with the day after them: the last day starting at
        # or before ``seq`` is the one that can hold it.
        i = bisect.bisect_right(self._firsts, seq) - 1
        if i < 0 or (self.days[i].closed and self.days[i].last_seq < seq):
            raise DayError(f"transfer {seq} is in no business day")
        return self.days[i].day

    def previous_closed(self, day: str) -> BusinessDay | None:
        """The closed day before ``day`` (whose closing balances ``day`` opened with)."""
        earlier = [d for d in self.days if d.day < day and d.closed]
        return earlier[-1] if earlier else None
