"""The exporter's exposition as promtool reads it: a store of sample results, checked by the real tool."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporters.metrics import exposition
from exporters.store import ResultStore
from tests.results import delivered, sample_store


def _flat(text: bytes) -> tuple[list, list]:
    # process_* (CPU seconds, memory) move between two renders; everything else must match.
    families = [
        f
        for f in text_string_to_metric_families(text.decode())
        if not f.name.startswith("process_")
    ]
    meta = sorted((f.name, f.type, f.documentation) for f in families)
    values = sorted(
        (s.name, sorted(s.labels.items()), s.value) for f in families for s in f.samples
    )
    return meta, values


@pytest.fixture
def store() -> ResultStore:
    return sample_store()


def test_full_exposition_passes_promtool(store):
    body = exposition(store, version="9.9", reload_ok=lambda: True)
    proc = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, b"")
    assert b"@" not in body  # labels never carry mail addresses


def test_cached_exposition_matches_prometheus_client_and_follows_changes(store):
    from prometheus_client import generate_latest

    from exporters.metrics import CachedExposition, registry

    cached = CachedExposition(store, version="9.9", reload_ok=lambda: True)

    def reference() -> bytes:
        return generate_latest(registry(store, version="9.9", reload_ok=lambda: True))

    assert _flat(cached.render()) == _flat(reference())
    store.record(delivered("never", 2.5))  # one target changes: only its lines are re-rendered
    store.record_late("a")
    assert _flat(cached.render()) == _flat(reference())
    assert 'relayprobe_success{target="never"} 1' in cached.render().decode()
    store.set_targets([("a", 60.0)])  # reload removed targets: their lines go
    body = cached.render()
    assert _flat(body) == _flat(reference()) and b'target="b"' not in body
    proc = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, b"")
