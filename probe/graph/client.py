"""Microsoft Graph over HTTPS (requests, in worker threads): verified TLS, 429/5xx, safe errors."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from probe.tls import client_context

log = logging.getLogger("relayprobe.graph")

#: The Graph API version relayprobe speaks (every call it makes is in v1.0).
API = "v1.0"
#: Seconds to wait after a 429 without Retry-After (Graph sends one; this is the fallback).
DEFAULT_RETRY_AFTER = 10.0


class GraphError(Exception):
    """A Graph call that failed. ``kind``: throttled (429), unavailable (5xx, no connection),
    denied (401/403), not_found (404), tls, or other. The text names method, URL, status and
    Graph's error code and message, never the token (docs/architecture.md "Reasons")."""

    def __init__(
        self,
        kind: str,
        method: str,
        url: str,
        status: int | None,
        code: str | None,
        text: str,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.kind, self.method, self.url, self.status = kind, method, url, status
        self.code, self.text, self.retry_after = code, text, retry_after
        answer = f"HTTP {status}" if status is not None else "no answer"
        detail = f"{code}: {text}" if code else text
        super().__init__(f"{method} {url}: {answer} {detail}".rstrip())


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _shown(url: str) -> str:
    """A URL as it may appear in a message: state tokens cut short (they are opaque, long)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    cut = [
        (k, v[:12] + "…" if k in ("$deltatoken", "$skiptoken") and len(v) > 12 else v)
        for k, v in query
    ]
    q = "&".join(f"{k}={v}" for k, v in cut)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, q, ""))


class _TLSAdapter(HTTPAdapter):
    """requests with probe/tls.py's verifying TLS 1.2+ context."""

    def __init__(self, ca_file: Path | None) -> None:
        self._ctx = client_context(ca_file=ca_file)
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ctx
        super().init_poolmanager(*args, **kwargs)


@dataclass
class Response:
    status: int
    body: dict[str, Any]


class GraphClient:
    """Blocking Graph calls for one service root (run them in a thread).

    ``token()`` returns a current bearer token; ``refused(token)`` drops one Graph answered 401
    to and says whether one fresh try is worth it (probe.m365.tokens.token_refused). Links Graph
    returns (@odata.nextLink, @odata.deltaLink) are followed only on the configured host, so
    the token never goes anywhere else.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: Callable[[], str],
        refused: Callable[[str], bool] = lambda _t: False,
        ca_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base = base_url.rstrip("/")
        self._token, self._refused = token, refused
        self.ca_file, self.timeout = ca_file, timeout
        self._session = requests.Session()
        self._session.mount("https://", _TLSAdapter(ca_file))
        self.calls = 0  # requests sent (tests, the bench)

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else f"{self.base}/{API}{path}"

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One call; raises GraphError. A 401 to a cached token is retried once with a fresh one."""
        url = self.url(path)
        if urllib.parse.urlsplit(url).netloc != urllib.parse.urlsplit(self.base).netloc:
            raise GraphError(
                "other", method, _shown(url), None, None, "link to another host refused"
            )
        token = self._token()
        answer = self._send(method, url, token, params, headers)
        if answer.status_code == 401 and self._refused(token):
            answer = self._send(method, url, self._token(), params, headers)
        return self._result(method, url, params, answer)

    def _send(
        self,
        method: str,
        url: str,
        token: str,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
    ) -> requests.Response:
        self.calls += 1
        hdrs = {"Authorization": f"Bearer {token}", "Accept": "application/json"} | (headers or {})
        shown = _shown(url)
        try:
            return self._session.request(
                method,
                url,
                params=params,
                headers=hdrs,
                timeout=self.timeout,
                # An explicit CA file wins over REQUESTS_CA_BUNDLE (tests/oauth/README.md
                # #ca-for-the-authority); without one the verifying context decides.
                verify=str(self.ca_file) if self.ca_file else True,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise GraphError("tls", method, shown, None, None, _reason(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise GraphError("unavailable", method, shown, None, None, _reason(exc)) from None

    def _result(
        self, method: str, url: str, params: dict[str, str] | None, answer: requests.Response
    ) -> Response:
        status = answer.status_code
        if 200 <= status < 300:
            if status == 204 or not answer.content:
                return Response(status, {})
            try:
                body = answer.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise GraphError("other", method, _shown(url), status, None, "answer is not JSON")
            return Response(status, body)
        code, text = _graph_error(answer)
        shown = _shown(url + ("?" + urllib.parse.urlencode(params) if params else ""))
        retry = retry_after_seconds(answer.headers.get("Retry-After"))
        if status == 429:
            kind = "throttled"
            retry = retry if retry is not None else DEFAULT_RETRY_AFTER
        elif status >= 500:
            kind = "unavailable"
        elif status in (401, 403):
            kind = "denied"
        elif status == 404:
            kind = "not_found"
        else:
            kind = "other"
        raise GraphError(kind, method, shown, status, code, text, retry_after=retry)


def _graph_error(answer: requests.Response) -> tuple[str | None, str]:
    """Graph's error body {"error": {"code", "message", "innerError"}}: code and one line."""
    try:
        body = answer.json()
    except ValueError:
        lines = (answer.text or answer.reason or "").strip().splitlines()
        return None, lines[0][:200] if lines else ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, ""
    message = " ".join(str(error.get("message") or "").split())[:300]
    return (str(error["code"]) if error.get("code") else None), message


def _reason(exc: BaseException) -> str:
    """The innermost cause's text, one line (requests nests urllib3's errors three deep)."""
    seen: BaseException | None = exc
    text = str(exc)
    for _ in range(6):
        if seen is None:
            break
        if str(seen):
            text = str(seen)
        seen = (
            seen.__cause__
            or seen.__context__
            or (seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None)
        )
    return " ".join(text.split())[:300]


def odata_quote(value: str) -> str:
    """A string literal for $filter: single quotes doubled (OData ABNF)."""
    return "'" + value.replace("'", "''") + "'"


def graph_time(text: object) -> dt.datetime | None:
    """A Graph DateTimeOffset ("2026-12-08T00:01:02Z") as an aware datetime; None if not one."""
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
