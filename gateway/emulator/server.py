"""The RUFUS Cloud emulator: the twelve v0 endpoints over aiohttp, either dialect, strict validation,
its own SQLite, and faults that can be switched at run time from a separate admin port.

The API listener is an asyncio server we own (not an aiohttp site) so that `set_offline` can stop
listening synchronously and listen again on the same port: a client then sees a refused connection,
exactly as when a 4G link or the cloud is down."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import math
import random
import secrets
import socket
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from gateway.aio import wait_event
from gateway.emulator.config import ApiKey, EmulatorConfig, Faults, demo_key
from gateway.emulator.page import render_page
from gateway.emulator.store import PAGE, Store
from gateway.emulator.validate import (
    BIND_FIELDS,
    BIND_FIELDS_TYPE_REQUIRED,
    SESSION_FIELDS,
    Invalid,
    check_object,
    check_passings_body,
    query_int,
    query_ts,
)
from gateway.log import get_logger, register_secret

_log = get_logger("gateway.emulator")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_WRITES = {"POST", "PATCH", "DELETE"}
# Every route of the admin port and the Emulator method serving it; each is behind the token (_admin_guard).
ADMIN_HANDLERS: dict[tuple[str, str], str] = {
    ("GET", "/state"): "_admin_state",
    ("GET", "/faults"): "_admin_get_faults",
    ("POST", "/faults"): "_admin_set_faults",
    ("POST", "/reset"): "_admin_reset",
}
ADMIN_ROUTES: tuple[tuple[str, str], ...] = tuple(ADMIN_HANDLERS)


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.keys: list[ApiKey] = list(self.config.api_keys) or [demo_key()]
        self.generated_key = not self.config.api_keys
        self.admin_token = self.config.admin_token or secrets.token_urlsafe(18)
        self.generated_admin_token = self.config.admin_token is None
        # In a rehearsal the emulator's key is the gateway's real key: no log line of either may show it.
        for secret in (*(k.key for k in self.keys), self.admin_token):
            register_secret(secret)
        self.dialect = self.config.dialect
        self.faults = self.config.faults
        self._rng = random.Random(self.config.seed)
        self.store: Store | None = None
        self.api_port = 0
        self.admin_port = 0
        # plain counters and logs the admin endpoint and tests read
        self.counts: Counter[str] = Counter()
        # the same inserted/duplicate/rejected, per session the store holds (see state())
        self.session_counts: dict[str, Counter[str]] = {}
        self.faults_fired: Counter[str] = Counter()
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.config.max_logged_requests)
        self._runner: web.AppRunner | None = None
        self._admin_runner: web.AppRunner | None = None
        self._api_server: asyncio.Server | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._pending_sock: socket.socket | None = None  # bound for _relisten, not yet handed to a server
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"Emulator(base_url={self.base_url!r}, dialect={self.dialect!r}, faults={self.faults!r})"

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def base_url(self) -> str:
        return f"http://{self._url_host()}:{self.api_port}/v0"

    @property
    def page_url(self) -> str:
        return f"http://{self._url_host()}:{self.api_port}/"

    @property
    def admin_url(self) -> str:
        return f"http://{self._url_host()}:{self.admin_port}"

    @property
    def api_key(self) -> str:
        """The first configured key (the generated demo key when none was configured)."""
        return self.keys[0].key

    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        self.store = Store(self.config.db)
        try:
            app = web.Application(middlewares=[self._middleware], client_max_size=self.config.max_body_bytes)
            self._routes(app)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
            await self._runner.setup()
            sock = self._listen(self.config.port)
            self.api_port = sock.getsockname()[1]
            if not self.faults.offline:
                await self._serve(sock)
            else:
                sock.close()
            # The token is checked once, in front of the router, so a route added later cannot forget it and an
            # unknown path tells a stranger nothing (401, not 404).
            admin = web.Application(middlewares=[self._admin_guard])
            for (method, path), name in ADMIN_HANDLERS.items():
                admin.router.add_route(method, path, getattr(self, name))
            self._admin_runner = web.AppRunner(admin, access_log=None, shutdown_timeout=2.0)
            await self._admin_runner.setup()
            site = web.TCPSite(self._admin_runner, self.host, self.config.admin_port)
            await site.start()
            self.admin_port = self._admin_runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise
        _log.info("emulator_started", base_url=self.base_url, admin_url=self.admin_url, dialect=self.dialect)

    async def stop(self) -> None:
        self._stopping.set()  # wakes held ("hang") requests so shutdown is prompt
        task = self._relisten
        self._stop_listening()
        if task is not None:
            await asyncio.wait({task})
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._admin_runner is not None:
            admin, self._admin_runner = self._admin_runner, None
            await admin.cleanup()
        if self.store is not None:
            store, self.store = self.store, None
            store.close()

    def _listen(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, port), family=family, backlog=128)
        sock.setblocking(False)
        return sock

    async def _serve(self, sock: socket.socket) -> None:
        assert self._runner is not None and self._runner.server is not None
        loop = asyncio.get_running_loop()
        try:
            # With a given socket and start_serving=False, create_server never suspends, and neither does
            # the synchronous part of start_serving: from this task's first step to the listener serving
            # nothing else runs, so set_offline sees either the pending socket (and cancels this task
            # before it starts) or the serving server (and closes it), never a listener in between.
            server = await loop.create_server(self._runner.server, sock=sock, start_serving=False)
        except BaseException:
            sock.close()
            if self._pending_sock is sock:  # nothing listens after all: say so
                self._pending_sock = None
                self.faults = self.faults.replace(offline=True)
            raise
        if self._pending_sock is sock:
            self._pending_sock = None
        self._api_server = server
        await server.start_serving()

    # -- run-time control ------------------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        """Change faults (string or typed values); `offline` switches the API listener. Returns the new set."""
        wanted = self.faults.replace(**changes)  # validates everything before anything changes
        if "offline" in changes:
            # Switched first: going online binds the port, and if that fails (OSError) nothing has changed.
            self.set_offline(wanted.offline)
        self.faults = dataclasses.replace(wanted, offline=self.faults.offline)
        return self.faults

    def set_offline(self, offline: bool) -> None:
        """Stop listening on the API port (connections refused, open ones cut) or listen again on the same port."""
        listening = self._api_server is not None or self._pending_sock is not None
        if offline != listening or self.store is None:  # already as asked, or not started (start reads the flag)
            self.faults = self.faults.replace(offline=offline)
            return
        if offline:
            self._stop_listening()
            self.faults = self.faults.replace(offline=True)
            self.faults_fired["offline"] += 1
            _log.info("emulator_offline", port=self.api_port)
        else:
            # Bound and listening before we return, so a connect succeeds (queued) from now on; the
            # task only hands the socket to the HTTP server.
            try:
                sock = self._listen(self.api_port)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot listen on {self.host}:{self.api_port} again ({exc.strerror}); still offline"
                ) from None
            self._pending_sock = sock
            self.faults = self.faults.replace(offline=False)
            self._relisten = asyncio.get_running_loop().create_task(self._serve(sock))
            self._relisten.add_done_callback(self._relistened)
            _log.info("emulator_online", port=self.api_port)

    def _stop_listening(self) -> None:
        """Close whatever listens or is about to: a relisten task that has not run yet is cancelled (its
        coroutine then never starts, so its socket is closed here), a serving listener is closed."""
        task, self._relisten = self._relisten, None
        if task is not None and not task.done():
            task.cancel()
        if self._pending_sock is not None:
            sock, self._pending_sock = self._pending_sock, None
            sock.close()  # new connects are refused; any queued in its backlog are reset
        if self._api_server is not None:
            server, self._api_server = self._api_server, None
            server.close()  # closes the listening socket now; new connects are refused
        if self._runner is not None and self._runner.server is not None:
            for conn in self._runner.server.connections:
                conn.force_close()

    def _relistened(self, task: asyncio.Task[None]) -> None:
        if self._relisten is task:
            self._relisten = None
        if not task.cancelled() and task.exception() is not None:
            _log.error("emulator_relisten_failed", port=self.api_port, error=str(task.exception()))

    async def wait_online(self) -> None:
        """Until a pending switch back online is serving (or was undone by going offline again)."""
        if self._relisten is not None:
            await asyncio.wait({self._relisten})

    def reset(self) -> None:
        """Forget every device, session, passing, count and logged request (faults stay)."""
        assert self.store is not None
        self.store.reset()
        self.counts.clear()
        self.session_counts.clear()
        self.faults_fired.clear()
        self.requests.clear()

    def state(self) -> dict[str, Any]:
        """What the admin GET /state reports. counts: `requests` every API request seen; `inserted` and
        `duplicate` as answered to POST /passings; `rejected` the passings of every POST /passings the API
        answered 4xx (invalid, reject_bib, over 5000, session not found or closed, key refused), so that
        inserted + duplicate + rejected = every passing the API answered for. Not in any of the three: passings
        of a request answered by an injected fault (see faults_fired) or whose body was too large to read.
        sessions[token]["counts"] are the same three for the requests naming that session; a request naming no
        session the store holds (unknown, unbound, not a string) is only in the global counts. Like those,
        they live in memory: a restart on the same --db starts them at 0."""
        store = self._db()
        sessions = {}
        for row in store.all_sessions():
            token = row["token_session"]
            held = self.session_counts.get(token, Counter())
            sessions[token] = {
                "deviceid": row["deviceid"],
                "alias": row["alias"],
                "active": bool(row["active"]),
                "num_passings": store.num_passings(token),
                "counts": {k: held[k] for k in ("inserted", "duplicate", "rejected")},
            }
        return {
            "dialect": self.dialect,
            "bind_requires_type": self.config.bind_requires_type,
            "base_url": self.base_url,
            "devices": [
                {k: d[k] for k in ("deviceid", "model", "serial_number", "alias", "sessions", "passings")}
                for d in store.all_devices()
            ],
            "sessions": sessions,
            "counts": {k: self.counts[k] for k in ("requests", "inserted", "duplicate", "rejected")},
            "requests": list(self.requests),
            "faults": self.faults.as_dict(),
            "faults_fired": dict(self.faults_fired),
        }

    # -- HTTP plumbing ---------------------------------------------------------------------------------

    def _db(self) -> Store:
        if self.store is None:
            raise RuntimeError("emulator is not started")
        return self.store

    def _reply(self, status: int, obj: dict[str, Any] | None, headers: dict[str, str] | None = None) -> web.Response:
        if self.dialect == "enveloped":
            payload: Any = {"body": None if status == 500 else obj}
        else:
            payload = obj if obj is not None else {"description": "Internal server error"}
        return web.json_response(payload, status=status, headers=headers)

    def _error(self, status: int, description: str, **extra: str) -> web.Response:
        return self._reply(status, {"description": description, **extra})

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v0"):
            return await handler(request)
        entry: dict[str, Any] = {"method": request.method, "path": request.path_qs, "status": None, "fault": None}
        self.requests.append(entry)
        self.counts["requests"] += 1
        if request.method == "POST" and request.path.rstrip("/") == "/v0/passings":
            try:
                raw = await request.read()  # read here so the log holds the body, whatever the answer
            except web.HTTPRequestEntityTooLarge:
                entry["status"] = 413
                return self._too_large()
            try:
                entry["body"] = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                entry["body"] = raw.decode("utf-8", "replace")
        faults = self.faults
        if faults.latency_ms:
            await self._pause(faults.latency_ms / 1000)
        if faults.hang_rate and self._rng.random() < faults.hang_rate:
            entry["fault"] = "hang"
            self.faults_fired["hang"] += 1
            await self._pause(faults.hang_s)
            return self._drop(request)  # like a proxy giving up: no answer at all
        if faults.error_rate and self._rng.random() < faults.error_rate:
            entry["fault"] = "error"
            entry["status"] = faults.error_status
            self.faults_fired["error"] += 1
            headers = {}
            if faults.retry_after is not None:
                # RFC 9110 allows whole seconds only; rounding up never invites an early retry
                headers["Retry-After"] = str(math.ceil(faults.retry_after))
            return self._reply(
                faults.error_status, {"description": f"Injected fault: HTTP {faults.error_status}"}, headers
            )
        try:
            unrouted = request.match_info.http_exception
            if unrouted is not None:  # unknown path or method: say so whatever the key
                raise unrouted
            self._authorize(request)
            response = await handler(request)
        except Invalid as exc:
            response = self._error(exc.status, exc.description)
        except web.HTTPRequestEntityTooLarge:
            response = self._too_large()
        except web.HTTPException as exc:  # unknown path, wrong method
            response = self._error(exc.status, exc.reason)
        except Exception as exc:
            # The stack as text, without the frames' locals that an exception event would render: a crash in
            # _authorize would otherwise print the presented key, which may be one we never registered.
            _log.error(
                "emulator_handler_failed",
                method=request.method,
                path=request.path,
                error=f"{type(exc).__name__}: {exc}",
                traceback="".join(traceback.format_exception(exc)),
            )
            response = self._reply(500, None)
        entry["status"] = response.status
        if "body" in entry and 400 <= response.status < 500:
            self._count_rejected(entry["body"])
        if (
            request.method in _WRITES
            and 200 <= response.status < 300
            and faults.drop_after_commit
            and self._rng.random() < faults.drop_after_commit
        ):
            entry["fault"] = "drop_after_commit"
            entry["status"] = None
            self.faults_fired["drop_after_commit"] += 1
            return self._drop(request)
        return response

    def _count_rejected(self, body: Any) -> None:
        # Whatever the reason the API refused a POST /passings (invalid, reject_bib, too many, a session not
        # found or closed, the key), its passings were not stored: so inserted + duplicate + rejected covers
        # every passing of every request the API answered. Injected faults are counted in faults_fired.
        items = body.get("passings_list") if isinstance(body, dict) else None
        if isinstance(items, list):
            self.counts["rejected"] += len(items)
            token = body.get("token_session")  # items is a list, so body is a dict
            if isinstance(token, str) and self._db().session_row(token) is not None:
                self._session_counter(token)["rejected"] += len(items)

    def _session_counter(self, token: str) -> Counter[str]:
        return self.session_counts.setdefault(token, Counter())

    def _too_large(self) -> web.Response:
        # aiohttp's own answer would be text/plain; the cloud answers in its dialect like any other error
        return self._error(413, f"body: larger than {self.config.max_body_bytes} bytes")

    async def _pause(self, seconds: float) -> None:
        await wait_event(self._stopping, seconds)

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        # Cut the connection; aiohttp then fails quietly to write the response we hand back.
        if request.protocol is not None:
            request.protocol.force_close()
        return web.Response(status=503)

    def _authorize(self, request: web.Request) -> None:
        given = request.headers.get("api_key") or request.headers.get("x-api-key")
        if not given:
            raise Invalid("Unauthorized: missing api_key header", status=401)
        key = next((k for k in self.keys if hmac.compare_digest(k.key.encode(), given.encode())), None)
        if key is None:
            raise Invalid("Unauthorized: unknown api key", status=401)
        if not key.can(request.method):
            need = "WRITE with the unbind flag" if request.method == "DELETE" else "a different access type"
            raise Invalid(f"Forbidden: this key's access type ({key.access}) does not allow {request.method}; "
                          f"needs {need}", status=403)  # fmt: skip

    async def _json(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            raise Invalid("body: a JSON object is required")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise Invalid("body: not valid JSON") from None

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._page)
        r.add_post("/v0/devices", self._bind)
        r.add_get("/v0/devices", self._list_devices)
        r.add_get("/v0/devices/{deviceid}", self._device_info)
        r.add_delete("/v0/devices/{deviceid}", self._unbind)
        r.add_post("/v0/sessions", self._create_session)
        r.add_patch("/v0/sessions/close/{token}", self._close_session)
        r.add_get("/v0/sessions/device/{deviceid}", self._device_sessions)
        r.add_get("/v0/sessions/device/{deviceid}/active", self._active_session)
        r.add_get("/v0/sessions/{token}", self._session_info)
        r.add_post("/v0/passings", self._insert_passings)
        r.add_get("/v0/passings/session/{token}", self._session_passings)
        r.add_get("/v0/passings/device/{deviceid}", self._device_passings)

    # -- endpoints -------------------------------------------------------------------------------------

    async def _bind(self, request: web.Request) -> web.Response:
        fields = BIND_FIELDS_TYPE_REQUIRED if self.config.bind_requires_type else BIND_FIELDS
        body = check_object(await self._json(request), fields)
        deviceid = self._db().bind(
            body["model"], body["serial_number"], body.get("alias"), body.get("firmware"), body.get("type")
        )
        return self._reply(201, {"description": "Device binded succesfully", "deviceid": deviceid})

    async def _unbind(self, request: web.Request) -> web.Response:
        deviceid = request.match_info["deviceid"]
        if not self._db().unbind(deviceid):
            return self._error(404, "Device not found", deviceid=deviceid)
        return self._reply(200, {"description": "Device unbinded succesfully", "deviceid": deviceid})

    async def _list_devices(self, request: web.Request) -> web.Response:
        page = query_int(request.query, "page", 1, 1) or 1
        limit = query_int(request.query, "limit", PAGE, 1, PAGE) or PAGE
        devices, total = self._db().devices(page, limit)
        return self._reply(
            200,
            {
                "description": "Success",
                "result": devices,
                "pagination": {"page": page, "limit": limit, "total": total, "has_more": page * limit < total},
            },
        )

    async def _device_info(self, request: web.Request) -> web.Response:
        deviceid = request.match_info["deviceid"]
        device = self._db().device(deviceid)
        if device is None:
            return self._error(404, "Device not found", deviceid=deviceid)
        return self._reply(200, {"description": "Success", "result": device})

    async def _create_session(self, request: web.Request) -> web.Response:
        body = check_object(await self._json(request), SESSION_FIELDS)
        deviceid = body["deviceid"]
        if not self._db().has_device(deviceid):
            return self._error(404, "Device not found", deviceid=deviceid)
        token = self._db().create_session(deviceid, body.get("alias"))
        return self._reply(201, {"description": "Session inserted succesfully", "token_session": token})

    async def _close_session(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if not self._db().close_session(token):
            return self._error(404, "Session not found", token_session=token)
        return self._reply(200, {"description": "Session closed succesfully", "token_session": token})

    async def _device_sessions(self, request: web.Request) -> web.Response:
        return self._sessions(request.match_info["deviceid"], active_only=False)

    async def _active_session(self, request: web.Request) -> web.Response:
        return self._sessions(request.match_info["deviceid"], active_only=True)

    def _sessions(self, deviceid: str, active_only: bool) -> web.Response:
        if not self._db().has_device(deviceid):
            return self._error(404, "Device not found", deviceid=deviceid)
        sessions = self._db().sessions_of(deviceid, active_only)
        if not sessions:
            return self._error(404, "Sessions not found")
        return self._reply(200, {"description": "Success", "result": sessions})

    async def _session_info(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        session = self._db().session(token)
        if session is None:
            return self._error(404, "Session not found", token_session=token)
        return self._reply(200, {"description": "Success", "result": [session]})

    async def _insert_passings(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        token, items = check_passings_body(body)
        bib = self.faults.reject_bib
        if bib is not None:
            poisoned = [i for i, it in enumerate(items) if it["bib"] == bib]
            if poisoned:
                self.faults_fired["reject_bib"] += 1
                raise Invalid(f"passings_list[{poisoned[0]}].bib: bib {bib} is rejected")
        row = self._db().session_row(token)
        if row is None or not row["active"]:
            return self._error(404, "Session not found or closed")
        inserted, duplicate = self._db().insert(token, row["deviceid"], items)
        self.counts["inserted"] += inserted
        self.counts["duplicate"] += duplicate
        held = self._session_counter(token)
        held["inserted"] += inserted
        held["duplicate"] += duplicate
        return self._reply(
            201,
            {
                "description": "Passings inserted succesfully",
                "token_session": token,
                "inserted_count": inserted,
                "duplicate_count": duplicate,
            },
        )

    async def _session_passings(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        first = query_int(request.query, "first", None, 0)
        last = query_int(request.query, "last", None, 0)
        page = query_int(request.query, "page", 1, 1) or 1
        if self._db().session_row(token) is None:
            return self._error(404, "Session not found", token_session=token)
        rows = self._db().session_passings(token, first, last, page)
        return self._passings_reply(rows)

    async def _device_passings(self, request: web.Request) -> web.Response:
        deviceid = request.match_info["deviceid"]
        start = query_ts(request.query, "from")
        end = query_ts(request.query, "to")
        page = query_int(request.query, "page", 1, 1) or 1
        if not self._db().has_device(deviceid):
            return self._error(404, "Device not found", deviceid=deviceid)
        return self._passings_reply(self._db().device_passings(deviceid, start, end, page))

    def _passings_reply(self, rows: list[dict[str, Any]]) -> web.Response:
        if not rows:
            return self._error(404, "Passings not found")
        return self._reply(200, {"description": "Success", "result": rows})

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=render_page(self._db(), self.dialect), content_type="text/html", charset="utf-8")

    # -- admin endpoint --------------------------------------------------------------------------------

    def _admin_ok(self, request: web.Request) -> bool:
        given = request.headers.get("X-Admin-Token", "")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.admin_token.encode())

    @staticmethod
    def _admin_denied() -> web.Response:
        return web.json_response({"error": "admin token required (Authorization: Bearer T or X-Admin-Token)"},
                                 status=401)  # fmt: skip

    @web.middleware
    async def _admin_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._admin_ok(request):
            return self._admin_denied()
        return await handler(request)

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _admin_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.as_dict())

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return web.json_response({"error": "body: not valid JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body: must be a JSON object of fault fields"}, status=400)
        try:
            faults = self.set_faults(**body)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except OSError as exc:  # the API port could not be bound again: a conflict with the host, not a bad request
            return web.json_response({"error": exc.strerror or str(exc), "faults": self.faults.as_dict()}, status=409)
        await self.wait_online()
        return web.json_response(faults.as_dict())

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})
