"""Whatever Passing the gateway builds, the item the client sends fits the contract's schema (checked
by the page-derived validator) and the emulator's strict validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cloud.client import passing_payload
from gateway.emulator.validate import check_passing
from gateway.model import Passing
from tests.integration.cloud.passing_schema import passing_problems

zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
texts = st.none() | st.text(max_size=12)
coords = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-180, 180)

passings = st.builds(
    Passing,
    timestamp=st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=zones),
    num_passing=st.integers(0, 2**31),
    bib=st.text(max_size=8),
    chip=texts, participant_id=texts, status=texts, timezone=texts, gender=texts,
    latitude=coords, longitude=coords,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(passings)
def test_every_payload_fits_the_contract(p: Passing) -> None:
    item = json.loads(json.dumps(passing_payload(p), allow_nan=False))  # what goes on the wire
    assert passing_problems(item) == []
    check_passing(item, "item")  # raises if the emulator would refuse it
    assert item["num_passing"] == p.num_passing and item["bib"] == p.bib
    assert datetime.strptime(item["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) == p.timestamp.replace(
        microsecond=p.timestamp.microsecond // 1000 * 1000
    )
