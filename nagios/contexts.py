"""Evaluation of a probe result against the plugin's thresholds: nagiosplugin contexts and metrics."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import nagiosplugin
from nagiosplugin import Critical, Ok, Performance, Range, Unknown, Warn

from nagios.options import Options
from probe import AUTH_METHODS, AuthVerdict, ProbeResult, Reason, Status

STATE = {"ok": Ok, "warning": Warn, "critical": Critical, "unknown": Unknown}

#: Reasons the plugin re-evaluates itself when the matching option is given (see ``_covered``).
_LATENCY = frozenset({Reason.LATENCY_WARNING, Reason.LATENCY_CRITICAL})


@dataclass(frozen=True)
class Observation:
    """What acquisition produced: a probe result, and for passive mode its age and source."""

    result: ProbeResult
    finished_at: dt.datetime | None = None
    source: str | None = None


def seconds(value: float) -> str:
    return f"{value:.3f}s" if value < 10 else f"{value:.1f}s"


def arrived(result: ProbeResult) -> bool:
    """The mail reached a folder, so its latency, verdict and placement can be evaluated."""
    return result.arrival.placement in ("inbox", "junk")


def _reply(result: ProbeResult) -> str:
    smtp = result.smtp
    if smtp is None or smtp.reply_code is None:
        return ""
    words = (smtp.reply or "").split()
    # The enhanced status code (5.7.139) says why; the rest of the reply goes to the details.
    enhanced = words[0] if words and words[0][:1].isdigit() and "." in words[0] else ""
    return f" ({smtp.reply_code} {enhanced})" if enhanced else f" ({smtp.reply_code})"


def auth_text(auth: AuthVerdict) -> str:
    return " ".join(f"{m}={getattr(auth, m) or 'none'}" for m in AUTH_METHODS)


def failure_phrase(result: ProbeResult) -> str:
    """One short phrase naming what failed, for the status line (details carry the message)."""
    smtp = result.smtp
    host = f"{smtp.host}:{smtp.port}" if smtp else "the relay"
    reply = _reply(result)
    phrases = {
        Reason.CONFIG_ERROR: "configuration error",
        Reason.DNS_ERROR: f"cannot resolve {smtp.host if smtp else 'the relay host'}",
        Reason.CONNECT_REFUSED: f"connection to {host} refused",
        Reason.CONNECT_TIMEOUT: f"connection to {host} timed out",
        Reason.CONNECT_FAILED: f"cannot connect to {host}",
        Reason.TLS_FAILED: f"TLS with {host} failed",
        Reason.STARTTLS_UNAVAILABLE: f"{host} does not offer STARTTLS",
        Reason.AUTH_UNAVAILABLE: f"{host} does not offer SMTP AUTH",
        Reason.AUTH_FAILED: f"SMTP AUTH rejected by {host}{reply}",
        Reason.AUTH_BASIC_DISABLED: f"basic SMTP AUTH disabled for the tenant{reply}",
        Reason.OAUTH_TOKEN_FAILED: "cannot get an OAuth token for SMTP",
        Reason.SEND_AS_DENIED: f"send-as denied by {host}{reply}",
        Reason.THROTTLED: f"{host} throttles the sender{reply}",
        Reason.SMTP_TEMPORARY_FAILURE: f"{host} deferred the mail{reply}",
        Reason.SMTP_REJECTED: f"relay {host} rejected the mail{reply}",
        Reason.SMTP_TIMEOUT: f"SMTP with {host} timed out",
        Reason.SMTP_PROTOCOL_ERROR: f"SMTP protocol error with {host}",
        Reason.IMAP_FAILED: "mailbox check over IMAP failed",
        Reason.IMAP_AUTH_FAILED: "IMAP login to the mailbox failed",
        Reason.FOLDER_MISSING: "a watched mailbox folder is missing",
        Reason.DELIVERY_TIMEOUT: "mail not delivered before the deadline",
        Reason.JUNKED: f"delivered to junk folder {result.arrival.folder}",
        Reason.AUTH_RESULT_MISMATCH: f"unexpected authentication {auth_text(result.verdict.auth)}",
        Reason.PLACEMENT_MISMATCH: f"delivered to {result.arrival.folder}, not the expected folder",
        Reason.SPAM_SCORE_HIGH: f"spam confidence level {result.verdict.spam.scl} too high",
        Reason.CLEANUP_FAILED: "probe mail could not be deleted",
        Reason.INTERNAL_ERROR: "internal error",
    }
    delivery = result.timings.delivery_seconds
    if result.reason in _LATENCY and delivery is not None:
        return f"delivery took {seconds(delivery)}"
    return phrases.get(result.reason, f"{result.reason.value} at {result.stage.value}")


def _covered(reason: Reason, opts: Options) -> bool:
    """Whether an option of the plugin decides this aspect (then the result's verdict yields)."""
    if reason in _LATENCY:
        return opts.warning is not None or opts.critical is not None
    if reason is Reason.AUTH_RESULT_MISMATCH:
        return bool(opts.expect)
    if reason is Reason.SPAM_SCORE_HIGH:
        return opts.max_scl is not None
    if reason is Reason.JUNKED:
        return opts.junk_severity is not None
    return False


class OutcomeContext(nagiosplugin.Context):
    """The probe's own verdict: failures before arrival, and aspects no option re-evaluates."""

    def __init__(self, opts: Options) -> None:
        super().__init__("outcome")
        self.opts = opts

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        result: ProbeResult = metric.value
        if result.status is Status.OK or (arrived(result) and _covered(result.reason, self.opts)):
            return nagiosplugin.Result(Ok, None, metric)
        return nagiosplugin.Result(STATE[result.status.value], failure_phrase(result), metric)


class DeliveryContext(nagiosplugin.ScalarContext):
    """Delivery time against -w/-c, critical first (nagiosplugin's ScalarContext)."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        result = super().evaluate(metric, resource)
        if result.state == Ok:
            return result
        bound = self.critical if result.state == Critical else self.warning
        # nagiosplugin says "outside range @10:20" for an inverted range too: say "inside".
        why = f"inside range {bound}" if bound.invert else bound.violation
        return nagiosplugin.Result(
            result.state, f"delivery took {seconds(metric.value)}, {why}", metric
        )


class PhaseContext(nagiosplugin.Context):
    """SMTP phases and total: performance data only, in seconds, minimum 0."""

    def performance(self, metric: nagiosplugin.Metric, resource: object) -> Performance:
        return Performance(metric.name, metric.value, "s", None, None, 0)


class AuthContext(nagiosplugin.Context):
    """Required authentication results (--expect-*): a mismatch is CRITICAL."""

    def __init__(self, expect: dict[str, tuple[str, ...]]) -> None:
        super().__init__("auth")
        self.expect = expect

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        auth: AuthVerdict = metric.value
        wrong = [
            f"{method}={getattr(auth, method) or 'none'} (expected {' or '.join(allowed)})"
            for method, allowed in self.expect.items()
            if (getattr(auth, method) or "none") not in allowed
        ]
        if wrong:
            return nagiosplugin.Result(Critical, "unexpected " + ", ".join(wrong), metric)
        return nagiosplugin.Result(Ok, None, metric)


class SclContext(nagiosplugin.Context):
    """Microsoft's spam confidence level (-1..9) against --max-scl: above it is WARNING."""

    def __init__(self, max_scl: int | None) -> None:
        super().__init__("scl")
        # "~:N" alerts only above N: a plain "N" would also alert on SCL -1 (below 0).
        self.warning = Range(f"~:{max_scl}") if max_scl is not None else None

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        if self.warning is not None and not self.warning.match(metric.value):
            hint = f"spam confidence level {metric.value} above {self.warning.end}"
            return nagiosplugin.Result(Warn, hint, metric)
        return nagiosplugin.Result(Ok, None, metric)

    def performance(self, metric: nagiosplugin.Metric, resource: object) -> Performance:
        return Performance("scl", metric.value, "", self.warning, None, -1, 9)


class PlacementContext(nagiosplugin.Context):
    """Junk placement with --junk-severity."""

    def __init__(self, severity: str | None) -> None:
        super().__init__("placement")
        self.severity = severity

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        folder, placement = metric.value
        if placement == "junk" and self.severity not in (None, "ok"):
            hint = f"delivered to junk folder {folder}"
            return nagiosplugin.Result(STATE[self.severity], hint, metric)
        return nagiosplugin.Result(Ok, None, metric)


class AgeContext(nagiosplugin.Context):
    """Passive mode: the age of the daemon's last result, performance data only."""

    def performance(self, metric: nagiosplugin.Metric, resource: object) -> Performance:
        return Performance("age", metric.value, "s", None, None, 0)


class ResultResource(nagiosplugin.Resource):
    """Turns one probe result into metrics; no I/O (acquisition is probe.roundtrip / the exporter)."""

    name = "M365 RELAY"

    def __init__(self, obs: Observation, now: dt.datetime | None) -> None:
        self.obs = obs
        self.now = now

    def probe(self) -> list[nagiosplugin.Metric]:
        result = self.obs.result
        t = result.timings
        metrics = [nagiosplugin.Metric("outcome", result, context="outcome")]
        if arrived(result):
            if t.delivery_seconds is not None:
                metrics.append(
                    nagiosplugin.Metric(
                        "delivery", round(t.delivery_seconds, 3), "s", 0, context="delivery"
                    )
                )
            metrics.append(nagiosplugin.Metric("auth", result.verdict.auth, context="auth"))
            if result.verdict.spam.scl is not None:
                metrics.append(nagiosplugin.Metric("scl", result.verdict.spam.scl, context="scl"))
            placement = (result.arrival.folder, result.arrival.placement)
            metrics.append(nagiosplugin.Metric("placement", placement, context="placement"))
        for label, value in t.smtp_phases():
            if value is not None:
                metrics.append(
                    nagiosplugin.Metric(f"smtp_{label}", round(value, 3), context="phase")
                )
        if t.total_seconds is not None:
            metrics.append(nagiosplugin.Metric("total", round(t.total_seconds, 3), context="phase"))
        if self.obs.finished_at is not None and self.now is not None:
            age = max(0.0, (self.now - self.obs.finished_at).total_seconds())
            metrics.append(nagiosplugin.Metric("age", int(age), context="age"))
        return metrics


def build_check(obs: Observation, opts: Options, now: dt.datetime | None) -> nagiosplugin.Check:
    """The nagiosplugin Check for one observation; call it, then read results and perfdata."""
    return nagiosplugin.Check(
        ResultResource(obs, now),
        OutcomeContext(opts),
        DeliveryContext("delivery", opts.warning, opts.critical),
        PhaseContext("phase"),
        AuthContext(opts.expect),
        SclContext(opts.max_scl),
        PlacementContext(opts.junk_severity),
        AgeContext("age"),
        name="M365 RELAY",
    )
