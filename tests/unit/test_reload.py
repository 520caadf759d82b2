"""What a SIGHUP can apply to a running daemon, and what it names as needing a restart."""

from __future__ import annotations

import dataclasses

from gateway import config
from gateway.service import restart_needed

BASE = config.Settings(
    readers=(config.ReaderSettings(name="finish", url="tcp-listen://0.0.0.0:3097"),),
    device=config.DeviceSettings(serial_number="SN-1", model="One4All"),
)


def test_live_keys_need_no_restart() -> None:
    new = dataclasses.replace(
        BASE,
        cloud=dataclasses.replace(BASE.cloud, api_key="ror-0123456789abcdef0123", batch_size=7, base_url="http://x/v0"),
        session=dataclasses.replace(BASE.session, follow_active_session=True, timezone="UTC"),
    )
    assert restart_needed(BASE, new, cloud_started=True) == []


def test_links_database_listeners_and_log_need_a_restart() -> None:
    new = dataclasses.replace(
        BASE,
        readers=(config.ReaderSettings(name="finish", url="tcp-listen://0.0.0.0:4000"),),
        outbox=config.OutboxSettings(path="/elsewhere.db"),
        status=config.StatusSettings(listen="0.0.0.0:9"),
        log_level="debug",
    )
    assert restart_needed(BASE, new, cloud_started=False) == [
        "[[reader]]",
        "[outbox] path",
        "[status] listen",
        "[log] level",
    ]


def test_identity_needs_a_restart_only_once_the_cloud_side_has_resolved_it() -> None:
    new = dataclasses.replace(
        BASE,
        device=dataclasses.replace(BASE.device, serial_number="SN-2"),
        session=dataclasses.replace(BASE.session, alias="wave 2"),
    )
    assert restart_needed(BASE, new, cloud_started=False) == []  # no key yet: used when the key arrives
    assert restart_needed(BASE, new, cloud_started=True) == ["[device] serial_number", "[session] alias"]


async def test_guard_keys_apply_at_once() -> None:
    from gateway.guards import ClockGuard, ClockSync
    from gateway.service import Gateway

    new = dataclasses.replace(
        BASE,
        clock=config.ClockSettings(hold_uploads_until_synced=True, max_skew_s=0.5),
        outbox=dataclasses.replace(BASE.outbox, min_free_mb=10.0),
    )
    assert restart_needed(BASE, new, cloud_started=True) == []
    gw = Gateway(BASE, clock=ClockGuard(probe=lambda: ClockSync(False, "test")))
    gw._check_guards()
    assert gw.clock.hold_reason is None
    await gw._apply(new)
    assert gw.clock.hold_reason is not None and gw.clock.max_skew_s == 0.5
    assert gw.disk.status.min_free_mb == 10.0 and gw.settings.outbox.min_free_mb == 10.0
