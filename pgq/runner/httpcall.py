"""Requests from the HTTP runner to the coordinator: one aiohttp session, the bearer
token, and the mapping of answers to pgq's exceptions (5xx and broken connections →
``CoordinatorUnavailable``, 401 → ``CoordinatorUnauthorized``, 409 →
``TransitionNotAllowed``, 404 ``job_not_found`` → ``JobNotFound``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
import orjson

from .. import __version__
from ..errors import DatabaseUnavailable, JobNotFound, PgqError, TransitionNotAllowed
from ..logs import log_event

__all__ = ["CoordinatorApi", "CoordinatorUnauthorized", "CoordinatorUnavailable"]

log = logging.getLogger("pgq.runner.http")

CONNECT_TIMEOUT = 5.0


class CoordinatorUnavailable(DatabaseUnavailable):
    """The coordinator cannot be reached, or cannot reach its database."""

    def __init__(self, message: str | None = None, *, sent: bool = True) -> None:
        super().__init__(message)
        #: False when the request certainly never reached the coordinator (connect failed).
        self.sent = sent


class CoordinatorUnauthorized(PgqError):
    """The coordinator refused the bearer token: pass a valid --token (or PGQ_API_TOKEN)."""

    http_status = 401
    code = "unauthorized"


class CoordinatorApi:
    """The coordinator at ``url`` as the HTTP source talks to it. ``on_unauthorized`` sees
    every 401 before it is raised (the source stops the runner on one after ``open``);
    ``on_reachable`` is called when the coordinator answers again after trouble."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        request_timeout: float,
        on_unauthorized: Callable[[CoordinatorUnauthorized], None],
        on_reachable: Callable[[], None],
    ) -> None:
        self.url = url
        self._token = token
        self._request_timeout = request_timeout
        self._on_unauthorized = on_unauthorized
        self._on_reachable = on_reachable
        self._http: aiohttp.ClientSession | None = None
        self._worker_id: str | None = None
        self.reachable = False
        self.last_error: str | None = None

    @property
    def is_open(self) -> bool:
        return self._http is not None

    def open(self, worker_id: str, concurrency: int) -> None:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"pgq-runner/{__version__}",
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self._worker_id = worker_id
        self._http = aiohttp.ClientSession(
            headers=headers,
            # Every running job may write its outcome at once, beside a claim and heartbeats.
            connector=aiohttp.TCPConnector(limit=concurrency + 8),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(
        self,
        method: str,
        path: str,
        body: msgspec.Struct | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """One request; the decoded JSON answer, or the exception its status stands for."""
        http = self._http
        assert http is not None, "the source is not open"
        what = f"{method} {path.partition('?')[0]}"
        try:
            async with http.request(
                method,
                self.url + path,
                data=None if body is None else msgspec.json.encode(body),
                timeout=aiohttp.ClientTimeout(
                    total=timeout or self._request_timeout, sock_connect=CONNECT_TIMEOUT
                ),
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except aiohttp.ClientSSLError as exc:
            raise PgqError(f"TLS to the coordinator at {self.url} failed: {exc}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(
                f"cannot reach the coordinator at {self.url}: {exc.os_error or exc}", sent=False
            ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            problem = str(exc) or type(exc).__name__
            raise self._unreachable(
                f"the connection to the coordinator broke during {what}: {problem}", sent=True
            ) from exc
        if not self.reachable and self._worker_id is not None:
            log_event(
                log,
                "runner.coordinator_reachable",
                f"the coordinator at {self.url} answers",
                worker_id=self._worker_id,
            )
            self.reachable = True
            self._on_reachable()
        self.reachable = True
        if status < 300:
            try:
                return orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                raise PgqError(
                    f"{self.url} answered {what} with something other than JSON: is it a pgq "
                    "coordinator?"
                ) from None
        code, message = _error_of(raw, status)
        if status >= 500:
            self.last_error = f"{status} {code}: {message}"
            raise CoordinatorUnavailable(
                f"the coordinator answered {what} with {status} ({code}): {message}"
            )
        if status == 401:
            raise self._unauthorized(message)
        if status == 404 and code == "job_not_found":
            raise JobNotFound(message)
        if status == 409:
            raise TransitionNotAllowed(message)
        raise PgqError(f"the coordinator refused {what} with {status} ({code}): {message}")

    def _unreachable(self, message: str, *, sent: bool) -> CoordinatorUnavailable:
        self.reachable = False
        self.last_error = message
        return CoordinatorUnavailable(message, sent=sent)

    def _unauthorized(self, message: str) -> CoordinatorUnauthorized:
        hint = (
            "check --token / PGQ_API_TOKEN"
            if self._token
            else "it requires a bearer token: pass --token or set PGQ_API_TOKEN"
        )
        exc = CoordinatorUnauthorized(
            f"the coordinator at {self.url} refused this runner ({message}): {hint}"
        )
        self._on_unauthorized(exc)
        return exc


def _error_of(raw: bytes, status: int) -> tuple[str, str]:
    """The (code, message) of an error answer ``{"error": {"code", "message"}}``."""
    try:
        error = orjson.loads(raw)["error"]
        return str(error["code"]), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = raw[:200].decode(errors="replace").strip()
        return f"http_{status}", text or "no message"
