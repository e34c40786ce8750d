"""The status page as a NOC engineer sees it: the real daemon, opened in headless Chromium."""

# The daemon probes the local mail system; Chromium is driven over the DevTools protocol with
# aiohttp's websocket client.
#
# Targets, one per state (docs/exporter.md, "Status page"):
#
# - ``ok``: a plain submission into the inbox.
# - ``slow``: to ``inbox+delay3@probe.test`` (the testbed delivers it 3 s late) with thresholds
#   warning 1 s, critical 30 s: delivered, ``latency_warning``, status WARNING.
# - ``rejected``: to ``inbox+reject@probe.test``: ``550 5.1.1`` at RCPT, CRITICAL, nothing sent
#   (placement "not sent"); backs off after three rejections in a row.
# - ``localca``: its ``smtp.ca_file`` is a copy of the test CA that the test deletes once the
#   daemon has loaded the config: a file readable at load time and gone since is this host's
#   problem, not the relay's, so the run ends ``internal_error`` with status UNKNOWN
#   (docs/architecture.md, "Reasons"). A wrong mailbox password would give ``imap_auth_failed``,
#   which is CRITICAL, not UNKNOWN.
# - ``misfiled``: a junk folder named ``<script>alert(1)</script>`` (target names cannot hold
#   ``<``: probe/config/fields.py ``Name``): ``folder_missing``, CRITICAL, a configuration-class
#   reason, so it backs off, and its message carries the markup the page must escape.
# - ``manual``: interval 1 h, so after its first run only "probe now" runs it.

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporters.http import build_app
from exporters.store import HISTORY_LENGTH, ResultStore, TargetSpec
from exporters.webconfig import WebConfig
from probe import (
    Arrival,
    AuthVerdict,
    CheckResult,
    HeaderVerdict,
    Hop,
    ProbeResult,
    Reason,
    SmtpReceipt,
    SpamVerdict,
    Stage,
    Status,
    Timings,
)
from tests.system.daemon_helpers import (
    Daemon,
    free_port,
    http,
    running_daemon,
    value,
    wait_for,
)
from tests.system.probe_configs import target_dict

CHROMIUM = "/usr/bin/chromium"
SCRIPT = "<script>alert(1)</script>"
#: Worst first, as the page orders them (probe.Status.severity).
SEVERITY = {"critical": 3, "unknown": 2, "warning": 1, "ok": 0}
EXPECTED = {
    "ok": "ok",
    "slow": "warning",
    "rejected": "critical",
    "localca": "unknown",
    "misfiled": "critical",
    "manual": "ok",
}


def artefacts(tmp_path: Path) -> Path:
    """Where screenshots go: RELAYPROBE_ARTIFACTS (CI keeps them) or the test's tmp dir."""
    out = Path(os.environ.get("RELAYPROBE_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


# -- headless Chromium over the DevTools protocol -----------------------------------------------
class Browser:
    """One headless Chromium process; ``tab()`` opens a page driven over its websocket."""

    def __init__(self, tmp: Path) -> None:
        self.profile = tmp / "profile"
        self.log = tmp / "chromium.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    f"--user-data-dir={self.profile}",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                    "about:blank",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        found = wait_for("Chromium's DevTools endpoint", self._endpoint, 30)
        self.http = f"http://{found}"

    def _endpoint(self) -> str | None:
        assert self.proc.poll() is None, f"chromium exited: {self.log.read_text()}"
        m = re.search(r"DevTools listening on ws://([\d.]+:\d+)/", self.log.read_text())
        return m.group(1) if m else None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @contextlib.asynccontextmanager
    async def tab(self, width: int = 1366, height: int = 768) -> AsyncIterator[Tab]:
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{self.http}/json/new?about:blank") as resp:
                info = await resp.json()
            ws = await session.ws_connect(info["webSocketDebuggerUrl"], max_msg_size=0)
            tab = Tab(ws)
            try:
                await tab.call("Page.enable")
                await tab.size(width, height)
                yield tab
            finally:
                tab.reader.cancel()
                await ws.close()
                async with session.get(f"{self.http}/json/close/{info['id']}") as resp:
                    await resp.read()


class Tab:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = 0
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.ids] = future
        await self.ws.send_str(json.dumps({"id": self.ids, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 60)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    async def size(self, width: int, height: int) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def navigations(self) -> list[str]:
        """URLs the main frame navigated to, in order (the test's and the page's own)."""
        return [
            e["params"]["frame"]["url"]
            for e in self.events
            if e["method"] == "Page.frameNavigated" and not e["params"]["frame"].get("parentId")
        ]

    async def wait_loaded(self, since: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not any(e["method"] == "Page.loadEventFired" for e in self.events[since:]):
                await asyncio.sleep(0.05)

    async def goto(self, url: str) -> None:
        mark = len(self.events)
        await self.call("Page.navigate", url=url)
        await self.wait_loaded(mark)

    async def js(self, expression: str) -> Any:
        got = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in got:
            raise RuntimeError(f"{expression}: {got['exceptionDetails']}")
        return got["result"].get("value")

    async def html(self) -> str:
        """The document's markup read through the DOM domain (works with JavaScript off)."""
        root = await self.call("DOM.getDocument", depth=0)
        got = await self.call("DOM.getOuterHTML", nodeId=root["root"]["nodeId"])
        return got["outerHTML"]

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the first element matching ``selector``."""
        root = await self.call("DOM.getDocument", depth=0)
        node = await self.call(
            "DOM.querySelector", nodeId=root["root"]["nodeId"], selector=selector
        )
        assert node["nodeId"], f"nothing matches {selector}"
        await self.call("DOM.scrollIntoViewIfNeeded", nodeId=node["nodeId"])
        quad = (await self.call("DOM.getBoxModel", nodeId=node["nodeId"]))["model"]["content"]
        x, y = sum(quad[0::2]) / 4, sum(quad[1::2]) / 4
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def screenshot(self, path: Path, *, full: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full:
            params["captureBeyondViewport"] = True
        shot = await self.call("Page.captureScreenshot", **params)
        path.write_bytes(base64.b64decode(shot["data"]))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():  # tests/run.sh installs it: missing is a broken setup
        pytest.fail(f"{CHROMIUM} is missing: run bash tests/tools/install-browser.sh")
    b = Browser(tmp_path_factory.mktemp("chromium"))
    try:
        yield b
    finally:
        b.close()


# -- the daemon on the local mail system --------------------------------------------------------
def config_doc(tb: Any, instance: str, ca_copy: Path) -> dict:
    def target(name: str, interval: str = "3s", **over: Any) -> dict:
        return target_dict(tb, name, interval=interval, jitter=0, **over)

    slow = target("slow", "4s", rcpt_to="inbox+delay3@probe.test", timeout="30s")
    slow["thresholds"] = {"warning": "1s", "critical": "30s"}
    localca = target("localca", smtp={"ca_file": str(ca_copy)})
    misfiled = target("misfiled", "2s", junk_folders=[SCRIPT])
    targets = [
        target("ok"),
        slow,
        target("rejected", rcpt_to="inbox+reject@probe.test"),
        localca,
        misfiled,
        target("manual", "1h"),
    ]
    return {"instance": instance, "tag_secret": "${TB_TAG_SECRET}", "targets": targets}


@pytest.fixture(scope="module")
def daemon(testbed, tmp_path_factory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("statuspage")
    ca_copy = tmp / "relay-ca.crt"
    shutil.copyfile(testbed.ca_file, ca_copy)
    instance = f"test-page-{os.getpid()}-{int(time.time()) % 100000}"
    with running_daemon(
        testbed,
        tmp,
        config_doc(testbed, instance, ca_copy),
        "--shutdown.grace",
        "5",
        "--smtp.max-messages-per-minute",
        "300",
    ) as d:
        ca_copy.unlink()  # loaded and checked with the config; gone for every run from now on

        def settled() -> bool:
            results = d.results()
            return all(
                name in results and results[name]["status"] == state
                for name, state in EXPECTED.items()
            ) and (results["misfiled"]["backoff_seconds"] > 0)

        wait_for("every target in its state (misfiled backing off)", settled, 60)
        yield d


def runs(d: Daemon, name: str) -> float:
    return value(d.metrics(), "relayprobe_runs_total", target=name) or 0


ROWS_JS = """[...document.querySelectorAll('article.target')].map(r => ({
  name: r.dataset.name, state: r.dataset.state, runs: +r.dataset.runs,
  cls: r.className, badge: r.querySelector('.badge').textContent.trim(),
  badgeColour: getComputedStyle(r.querySelector('.badge')).backgroundColor,
  marks: r.querySelectorAll('svg.history .mark').length,
  age: r.querySelector('.age').textContent, ageTitle: (r.querySelector('.age time') || {}).title,
  text: r.innerText,
  right: Math.max(...[...r.querySelectorAll('*')].map(e => e.getBoundingClientRect().right)),
  button: r.querySelector('form[method=post] button').getBoundingClientRect().right,
}))"""


# -- the tests ----------------------------------------------------------------------------------
@pytest.mark.testbed
@pytest.mark.parametrize("width,height", [(1366, 768), (1920, 1080)])
async def test_page_fits_the_screen_worst_first_each_state_its_own_look(
    daemon, browser, tmp_path, width, height
):
    async with browser.tab(width, height) as tab:
        await tab.goto(f"{daemon.url}/?refresh=0")
        shot = await tab.screenshot(artefacts(tmp_path) / f"status-page-{width}x{height}.png")
        print(f"status page screenshot: {shot}")
        full = await tab.screenshot(
            artefacts(tmp_path) / f"status-page-{width}-full.png", full=True
        )
        print(f"status page screenshot (whole page): {full}")
        scroll_width, inner_width = await tab.js(
            "[document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert scroll_width <= inner_width == width  # no horizontal scrolling
        rows = await tab.js(ROWS_JS)
        banner = await tab.js(
            "(b => ({cls: b.className, text: b.innerText}))(document.querySelector('.banner'))"
        )
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(EXPECTED)
    for name, state in EXPECTED.items():
        row = by_name[name]
        assert row["state"] == state and f"state-{state}" in row["cls"].split()
        assert row["badge"] == state.upper()  # the state in words, not only in colour
        assert row["right"] <= width and row["button"] <= width  # "probe now" on screen
        assert re.fullmatch(r"\d+ (s|min) ago", row["age"]), row["age"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row["ageTitle"])
        assert "next run" in row["text"]
    # Every state has its own colour as well as its own word.
    colours = {state: by_name[name]["badgeColour"] for name, state in EXPECTED.items()}
    assert len(set(colours.values())) == 4, colours
    # Worst first, then by name.
    keys = [(-SEVERITY[r["state"]], r["name"]) for r in rows]
    assert keys == sorted(keys), [r["name"] for r in rows]
    assert [r["name"] for r in rows][:2] == ["misfiled", "rejected"]
    # The banner: counts per state, the worst state's colour, the newest result's age.
    assert "banner-critical" in banner["cls"]
    assert "3 of 6 failing" in banner["text"]  # misfiled, rejected, localca
    for words in ("2 critical", "1 unknown", "1 warning", "2 ok"):
        assert words in banner["text"]
    assert re.search(r"newest result \d+ s ago", banner["text"])
    # The reasons, the schedule and where nothing was sent.
    assert "latency_warning" in by_name["slow"]["text"]
    assert "latency" in by_name["slow"]["text"]  # its failed check
    rejected = by_name["rejected"]["text"]
    assert "smtp_rejected" in rejected and "550 5.1.1" in rejected
    assert "placement not sent" in rejected and "missing" not in rejected
    assert "Remedy:" in rejected
    assert "internal_error" in by_name["localca"]["text"]
    assert re.search(r"backoff \d+ (s|min)", by_name["misfiled"]["text"])


@pytest.mark.testbed
async def test_history_strip_has_one_mark_per_run_and_a_sparkline_with_thresholds(daemon, browser):
    before = {name: runs(daemon, name) for name in EXPECTED}
    async with browser.tab() as tab:
        await tab.goto(f"{daemon.url}/?refresh=0")
        rows = await tab.js(ROWS_JS)
        slow = await tab.js(
            """(s => ({lines: [...s.querySelectorAll('line.threshold')].map(l => l.classList[1]),
                 path: (s.querySelector('path.spark') || {getAttribute: () => ''}).getAttribute('d'),
                 dots: s.querySelectorAll('.spark-dot').length,
                 label: s.getAttribute('aria-label')}))(
                document.querySelector('article[data-name=slow] svg.history'))"""
        )
    after = {name: runs(daemon, name) for name in EXPECTED}
    for row in rows:
        name = row["name"]
        assert row["marks"] == min(row["runs"], HISTORY_LENGTH), row
        assert before[name] <= row["runs"] <= after[name]
    assert by_state(rows, "ok")  # sanity: rows were read
    assert slow["lines"] == ["threshold-critical", "threshold-warning"]
    assert slow["path"].startswith("M") and slow["dots"] >= 1
    assert slow["label"].startswith("last ") and "warning" in slow["label"]
    # A run that delivered nothing leaves no point: the rejected target has marks, no line.
    history = daemon.results()["rejected"]["history"]
    assert history and all(not e["sent"] and e["delivery_seconds"] is None for e in history)


def by_state(rows: list[dict], state: str) -> list[str]:
    return [r["name"] for r in rows if r["state"] == state]


@pytest.mark.testbed
async def test_page_refreshes_itself(daemon, browser):
    async with browser.tab() as tab:
        await tab.goto(f"{daemon.url}/?refresh=2")
        first = await tab.js("+document.querySelector('article[data-name=ok]').dataset.runs")
        assert await tab.js("document.querySelector('meta[http-equiv=refresh]').content") == "2"
        deadline = time.monotonic() + 25
        now = first
        while now <= first:  # the test never reloads: the page does
            assert time.monotonic() < deadline, "no new result appeared on the page"
            await asyncio.sleep(0.5)
            with contextlib.suppress(RuntimeError):  # evaluated mid-navigation
                now = await tab.js("+document.querySelector('article[data-name=ok]').dataset.runs")
        own = tab.navigations()
    assert len(own) >= 2 and all(u.endswith("/?refresh=2") for u in own)
    status, body, _ = http(f"{daemon.url}/")
    assert status == 200 and '<meta http-equiv="refresh" content="10">' in body


@pytest.mark.testbed
async def test_page_works_with_javascript_disabled(daemon, browser, tmp_path):
    async with browser.tab(1366, 768) as tab:
        await tab.call("Emulation.setScriptExecutionDisabled", value=True)
        await tab.goto(f"{daemon.url}/?refresh=2")
        html = await tab.html()
        rows = re.findall(r'<article class="target state-(\w+)"[^>]*data-name="([^"]+)"', html)
        assert {name: state for state, name in rows} == EXPECTED
        first = int(re.search(r'data-name="ok" data-state="ok" data-runs="(\d+)"', html)[1])
        deadline = time.monotonic() + 25
        while True:  # the meta refresh needs no script
            await asyncio.sleep(0.5)
            html = await tab.html()
            m = re.search(r'data-name="ok" data-state="ok" data-runs="(\d+)"', html)
            if m and int(m[1]) > first:
                break
            assert time.monotonic() < deadline, "the page did not refresh with JavaScript off"
        await tab.goto(f"{daemon.url}/target/slow")
        detail = await tab.html()
        shot = await tab.screenshot(artefacts(tmp_path) / "target-slow-nojs.png", full=True)
        print(f"detail view screenshot (JavaScript off): {shot}")
    assert len(tab.navigations()) >= 3
    assert "<script" not in html.lower()
    # The detail view: the full last result, the verdict headers read, hops, the history table.
    assert "Verdict headers read" in detail and "latency_warning" in detail
    assert re.search(r"<th>SPF</th><td>pass</td>", detail)
    assert re.search(r"<th>DKIM</th><td>pass", detail) and re.search(
        r"<th>DMARC</th><td>pass", detail
    )
    assert 'class="hops"' in detail  # the testbed's Received hops
    marks = len(re.findall(r'<rect class="mark ', detail))
    table_rows = len(re.findall(r'<tr class="row-\w+"><td class="nowrap">', detail))
    assert marks == table_rows >= 1


@pytest.mark.testbed
async def test_probe_now_is_a_post_that_answers_with_the_result_for_people(daemon, browser):
    wait_for("manual's first run", lambda: runs(daemon, "manual") == 1, 30)
    status, body, headers = http(f"{daemon.url}/target/manual/probe")
    assert status == 405 and headers["Allow"] == "POST"
    assert '<form method="post" action="../../target/manual/probe">' in body
    request = urllib.request.Request(
        f"{daemon.url}/target/manual/probe",
        method="POST",
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("a cross-site form was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 403
    time.sleep(3)  # a run the GET or the cross-site POST had started would be counted by now
    assert runs(daemon, "manual") == 1  # neither sent mail
    async with browser.tab() as tab:
        await tab.call("Emulation.setScriptExecutionDisabled", value=True)  # a plain HTML form
        await tab.goto(f"{daemon.url}/target/manual")
        mark = len(tab.events)
        await tab.click("form[method=post] button")
        await tab.wait_loaded(mark, 60)
        page = await tab.html()
        url = tab.navigations()[-1]
    assert url == f"{daemon.url}/target/manual/probe"
    body = page[page.find("<body") :]
    assert "Probe of manual: OK" in body and "delivered to INBOX" in body, body[:1500]
    assert "# HELP" not in page and "relayprobe_success" not in page  # not metrics text
    assert "Verdict headers read" in page
    assert runs(daemon, "manual") == 2
    # GET /probe?target= stays the Prometheus-format endpoint.
    status, body, _ = http(f"{daemon.url}/probe?target=nope")
    assert status == 400 and "configured:" in body


@pytest.mark.testbed
async def test_every_value_is_escaped_in_the_live_page(daemon, browser):
    message = daemon.results()["misfiled"]["message"]
    assert SCRIPT in message  # the IMAP server's answer names the folder
    status, body, headers = http(f"{daemon.url}/")
    assert status == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and SCRIPT not in body
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none': no JS
    async with browser.tab() as tab:
        for path in ("/", "/?wall=1", "/target/misfiled"):
            await tab.goto(f"{daemon.url}{path}")
            assert await tab.js("document.scripts.length") == 0
            text = await tab.js("document.body.innerText")
            if path != "/?wall=1":
                assert SCRIPT in text  # shown as text, exactly as the server said it


@pytest.mark.testbed
async def test_wall_screen_mode_shows_summary_and_tiles_only(daemon, browser, tmp_path):
    async with browser.tab(1920, 1080) as tab:
        await tab.goto(f"{daemon.url}/?wall=1&refresh=0")
        shot = await tab.screenshot(artefacts(tmp_path) / "status-page-wall-1920x1080.png")
        print(f"wall screen screenshot: {shot}")
        got = await tab.js(
            """({tiles: [...document.querySelectorAll('.tile')].map(t => t.dataset.state),
                 rows: document.querySelectorAll('article.target').length,
                 buttons: document.querySelectorAll('button').length,
                 remedies: document.querySelectorAll('.remedy').length,
                 font: parseFloat(getComputedStyle(document.body).fontSize),
                 overflow: document.documentElement.scrollWidth > innerWidth})"""
        )
    assert sorted(got["tiles"]) == sorted(EXPECTED.values())
    assert got["tiles"] == sorted(got["tiles"], key=lambda s: -SEVERITY[s])
    assert got["rows"] == got["buttons"] == got["remedies"] == 0
    assert got["font"] >= 20 and not got["overflow"]


@pytest.mark.testbed
def test_api_results_carry_history_and_schedule(daemon):
    results = daemon.results()
    assert set(results) == set(EXPECTED)
    now = dt.datetime.now(dt.UTC)
    for r in results.values():
        assert 1 <= len(r["history"]) <= HISTORY_LENGTH and r["runs"] >= len(r["history"])
        last = r["history"][-1]  # oldest first: the last entry is the last result
        assert (last["status"], last["finished_at"]) == (r["status"], r["finished_at"])
        assert {"success", "stage", "reason", "sent", "placement", "delivery_seconds"} <= set(last)
        assert dt.datetime.fromisoformat(r["next_run_at"]) > now - dt.timedelta(seconds=30)
    assert results["misfiled"]["backoff_seconds"] > 0 and results["misfiled"]["backoff_failures"]
    assert results["ok"]["backoff_seconds"] == 0 and results["ok"]["backoff_failures"] == 0
    assert results["manual"]["interval_seconds"] == 3600 and results["ok"]["interval_seconds"] == 3
    assert results["rejected"]["history"][-1]["sent"] is False
    assert results["ok"]["history"][-1]["sent"] is True
    status, body, _ = http(f"{daemon.url}/api/results?target=ok&history=2")
    only = json.loads(body)["results"]
    assert status == 200 and [r["target"] for r in only] == ["ok"]
    assert len(only[0]["history"]) == min(2, only[0]["runs"])
    status, body, _ = http(f"{daemon.url}/api/results?history=0")
    assert all(r["history"] == [] for r in json.loads(body)["results"])
    assert http(f"{daemon.url}/target/nope")[0] == 404


# -- in-process: every field of a result with markup in it, on every page ------------------------
class _Scheduler:
    config = None
    running = True
    instance = SCRIPT  # shown in the page title and header: escaped like every other value

    def __init__(self, result: ProbeResult, store: ResultStore) -> None:
        self.result, self.store, self.calls = result, store, 0

    def next_run(self, name: str) -> dt.datetime | None:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=42)

    async def run_now(self, name: str) -> ProbeResult:
        self.calls += 1
        self.store.record(self.result)
        return self.result


class _Daemon:
    def __init__(self, store: ResultStore, result: ProbeResult) -> None:
        self.store, self.scheduler = store, _Scheduler(result, store)
        self.web, self.exposition, self.version = WebConfig(), None, SCRIPT
        self.reload_ok, self.reload_errors = False, [f"relayprobe.yml: {SCRIPT}"]


def _hostile_result(name: str) -> ProbeResult:
    x = SCRIPT
    now = dt.datetime.now(dt.UTC)
    return ProbeResult(
        target=name,
        status=Status.CRITICAL,
        stage=Stage.DONE,
        reason=Reason.JUNKED,
        message=f"message {x}",
        remedy=f"remedy {x}",
        started_at=now,
        timings=Timings(0.1, 0.1, 0.1, 0.1, 1.5, 2.0),
        smtp=SmtpReceipt("relay", 587, f"tls {x}", f"cipher {x}", now, 250, f"reply {x}", x),
        arrival=Arrival(folder=f"folder {x}", placement="junk"),
        verdict=HeaderVerdict(
            auth=AuthVerdict(x, x, x, x, x, x, f"source {x}", [x, x]),
            spam=SpamVerdict(5, 1, x, x, x),
            hops=[Hop(f"by {x}", f"from {x}", now, 0.5)],
        ),
        probe_id=x,
        checks=[CheckResult("placement", False, Status.CRITICAL, Reason.JUNKED, f"check {x}")],
    )


async def test_every_value_is_html_escaped_on_every_page():
    """Markup in every string a result can carry (a hostile or broken relay or receiver writes
    most of them) comes out as text on every page; no page holds a single script element."""
    store = ResultStore()
    name = "a-target"
    store.set_targets([TargetSpec(name, 60.0, (("warning", 1.0), ("critical", 30.0)), ())])
    result = _hostile_result(name)
    store.record(result)
    store.set_backoff(name, 120.0, 2)
    daemon = _Daemon(store, result)
    server = web.AppRunner(build_app(daemon), access_log=None)  # type: ignore[arg-type]
    await server.setup()
    port = free_port()
    await web.TCPSite(server, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    pages = {}
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/", "/?wall=1", f"/target/{name}", f"/target/{name}/probe", "/target/x"):
                async with session.get(base + path) as resp:
                    pages[path] = (resp.status, await resp.text(), resp.headers)
            async with session.post(f"{base}/target/{name}/probe") as resp:
                pages["POST"] = (resp.status, await resp.text(), resp.headers)
            cross = {"Origin": "http://elsewhere.example"}
            async with session.post(f"{base}/target/{name}/probe", headers=cross) as resp:
                pages["cross-site"] = (resp.status, await resp.text(), resp.headers)
    finally:
        await server.cleanup()
    assert [pages[p][0] for p in pages] == [200, 200, 200, 405, 404, 200, 403]
    assert daemon.scheduler.calls == 1  # the GET and the cross-site POST ran nothing
    for path, (_, text, headers) in pages.items():
        assert "<script" not in text.lower(), path
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert headers["Content-Type"].startswith("text/html")
    for path in ("/", f"/target/{name}", "POST"):
        assert "message &lt;script&gt;alert(1)&lt;/script&gt;" in pages[path][1]
    detail = pages[f"/target/{name}"][1]
    for field in ("remedy", "reply", "cipher", "folder", "source", "by", "from", "check"):
        assert f"{field} &lt;script&gt;" in detail, field
    assert "relayprobe.yml: &lt;script&gt;" in pages["/"][1]  # the reload error in the banner
    assert "Probe of a-target: CRITICAL" in pages["POST"][1]


def test_the_documented_screenshot_command_writes_a_png(tmp_path: Path) -> None:
    """README's regeneration command, as documented (output moved to tmp_path)."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    (command,) = re.findall(r"`\.venv/bin/python (tests/tools/status_page_screenshot\.py)`", readme)
    out = tmp_path / "status-page.png"
    proc = subprocess.run(
        [sys.executable, command, str(out)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
