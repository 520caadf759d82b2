"""The set checker on hand-built witnesses: each kind of loss or doubling it must see, and a clean run it must pass."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.emulator.store import Store as CloudStore
from gateway.model import Read, format_ts
from gateway.store import NewPassing, Store
from tests.chaos.harness.checker import (
    CloudPassing,
    JournalRow,
    LocalPassing,
    LocalSnapshot,
    SentRead,
    Truth,
    check,
    chip_key,
    cloud_from_db,
    load_truth,
    snapshot_db,
)

pytestmark = pytest.mark.chaos

S = "A" * 64
T = "B" * 64
T0 = 1_700_000_000_000


def crossing(first_id: int, chip: str, t: int, n: int = 3) -> list[JournalRow]:
    """n reads of one crossing, 300 ms apart."""
    return [
        JournalRow(first_id + i, "finish", first_id + i, chip_key(chip, None), t + 300 * i, "reader") for i in range(n)
    ]


def passing(num: int, chip: str, t: int, read_id: int, state: str = "Sent", session: str = S) -> LocalPassing:
    return LocalPassing(session, num, state, chip_key(chip, None), chip, t, read_id, "reader")


def cloud_of(*ps: LocalPassing) -> list[CloudPassing]:
    return [CloudPassing(p.token_session, p.num, p.key, p.bib, p.ts_ms) for p in ps]


def clean() -> tuple[LocalSnapshot, list[CloudPassing], Truth]:
    reads = crossing(1, "0101", T0) + crossing(4, "0102", T0 + 500)
    ps = [passing(1, "0101", T0, 1), passing(2, "0102", T0 + 500, 4)]
    local = LocalSnapshot(reads=reads, passings=ps, floors={S: 0})
    truth = Truth(reads=[SentRead(r.key, r.ts_ms, r.seq, True) for r in reads])
    return local, cloud_of(*ps), truth


def test_clean_run_passes_with_figures() -> None:
    local, cloud, truth = clean()
    report = check(local, cloud, truth, extra={"kills": 3})
    assert report.ok, report.problems()
    f = report.figures
    assert (f["reads_sent"], f["reads_acked"], f["reads_journaled"], f["passings_cloud"], f["kills"]) == (6, 6, 6, 2, 3)
    line = report.json_line()
    assert "\n" not in line and json.loads(line)["ok"] is True


def test_acknowledged_read_missing_from_journal_is_lost() -> None:
    local, cloud, truth = clean()
    truth.reads.append(SentRead(chip_key("0103", None), T0 + 9000, 99, True))
    report = check(local, cloud, truth)
    assert not report.ok and report.figures["lost_acked"] == 1, report.problems()


def test_unacknowledged_unjournaled_read_is_not_a_loss_for_an_acking_reader() -> None:
    local, cloud, truth = clean()
    truth.reads.append(SentRead(chip_key("0103", None), T0 + 9000, 99, False))  # on the wire at the kill
    assert check(local, cloud, truth).ok


def test_journaled_read_without_passing_in_cloud_is_lost() -> None:
    local, cloud, truth = clean()
    report = check(local, cloud[:1], truth)  # the cloud never got num 2, yet it is Sent locally
    f = report.figures
    assert (f["lost_reads"], f["sent_not_in_cloud"], f["missing_numbers"]) == (3, 1, 1), report.problems()


def test_passing_derived_twice_is_a_duplicate() -> None:
    local, cloud, truth = clean()
    again = passing(3, "0101", T0, 1)  # a replay after a crash derived read 1 again
    local.passings.append(again)
    report = check(local, [*cloud, *cloud_of(again)], truth)
    assert report.figures["duplicated_passings"] >= 1 and not report.ok, report.problems()


def test_two_passings_of_one_chip_inside_the_window_are_a_duplicate() -> None:
    local, cloud, truth = clean()
    again = passing(3, "0101", T0 + 600, 3)  # read 3 of the same crossing made a passing too
    local.passings.append(again)
    report = check(local, [*cloud, *cloud_of(again)], truth)
    assert report.figures["duplicated_passings"] == 1, report.problems()


def test_a_second_crossing_beyond_the_window_is_not_a_duplicate() -> None:
    local, cloud, truth = clean()
    lap = crossing(7, "0101", T0 + 3000)  # exactly one window later: a new crossing by the pipeline's rule
    local.reads.extend(lap)
    truth.reads.extend(SentRead(r.key, r.ts_ms, r.seq, True) for r in lap)
    p = passing(3, "0101", T0 + 3000, 7)
    local.passings.append(p)
    report = check(local, [*cloud, *cloud_of(p)], truth)
    assert report.ok, report.problems()


def test_read_one_window_after_its_passing_is_not_covered() -> None:
    local, cloud, truth = clean()
    late = JournalRow(7, "finish", 7, chip_key("0101", None), T0 + 3000, "reader")
    local.reads.append(late)
    truth.reads.append(SentRead(late.key, late.ts_ms, 7, True))
    report = check(local, cloud, truth)
    assert report.figures["lost_reads"] == 1, report.problems()
    assert check(local, cloud, truth, window_s=3.001).ok  # inside a slightly longer window it is


def test_gap_in_local_numbering() -> None:
    local, _, truth = clean()
    local.passings[1] = passing(3, "0102", T0 + 500, 4)
    report = check(local, cloud_of(*local.passings), truth)
    assert report.figures["local_gaps"] == 1 and report.figures["missing_numbers"] == 1, report.problems()


def test_rejected_fills_its_number_and_overlaps_if_the_cloud_has_it_too() -> None:
    local, cloud, truth = clean()
    local.passings[1] = passing(2, "0102", T0 + 500, 4, state="Rejected")
    assert check(local, cloud[:1], truth).ok
    report = check(local, cloud, truth)
    assert report.figures["overlapping_numbers"] == 1, report.problems()


def test_moved_passings_count_in_their_new_session() -> None:
    local, _, truth = clean()
    moved = passing(2, "0102", T0 + 500, 4, state="Moved")
    again = passing(1, "0102", T0 + 500, 4, session=T)
    local.passings[1] = moved
    local.passings.append(again)
    local.floors[T] = 0
    report = check(local, cloud_of(local.passings[0], again), truth)
    assert report.ok, report.problems()
    assert report.figures["sessions"] == 2 and report.figures["moved"] == 1


def test_cloud_row_differing_from_local_is_mismatched() -> None:
    local, cloud, truth = clean()
    cloud[1] = CloudPassing(S, 2, chip_key("0102", None), "999", T0 + 500)
    assert check(local, cloud, truth).figures["mismatched"] == 1


def test_cloud_number_never_allocated_is_unexpected() -> None:
    local, cloud, truth = clean()
    cloud.append(CloudPassing(S, 3, chip_key("0101", None), "0101", T0))
    report = check(local, cloud, truth)
    assert report.figures["unexpected_passings"] == 1, report.problems()


def test_foreign_session_is_reported_not_failed() -> None:
    local, cloud, truth = clean()
    cloud.append(CloudPassing(T, 1, chip_key("7", None), "7", T0))
    report = check(local, cloud, truth)
    assert report.ok and report.figures["cloud_foreign"] == 1


def test_journaled_read_the_reader_never_sent_is_unexpected() -> None:
    local, cloud, truth = clean()
    truth.reads.pop()  # e.g. a parser that shifted a timestamp by the zone offset
    assert check(local, cloud, truth).figures["unexpected_reads"] == 1


def test_same_read_journaled_twice() -> None:
    local, cloud, truth = clean()
    local.reads.append(JournalRow(50, "finish", None, chip_key("0101", None), T0, "reader"))
    assert check(local, cloud, truth).figures["journal_duplicates"] == 1


def test_pending_at_the_end_fails_unless_allowed() -> None:
    local, cloud, truth = clean()
    local.passings[1] = passing(2, "0102", T0 + 500, 4, state="Pending")
    report = check(local, cloud[:1], truth)
    assert not report.ok and report.figures["pending"] == 1
    assert check(local, cloud[:1], truth, allow_pending=True).ok
    # still Pending locally but already in the cloud (commit-then-drop, not yet re-sent): fine
    assert check(local, cloud, truth).ok


def test_integrity_and_wal_bound() -> None:
    local, cloud, truth = clean()
    local.wal_bytes = 10_000
    assert not check(local, cloud, truth, wal_limit=9_999).ok
    local.integrity = ["*** in database main ***", "Page 5 is never used"]
    report = check(local, cloud, truth)
    assert not report.ok and report.figures["integrity"].startswith("***")


def test_a_wal_that_ran_away_during_the_run_fails_even_if_sigterm_truncated_it() -> None:
    local, cloud, truth = clean()
    local.wal_bytes = 0  # what a clean SIGTERM leaves: says nothing about the run
    report = check(local, cloud, truth, wal_limit=1_000_000, wal_max=1_000_001)
    assert not report.ok and report.figures["wal_bytes_max"] == 1_000_001
    assert report.details["wal"] and "1000001" in report.details["wal"][0]
    assert check(local, cloud, truth, wal_limit=1_000_000, wal_max=1_000_000).ok


def test_load_truth_merges_files_acks_and_a_cut_line(tmp_path: Path) -> None:
    ts = [format_ts(datetime.fromtimestamp(T0 / 1000 + i, UTC)) for i in range(3)]
    a = tmp_path / "a.jsonl"
    a.write_text(
        "\n".join(
            [
                json.dumps({"type": "read", "seq": 1, "chip": "00101", "bib": "1", "timestamp": ts[0]}),
                json.dumps({"type": "read", "seq": 2, "chip": "0102", "bib": "2", "timestamp": ts[1]}),
                json.dumps({"type": "ack", "seq": 1, "chip": "00101", "bib": "1", "timestamp": ts[0]}),
                json.dumps({"type": "corrupt", "raw": "\\x00"}),
                '{"type": "read", "seq": 3, "chip"',  # the simulator was killed mid-write
            ]
        )
        + "\n"
    )
    b = tmp_path / "b.jsonl"
    b.write_text(
        "\n".join(
            [
                json.dumps({"type": "read", "seq": 2, "chip": "0102", "bib": "2", "timestamp": ts[1], "resend": True}),
                json.dumps({"type": "ack", "seq": 2, "chip": "0102", "bib": "2", "timestamp": ts[1]}),
                json.dumps({"type": "summary", "complete": True}),
            ]
        )
        + "\n"
    )
    truth = load_truth([a, b])
    assert [(r.key, r.acked) for r in truth.reads] == [("chip:101", True), ("chip:102", True)]
    assert (truth.resends, truth.corrupt, truth.files, truth.complete) == (1, 1, 2, True)
    assert not load_truth([b, a]).complete, "the last incarnation was cut short"


async def test_snapshots_of_real_databases(tmp_path: Path) -> None:
    """The loaders read what the real outbox and the real emulator store write."""
    when = datetime.fromtimestamp(T0 / 1000, UTC)
    outbox = await Store.open(tmp_path / "gw.db")
    try:
        await outbox.set_current_session(S, alias=None, deviceid=None, created_by_us=True)
        ids = await outbox.journal(
            "finish",
            [
                Read(chip="0101", bib=None, timestamp=when + timedelta(milliseconds=300 * i), seq=i + 1)
                for i in range(3)
            ],
        )
        nums = await outbox.add_passings(S, [NewPassing(timestamp=when, bib="0101", chip="0101", read_id=ids[0])])
        await outbox.mark_sent(S, nums)
        await outbox.reject_line("finish", 17, "bad", "garbage")
    finally:
        await outbox.close()
    local = snapshot_db(tmp_path / "gw.db")
    assert [p.num for p in local.passings] == [1] and len(local.reads) == 3 and local.rejected_lines == 1

    store = CloudStore(str(tmp_path / "cloud.db"))
    try:
        dev = store.bind("One4All", "SIM-1", None, None, None)
        store.db.execute("INSERT INTO sessions VALUES (?, ?, NULL, ?, NULL, 1, 1)", (S, dev, format_ts(when)))
        store.insert(S, dev, [{"num_passing": 1, "timestamp": format_ts(when), "bib": "0101", "chip": "0101"}])
    finally:
        store.close()
    cloud = cloud_from_db(tmp_path / "cloud.db")
    truth = Truth(reads=[SentRead(r.key, r.ts_ms, r.seq, True) for r in local.reads])
    report = check(local, cloud, truth)
    assert report.ok, report.problems()
    assert report.figures["passings_cloud"] == 1 and report.figures["rejected_lines"] == 1


def test_secret_leaks_names_file_and_line(tmp_path: Path) -> None:
    from tests.chaos.harness.supervisor import secret_leaks

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "daemon-001.log").write_text('{"event": "ok"}\n{"key": "ror-abc"}\n')
    (tmp_path / "clean.log").write_text("ror-ab c\n")
    (tmp_path / "db.sqlite").write_bytes(b"\x00\x01ror-abc\x00")
    assert secret_leaks(tmp_path, "ror-abc") == ["db.sqlite:1", "logs/daemon-001.log:2"]
