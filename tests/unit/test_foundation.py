from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from gateway import errors, log
from gateway.backoff import MAX_RETRY_AFTER, Backoff, Streak
from gateway.cli import cli
from gateway.model import format_ts, parse_ts, to_utc_ms


def test_format_ts_is_utc_millis_z() -> None:
    ts = datetime(2026, 5, 3, 9, 4, 5, 123987, tzinfo=timezone(timedelta(hours=2)))
    assert format_ts(ts) == "2026-05-03T07:04:05.123Z"
    assert parse_ts("2026-05-03T07:04:05.123Z") == to_utc_ms(ts)


def _format_ts_by_strftime(ts: datetime) -> str:
    """The form's definition spelled out field by field (format_ts takes a faster road to the same text)."""
    ts = ts.astimezone(UTC)
    ms = ts.microsecond // 1000
    return f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}.{ms:03d}Z"


def test_format_ts_matches_the_definition_for_any_instant_and_zone() -> None:
    rnd = random.Random(7)
    base = datetime(1, 1, 2, tzinfo=UTC)
    for _ in range(20_000):
        ts = base + timedelta(seconds=rnd.randrange(0, 315_537_000_000), microseconds=rnd.randrange(10**6))
        if rnd.random() < 0.3:
            ts = ts.replace(microsecond=rnd.randrange(1000) * 1000 if rnd.random() < 0.5 else 0)
        if rnd.random() < 0.3 and 1 < ts.year < 9999:
            ts = ts.astimezone(timezone(timedelta(minutes=rnd.randrange(-900, 900))))
        assert format_ts(ts) == _format_ts_by_strftime(ts), ts
        assert to_utc_ms(ts) == parse_ts(format_ts(ts))


@pytest.mark.parametrize("bad", ["2026-05-03T07:04:05Z", "2026-05-03 07:04:05.123Z", "2026-05-03T07:04:05.123+00:00"])
def test_parse_ts_is_strict(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_ts(bad)


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError):
        format_ts(datetime(2026, 1, 1))


def test_error_tree_lets_callers_catch_broadly() -> None:
    assert issubclass(errors.SessionClosedError, errors.NotFoundError)
    for cls in (errors.AuthError, errors.RetryableError, errors.BadRequestError, errors.PayloadTooLargeError):
        assert issubclass(cls, errors.CloudError)
        assert issubclass(cls, errors.GatewayError)
    e = errors.RetryableError("503 from cloud", status=503, retry_after=2.0)
    assert e.retry_after == 2.0 and e.status == 503


def test_backoff_full_jitter_is_capped_and_honours_retry_after() -> None:
    b = Backoff(base=1.0, cap=4.0)
    delays = [b.next_delay() for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(delays) > 1.0  # it does grow
    assert b.next_delay(retry_after=7.0) >= 7.0
    b.reset()
    assert b.attempts == 0


@pytest.fixture
def seeded() -> Iterator[None]:
    """The jitter comes from the process-wide `random` (tenacity's): seed it, and put it back afterwards."""
    state = random.getstate()
    random.seed(20261122)
    yield
    random.setstate(state)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 12, 40])
def test_backoff_is_full_jitter_over_the_whole_window(attempt: int) -> None:
    """The n-th delay of a streak (n from 1) is uniform(0, min(cap, base * 2**(n-1))): the first retry waits at
    most `base`, each later window doubles until the cap. Full jitter, not a fixed or half-jittered wait."""
    base, cap = 0.5, 10.0
    bound = min(cap, base * 2 ** (attempt - 1))
    b = Backoff(base=base, cap=cap)
    samples = []
    for _ in range(300):
        b.attempts = attempt - 1  # the next call is the attempt-th of its streak
        samples.append(b.next_delay())
        assert b.attempts == attempt
    assert all(0 <= d <= bound for d in samples), (bound, max(samples))
    assert len(set(samples)) > 250  # they vary
    assert sum(d < bound / 2 for d in samples) > 100  # the bottom half of the window is used...
    assert sum(d > bound / 2 for d in samples) > 100  # ...and so is the top half, up to the bound
    assert max(samples) > 0.95 * bound and min(samples) < 0.05 * bound


@pytest.mark.usefixtures("seeded")
def test_backoff_streak_grows_to_the_cap_and_starts_again_after_reset() -> None:
    b = Backoff(base=0.1, cap=1.0)
    delays = [b.next_delay() for _ in range(200)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert all(d <= 0.1 * 2**i for i, d in enumerate(delays[:4]))  # 0.1, 0.2, 0.4, 0.8
    assert max(delays[10:]) > 0.9  # long after the cap is reached the window is the whole cap
    b.reset()
    assert b.attempts == 0
    after_reset = []
    for _ in range(50):
        b.reset()
        after_reset.append(b.next_delay())
    assert all(d <= 0.1 for d in after_reset) and b.attempts == 1  # back to the first window, every time
    # Retry-After is a floor over the jitter, itself capped: a server cannot park us for hours
    assert b.next_delay(retry_after=3.0) >= 3.0
    assert b.next_delay(retry_after=10 * MAX_RETRY_AFTER) == MAX_RETRY_AFTER


def test_streak_warns_once_then_reports_recovery() -> None:
    buf = io.StringIO()
    log.configure("debug", stream=buf, json=True)
    s = Streak("cloud upload", log.get_logger("t"))
    s.failed("timeout")
    s.failed("timeout")
    s.failed("timeout")
    assert s.succeeded() is not None
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [x["level"] for x in lines] == ["warning", "debug", "debug", "info"]
    assert "outage_s" in lines[-1]


def test_registered_secret_never_reaches_a_log_line() -> None:
    buf = io.StringIO()
    log.configure("debug", stream=buf, json=True)
    secret = "ror-0123456789abcdef0123"
    log.register_secret(secret)
    lg = log.get_logger("t")
    lg.info("calling", url=f"https://x/v0?k={secret}", api_key=secret, headers={"api_key": secret})
    try:
        raise RuntimeError(f"boom with {secret}")
    except RuntimeError:
        lg.exception("failed")
    out = buf.getvalue()
    assert secret not in out
    assert "***" in out


def test_cli_help_and_version() -> None:
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "0.1.0" in r.output
    assert CliRunner().invoke(cli, ["--help"]).exit_code == 0


def test_reads_hand_written_init_takes_exactly_its_fields_and_stays_frozen() -> None:
    import dataclasses
    import inspect

    from gateway.model import Read

    params = list(inspect.signature(Read.__init__).parameters.values())[1:]
    fields = dataclasses.fields(Read)
    assert [p.name for p in params] == [f.name for f in fields]
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in fields
    ]
    ts = datetime(2026, 5, 3, 9, 0, tzinfo=UTC)
    values = {f.name: f"v{i}" for i, f in enumerate(fields)} | {"timestamp": ts}
    read = Read(**values)  # type: ignore[arg-type]
    assert {f.name: getattr(read, f.name) for f in fields} == values  # each argument lands in its own field
    assert dataclasses.replace(read, seq=7).seq == 7 and read.seq == "v6"
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.chip = "other"  # type: ignore[misc]
