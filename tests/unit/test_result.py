"""ProbeResult.from_dict: the inverse of to_dict, with errors that name the malformed field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from probe.result import Arrival, ProbeResult, Reason, ResultError, Stage, Status, Timings
from tests.results import delivered, failed, m365_delivered, probe_result

RESULTS = {
    "ok, delivered with a full verdict": m365_delivered(),
    "ok, delivered with a certificate expiry": delivered("a", 0.3),
    "failed at auth with an SMTP receipt": failed("b"),
    "connect timeout, nothing sent": probe_result(
        status=Status.CRITICAL,
        stage=Stage.CONNECT,
        reason=Reason.CONNECT_TIMEOUT,
        message="connect relay.example:587: timed out after 30 s",
        remedy="check the firewall between the probe and the relay",
        timings=Timings(total_seconds=30.0),
    ),
    "junked, late, a warning": m365_delivered(
        status=Status.WARNING,
        reason=Reason.JUNKED,
        arrival=Arrival("Junk Email", "junk", late=True),
    ),
}


@pytest.mark.parametrize("result", RESULTS.values(), ids=RESULTS.keys())
def test_from_dict_inverts_to_dict_through_json(result: ProbeResult) -> None:
    data = json.loads(json.dumps(result.to_dict()))
    assert ProbeResult.from_dict(data).to_dict() == result.to_dict()
    assert ProbeResult.from_dict(data) == result  # none of them sets a field to_dict leaves out


def test_unknown_keys_are_ignored_and_whole_numbers_are_seconds() -> None:
    data = {**m365_delivered().to_dict(), "finished_at": "2026-11-27T12:00:13.000Z"}
    data["timings"] = {**data["timings"], "total_seconds": 13, "imap_seconds": 0.5}
    assert ProbeResult.from_dict(data).timings.total_seconds == 13.0


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, key = path.split(".")
    for parent in parents:
        data = data[parent]
    if value is KeyError:
        del data[key]
    else:
        data[key] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("status", KeyError, "status is missing"),
        ("reason", "brand_new_reason", "reason 'brand_new_reason' is unknown"),
        ("message", None, "message is missing"),
        ("started_at", "yesterday", "started_at 'yesterday' is not an RFC 3339 time"),
        ("started_at", "2026-11-27T12:00:00", "started_at '2026-11-27T12:00:00' has no time zone"),
        ("timings", [0.1], "timings [0.1] is not an object"),
        ("timings.total_seconds", "12.8", "timings.total_seconds '12.8' is not a number"),
        ("smtp.host", KeyError, "smtp.host is missing"),
        ("smtp.port", "587", "smtp.port '587' is not an integer"),
        ("smtp.cert_not_after", 0, "smtp.cert_not_after '0' is not an RFC 3339 time"),
        ("arrival.late", "no", "arrival.late 'no' is not true or false"),
        ("auth.dkim", True, "auth.dkim True is not a string"),
        ("spam.scl", True, "spam.scl True is not an integer"),
    ],
)
def test_malformed_input_raises_an_error_naming_the_field(
    path: str, value: Any, message: str
) -> None:
    data = json.loads(json.dumps(delivered("a", 0.3).to_dict()))
    _set(data, path, value)
    with pytest.raises(ResultError) as caught:
        ProbeResult.from_dict(data)
    assert (str(caught.value), caught.value.field) == (message, path)
    assert isinstance(caught.value, ValueError)
