"""A custom Prometheus collector that builds fresh metric families from the ResultStore per scrape."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporters.shards import Shard
from exporters.store import ResultStore, TargetState
from probe import AUTH_METHODS, SMTP_PHASES

#: A sharded daemon's shard and every target's owner (exporters/shards.py); None when unsharded.
ShardView = Callable[[], tuple[Shard, dict[str, int]] | None]

CACHED = (
    "Cached from the last scheduled probe run (a mail round trip is too slow to run per scrape)."
)
#: relayprobe_phase_duration_seconds labels and their Timings fields.
PHASES = (
    *((f"smtp_{phase}", f"smtp_{phase}_seconds") for phase in SMTP_PHASES),
    ("delivery", "delivery_seconds"),
    ("total", "total_seconds"),
)
# RFC 8601 results plus Microsoft's; anything else a header says becomes "other" (bounded labels).
AUTH_RESULTS = frozenset(
    {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"}
    | {"bestguesspass", "softpass"}
)


_PROCESS = ProcessCollector(registry=None)
_PLATFORM = PlatformCollector(registry=None)

#: build_info labels besides version: the runtime and the libraries a probe's behaviour rests on.
BUILD_LIBRARIES = ("python", "aiosmtplib", "imapclient", "msal", "prometheus_client")


@functools.cache
def _library_versions() -> tuple[str, ...]:
    def version(name: str) -> str:
        if name == "python":
            return platform.python_version()
        try:
            return importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            return "none"

    return tuple(version(n) for n in BUILD_LIBRARIES)


def _ts(value: object) -> float:
    return value.timestamp() if value is not None else 0.0  # type: ignore[attr-defined]


class StoreCollector(Collector):
    """Collects the per-target families (and, for the full /metrics, the exporter's own ones).

    Following the exporter guidelines, no metric object lives between scrapes: every call builds
    new families from the store, so removed targets vanish and nothing carries a timestamp.
    """

    def __init__(
        self,
        store: ResultStore,
        *,
        version: str,
        reload_ok: Callable[[], bool],
        only: str | None = None,
        shards: ShardView | None = None,
        posture: PostureView | None = None,
    ) -> None:
        self.store, self.version, self.reload_ok, self.only = store, version, reload_ok, only
        self.shards = shards
        self.posture = posture

    def describe(self) -> list[Metric]:
        return []  # families depend on the configured targets: never pre-registered

    def collect(self) -> Iterator[Metric]:
        states = self.store.states()
        if self.only is not None:
            states = [s for s in states if s.name == self.only]
        yield from _target_families(states, fresh=self.only is not None)
        if self.only is None:  # exporter self-metrics belong on /metrics, not on /probe
            yield from self.own_metrics()

    def own_metrics(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "relayprobe_build_info",
            "relayprobe build: its version, Python's and the protocol libraries' (always 1).",
            labels=["version", *BUILD_LIBRARIES],
        )
        info.add_metric([self.version, *_library_versions()], 1)
        yield info
        yield GaugeMetricFamily(
            "relayprobe_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1) or was rejected (0).",
            value=1 if self.reload_ok() else 0,
        )
        yield from self.shard_metrics()
        yield from posture_families(self.posture() if self.posture is not None else ())
        # The standard process_* (descriptors, memory, CPU) and python_info families: the daemon
        # guards its descriptors (docs/exporter.md, "HTTP limits"), so they must be watchable.
        yield from _PROCESS.collect()
        yield from _PLATFORM.collect()

    def shard_metrics(self) -> Iterator[Metric]:
        """A sharded daemon: which shard it is, and the owner of every target of the config (each
        shard computes the whole assignment, so alerts see the targets of a missing shard)."""
        view = self.shards() if self.shards is not None else None
        info = GaugeMetricFamily(
            "relayprobe_shard_info",
            "This daemon's shard number and the shard count (always 1; no sample unsharded).",
            labels=["shard", "shards"],
        )
        owned = GaugeMetricFamily(
            "relayprobe_target_shard",
            "The shard that probes each target of the configuration (always 1; no sample "
            "unsharded). From the configuration.",
            labels=["target", "shard"],
        )
        if view is not None:
            shard, owners = view
            info.add_metric([str(shard.index), str(shard.count)], 1)
            for name, index in sorted(owners.items()):
                owned.add_metric([name, str(index)], 1)
        yield from (info, owned)


def _target_families(states: list[TargetState], *, fresh: bool = False) -> Iterator[Metric]:
    """Per-target families. Gauges of the last run say they are cached from the schedule, unless
    ``fresh`` (/probe ran the probe for this very scrape); counters and config values never do."""
    t = ["target"]
    last_run_note = "" if fresh else f" {CACHED}"

    def gauge(name: str, help_: str, labels: list[str] = t) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, help_ + last_run_note, labels=labels)

    def config(name: str, help_: str, labels: list[str] = t) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, f"{help_} From the configuration.", labels=labels)

    def counter(name: str, help_: str, labels: list[str] = t) -> CounterMetricFamily:
        return CounterMetricFamily(name, help_, labels=labels)

    success = gauge("relayprobe_success", "Whether the last probe run succeeded (1) or not (0).")
    status = gauge(
        "relayprobe_status",
        "Status of the last probe run: 0 ok, 1 warning, 2 critical, 3 unknown (also before the "
        "first run), numbered like Nagios.",
    )
    check_ok = gauge(
        "relayprobe_check_ok",
        "Whether each configured expectation held in the last delivered probe (1) or not (0); "
        "no series for what is not expected.",
        ["target", "check"],
    )
    threshold = config(
        "relayprobe_threshold_seconds",
        "Configured delivery-time thresholds per level (warning, critical).",
        ["target", "level"],
    )
    runs = counter("relayprobe_runs", "Probe runs finished.")
    failed_runs = counter(
        "relayprobe_failed_runs",
        "Probe runs that did not succeed; exists at 0 from the first scrape, so "
        "1 - increase(failed_runs)/increase(runs) is exact from the first failure on.",
    )
    failures = counter(
        "relayprobe_failures",
        "Failed probe runs by the stage they ended in and the reason (a series appears with its "
        "first failure: use relayprobe_failed_runs_total for ratios).",
        ["target", "stage", "reason"],
    )
    check_failures = counter(
        "relayprobe_check_failures",
        "Delivered probes in which each configured expectation failed; every configured check "
        "exists at 0, and a probe failing several checks counts each.",
        ["target", "check"],
    )
    hist = HistogramMetricFamily(
        "relayprobe_delivery_duration_seconds",
        "Time from the relay accepting the probe to its arrival in the mailbox.",
        labels=t,
    )
    last_delivery = gauge(
        "relayprobe_last_delivery_duration_seconds", "Delivery time of the last delivered probe."
    )
    phase = gauge(
        "relayprobe_phase_duration_seconds",
        "Duration of each phase of the last probe run.",
        ["target", "phase"],
    )
    last_run = gauge(
        "relayprobe_last_run_timestamp_seconds",
        "Unix time the last probe run finished (0: none yet).",
    )
    last_success = gauge(
        "relayprobe_last_success_timestamp_seconds",
        "Unix time of the last successful probe run (0: none yet).",
    )
    late = counter(
        "relayprobe_late_deliveries", "Timed-out probes that arrived later and were removed."
    )
    junk = counter("relayprobe_junk_deliveries", "Probes that landed in a junk folder.")
    auth = gauge(
        "relayprobe_auth_result",
        "Receiver's authentication result per method in the last delivered probe (1 = this result).",
        ["target", "method", "result"],
    )
    scl = gauge(
        "relayprobe_spam_confidence_level",
        "Microsoft spam confidence level (SCL) of the last delivered probe.",
    )
    cert = GaugeMetricFamily(
        "relayprobe_tls_cert_expiry_timestamp_seconds",
        "Unix time the relay's TLS certificate expires, as last seen (0: not seen yet).",
        labels=t,
    )
    imap_cert = GaugeMetricFamily(
        "relayprobe_imap_cert_expiry_timestamp_seconds",
        "Unix time the IMAP server's TLS certificate expires, as seen at the last mailbox login "
        "(0: not seen yet).",
        labels=t,
    )
    client_cert = config(
        "relayprobe_client_cert_expiry_timestamp_seconds",
        "Unix time the SMTP client certificate (smtp.client_cert_file, a connector's) expires, "
        "read at start-up and at every reload (0: unreadable); only targets that have one.",
    )
    auth_info = config(
        "relayprobe_auth_info",
        "How each side of a target authenticates (always 1): side smtp or imap, method password, "
        "oauth2, token or none (no SMTP AUTH: direct_send, connector), the relay mode and cloud.",
        ["target", "side", "method", "mode", "cloud"],
    )
    backoff = GaugeMetricFamily(
        "relayprobe_backoff_seconds",
        "Current back-off: the delay before the next run, in place of the interval, after "
        "configuration-class failures (0: none, the interval applies).",
        labels=t,
    )
    interval = config("relayprobe_probe_interval_seconds", "Time between probe runs.")
    traces = counter(
        "relayprobe_trace",
        "Message traces run for failed, junked or late probes (trace.enabled) by Microsoft's "
        "status, or not_found, rate_limited, error; every status exists at 0 for such targets.",
        ["target", "status"],
    )

    for s in states:
        name, last = [s.name], s.last
        success.add_metric(name, 1 if last is not None and last.success else 0)
        status.add_metric(name, last.status.exit_code if last is not None else 3)
        for level, seconds in s.thresholds:
            threshold.add_metric([s.name, level], seconds)
        runs.add_metric(name, s.runs)
        failed_runs.add_metric(name, s.failed_runs)
        for (stage, reason), count in sorted(s.failures.items()):
            failures.add_metric([s.name, stage, reason], count)
        for check, count in s.check_failures.items():
            check_failures.add_metric([s.name, check], count)
        hist.add_metric(name, s.cumulative_buckets(), s.delivery_sum)
        last_run.add_metric(name, _ts(s.finished_at))
        last_success.add_metric(name, _ts(s.last_success_at))
        late.add_metric(name, s.late)
        junk.add_metric(name, s.junk)
        cert.add_metric(name, _ts(s.cert_not_after))
        imap_cert.add_metric(name, _ts(s.imap_cert_not_after))
        if s.client_cert:
            client_cert.add_metric(name, _ts(s.client_cert_not_after))
        for side, method in s.auth:
            auth_info.add_metric([s.name, side, method, s.mode, s.cloud], 1)
        backoff.add_metric(name, s.backoff_seconds)
        interval.add_metric(name, s.interval)
        for trace_status, count in s.traces.items():
            traces.add_metric([s.name, trace_status], count)
        if last is None:
            continue
        if last.timings.delivery_seconds is not None:
            last_delivery.add_metric(name, last.timings.delivery_seconds)
        for label, attr in PHASES:
            value = getattr(last.timings, attr)
            if value is not None:
                phase.add_metric([s.name, label], value)
        for check in last.checks:
            if check.check in s.check_failures:  # configured now (a reload may have changed it)
                check_ok.add_metric([s.name, check.check], 1 if check.ok else 0)
        verdict = last.verdict
        for method in AUTH_METHODS:
            result = getattr(verdict.auth, method)
            if result is not None:
                value = str(result).lower()
                auth.add_metric([s.name, method, value if value in AUTH_RESULTS else "other"], 1)
        if verdict.spam.scl is not None:
            scl.add_metric(name, verdict.spam.scl)
    yield from (success, status, check_ok, threshold, runs, failed_runs, failures, check_failures)
    yield from (hist, last_delivery, phase, last_run, last_success)
    yield from (late, junk, auth, scl, cert, imap_cert, client_cert, backoff, interval, auth_info)
    yield traces


#: The daemon's monitored domains (exporters/posture.py DomainPosture), for the posture families.
PostureView = Callable[[], Iterable[Any]]
#: A DNS record's value as a label: long TXT values (DKIM keys, long SPF records) are cut here,
#: and the ``sha256`` label (of the whole value) still tells every value apart.
RECORD_VALUE_MAX = 120


def _record_labels(value: str | None) -> tuple[str, str]:
    if value is None:
        return "", ""
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
    shown = value if len(value) <= RECORD_VALUE_MAX else value[: RECORD_VALUE_MAX - 3] + "..."
    return shown, digest


def posture_families(domains: Iterable[Any]) -> Iterator[Metric]:
    """The posture families (docs/exporter.md#posture), declared even with no domain."""
    info = GaugeMetricFamily(
        "relayprobe_dns_record_info",
        "Each DNS record of a sending domain as last seen (always 1): value cut to "
        f"{RECORD_VALUE_MAX} characters, sha256 the first 16 hex digits of the whole value; "
        "value and sha256 empty when the record is absent.",
        labels=["domain", "record", "value", "sha256"],
    )
    changed = GaugeMetricFamily(
        "relayprobe_dns_record_changed_timestamp_seconds",
        "Unix time a DNS record was last seen with a new value (0: unchanged since the daemon "
        "first saw it; the first observation is the baseline, not a change).",
        labels=["domain", "record"],
    )
    ok = GaugeMetricFamily(
        "relayprobe_posture_ok",
        "Whether each posture check passed (1) or found a warning or critical problem (0) in "
        "the last run; no series while DNS could not answer for it.",
        labels=["domain", "check"],
    )
    dns_errors = GaugeMetricFamily(
        "relayprobe_posture_dns_errors",
        "Posture checks of the last run for which DNS did not answer (timeout, SERVFAIL, "
        "REFUSED, lame): nothing is known about them, which is not a posture failure.",
        labels=["domain"],
    )
    last = GaugeMetricFamily(
        "relayprobe_posture_last_run_timestamp_seconds",
        "Unix time the domain's posture checks last finished (0: not yet).",
        labels=["domain"],
    )
    for d in domains:
        report = d.report
        last.add_metric([d.domain], _ts(report.checked_at if report else None))
        for record, state in sorted(d.records.items()):
            info.add_metric([d.domain, record, *_record_labels(state.value)], 1)
            changed.add_metric([d.domain, record], _ts(state.changed_at))
        if report is None:
            continue
        errors = 0
        for c in report.checks:
            if c.state.value == "dns_error":
                errors += 1
            else:
                ok.add_metric([d.domain, c.name], 1 if c.state.value == "ok" else 0)
        dns_errors.add_metric([d.domain], errors)
    yield from (info, changed, ok, dns_errors, last)


def exposition(
    store: ResultStore, *, version: str, reload_ok: Callable[[], bool], only: str | None = None
) -> bytes:
    """The text exposition (format 0.0.4) of the collector over ``store``, optionally one target."""
    return render(StoreCollector(store, version=version, reload_ok=reload_ok, only=only).collect())


class CachedExposition:
    """/metrics text with each target's lines cached until that target's state changes.

    The families still come from StoreCollector (one target at a time); only their text is kept.
    A scrape then formats just the targets that ran since the last one: with 200 targets a full
    render costs ~20 ms of CPU, a typical cached one well under 5 ms.
    """

    def __init__(
        self,
        store: ResultStore,
        *,
        version: str,
        reload_ok: Callable[[], bool],
        shards: ShardView | None = None,
        posture: PostureView | None = None,
    ) -> None:
        self.store, self.version, self.reload_ok = store, version, reload_ok
        self.shards, self.posture = shards, posture
        self._cache: dict[str, tuple[int, dict[str, str]]] = {}

    def _lines(self, state: TargetState) -> dict[str, str]:
        cached = self._cache.get(state.name)
        if cached is not None and cached[0] == state.version:
            return cached[1]
        lines = {m.name: _samples(m) for m in _target_families([state])}
        self._cache[state.name] = (state.version, lines)
        return lines

    def render(self) -> bytes:
        states = self.store.states()
        per_target = [self._lines(s) for s in states]
        for gone in set(self._cache) - {s.name for s in states}:
            del self._cache[gone]
        out: list[str] = []
        for family in _target_families([]):  # empty families: names, types, HELP, in order
            out.append(_header(family))
            out.extend(lines[family.name] for lines in per_target)
        collector = StoreCollector(
            self.store,
            version=self.version,
            reload_ok=self.reload_ok,
            shards=self.shards,
            posture=self.posture,
        )
        out.append(render(collector.own_metrics()).decode())
        return "".join(out).encode()


def registry(
    store: ResultStore, *, version: str, reload_ok: Callable[[], bool]
) -> CollectorRegistry:
    """A registry holding the collector, for prometheus_client's own tools (generate_latest)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(store, version=version, reload_ok=reload_ok))
    return reg


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return floatToGoString(value)


def _header(m: Metric) -> str:
    name = m.name + "_total" if m.type == "counter" else m.name
    doc = m.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {m.type}\n"


def _samples(m: Metric) -> str:
    out = []
    for s in m.samples:
        if s.labels:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
            out.append(f"{s.name}{{{labels}}} {_number(s.value)}\n")
        else:
            out.append(f"{s.name} {_number(s.value)}\n")
    return "".join(out)


def render(metrics: Iterable[Metric]) -> bytes:
    """The same text as prometheus_client's generate_latest, several times faster.

    generate_latest sorts and re-escapes every label set per sample; with 200 targets that took
    ~30 ms per scrape, beyond the 20 ms budget. Label values here are target names (validated
    to ``[A-Za-z0-9_.-]``) and fixed enums, so a cheap escape check suffices.
    """
    return "".join(_header(m) + _samples(m) for m in metrics).encode()
