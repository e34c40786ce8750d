"""ProbeResult builders for tests and benchmarks that present results, and a store holding some."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from exporters.store import ResultStore
from probe.result import (
    Arrival,
    AuthVerdict,
    HeaderVerdict,
    ProbeResult,
    Reason,
    SmtpReceipt,
    SpamVerdict,
    Stage,
    Status,
    Timings,
)

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def probe_result(**fields: Any) -> ProbeResult:
    """A result of m365-submission started at NOW, ok and "delivered" unless ``fields`` differ."""
    base = {
        "target": "m365-submission",
        "status": Status.OK,
        "stage": Stage.DONE,
        "reason": Reason.OK,
        "message": "delivered",
        "started_at": NOW,
    }
    return ProbeResult(**{**base, **fields})


def delivered(target: str, seconds: float, *, placement: str = "inbox") -> ProbeResult:
    """A minimal relay.example delivery (dmarc fail, SCL 5), as the exporter tests count it."""
    return probe_result(
        target=target,
        timings=Timings(0.01, 0.02, 0.01, 0.05, seconds, seconds + 0.1),
        smtp=SmtpReceipt("relay.example", 587, cert_not_after=NOW + dt.timedelta(days=30)),
        arrival=Arrival(
            folder="INBOX" if placement == "inbox" else "Junk Email", placement=placement
        ),
        verdict=HeaderVerdict(
            auth=AuthVerdict(spf="pass", dkim="pass", dmarc="fail", compauth="softpass"),
            spam=SpamVerdict(scl=5),
        ),
    )


def failed(target: str) -> ProbeResult:
    """A probe of relay.example refused at AUTH."""
    return probe_result(
        target=target,
        status=Status.CRITICAL,
        stage=Stage.AUTH,
        reason=Reason.AUTH_FAILED,
        message="auth relay.example:587: AUTH as probe@contoso.com refused: 535 5.7.139",
        timings=Timings(0.01, 0.02),
        smtp=SmtpReceipt("relay.example", 587),
    )


def receipt(code: int = 250, reply: str = "2.0.0 Ok: queued as 4XyzQ") -> SmtpReceipt:
    """Microsoft 365's submission endpoint over TLS 1.3, answering ``code reply``."""
    return SmtpReceipt(
        host="smtp.office365.com",
        port=587,
        tls_version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        reply_code=code,
        reply=reply,
    )


def m365_delivered(delivery: float = 12.4, **changes: Any) -> ProbeResult:
    """A full Microsoft 365 round trip, all verdicts passing (the Nagios scenarios' input)."""
    full = probe_result(
        message=f"delivered to INBOX in {delivery:.2f} s; spf=pass dkim=pass dmarc=pass",
        timings=Timings(0.012, 0.034, 0.101, 0.245, delivery, delivery + 0.4),
        smtp=receipt(),
        arrival=Arrival("INBOX", "inbox"),
        verdict=HeaderVerdict(
            AuthVerdict("pass", "pass", "pass", "none", "pass", "100", "Authentication-Results"),
            SpamVerdict(scl=1, bcl=0, sfv="NSPM", cat="NONE"),
        ),
        probe_id="p1a2b3c4",
    )
    return dataclasses.replace(full, **changes)


def sample_store() -> ResultStore:
    """Targets a (delivered twice, once junked, one late), b (failed twice, backing off), never."""
    s = ResultStore()
    s.set_targets([("a", 60.0), ("b", 300.0), ("never", 60.0)])
    s.record(delivered("a", 0.3), NOW)
    s.record(delivered("a", 45.0, placement="junk"), NOW + dt.timedelta(minutes=1))
    s.record(failed("b"), NOW)
    s.record(failed("b"), NOW)
    s.record_late("a")
    s.set_backoff("b", 600.0, 1)
    return s
