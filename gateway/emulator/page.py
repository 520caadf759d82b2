"""The read-only HTML page at `/` of the emulator's API port: devices, their sessions, their passings.
Everything shown came from a client, so everything is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from gateway.emulator.store import Store

MAX_ROWS = 500  # per session, so a long race does not make a page of megabytes


def _e(value: Any) -> str:
    return "" if value is None else escape(str(value), quote=True)


def render_page(store: Store, dialect: str) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>RUFUS Cloud emulator</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}th{background:#eee}"
        "code{font-size:85%}</style></head><body>",
        f"<h1>RUFUS Cloud emulator</h1><p>dialect: {_e(dialect)} · read-only view</p>",
    ]
    devices = store.all_devices()
    sessions = store.all_sessions()
    if not devices:
        parts.append("<p>No devices bound.</p>")
    for d in devices:
        parts.append(
            f"<h2>Device {_e(d['alias'] or d['model'])} <small><code>{_e(d['deviceid'])}</code></small></h2>"
            f"<p>model {_e(d['model'])}, serial {_e(d['serial_number'])}, firmware {_e(d['firmware'])}, "
            f"bound {_e(d['creation_date'])}, last seen {_e(d['last_seen'])}, "
            f"{_e(d['sessions'])} sessions, {_e(d['passings'])} passings</p>"
        )
        for s in (s for s in sessions if s["deviceid"] == d["deviceid"]):
            rows = store.passings_of(s["token_session"], MAX_ROWS + 1)
            state = "active" if s["active"] else "closed"
            parts.append(
                f"<h3>Session {_e(s['alias'])} ({state}) <small><code>{_e(s['token_session'])}</code></small></h3>"
            )
            if not rows:
                parts.append("<p>No passings.</p>")
                continue
            parts.append(
                "<table><tr><th>num</th><th>timestamp</th><th>bib</th><th>chip</th><th>participant</th>"
                "<th>status</th><th>tz</th><th>gender</th><th>lat</th><th>lon</th></tr>"
            )
            for p in rows[:MAX_ROWS]:
                cells = "".join(
                    f"<td>{_e(p[k])}</td>"
                    for k in ("num_passing", "timestamp", "bib", "chip", "participant_id", "status", "timezone",
                              "gender", "latitude", "longitude")
                )  # fmt: skip
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</table>")
            if len(rows) > MAX_ROWS:
                parts.append(f"<p>… only the first {MAX_ROWS} passings are shown.</p>")
    parts.append("</body></html>")
    return "".join(parts)
