# relayprobe container image: the exporter/scheduler (`relayprobe run`) as a non-root user.
# Build: docker build -t relayprobe:$(python3 -c 'import probe; print(probe.__version__)') .
# Run:   docker run -v ./config.yml:/etc/relayprobe/config.yml:ro \
#          -v ./secrets:/etc/relayprobe/secrets:ro -p 9833:9833 relayprobe:<version>

# Both stages use the same base, so the virtualenv's interpreter path stays valid when copied.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Every dependency ships manylinux wheels: no compiler is needed, even in this stage.
RUN python -m venv /opt/relayprobe
COPY pyproject.toml README.md ./
COPY relayprobe/ relayprobe/
COPY probe/ probe/
COPY exporters/ exporters/
COPY nagios/ nagios/
# --no-compile, then compileall: the final root filesystem is read-only, so .pyc files are
# written here once rather than attempted (and failing) at every start.
RUN /opt/relayprobe/bin/pip install --no-compile /src \
    && /opt/relayprobe/bin/python -m compileall -q /opt/relayprobe/lib \
    && /opt/relayprobe/bin/relayprobe --version

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="relayprobe" \
      org.opencontainers.image.description="Synthetic delivery probe for Microsoft 365 SMTP relay" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric UID/GID: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 relayprobe \
    && useradd --system --uid 10001 --gid relayprobe --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin relayprobe \
    && mkdir -p /etc/relayprobe/secrets
COPY --from=build /opt/relayprobe /opt/relayprobe
ENV PATH=/opt/relayprobe/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9833
# Python is already in the image: no curl/wget just for the health check.
# Health under the web config too: HTTPS when /etc/relayprobe/web/tls.crt is mounted, basic auth
# with /etc/relayprobe/web/username and password when mounted (the chart's layout,
# docs/kubernetes.md). It calls its own loopback, so the certificate is not verified.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import base64, os, ssl, sys, urllib.request as u; d = '/etc/relayprobe/web/'; s = 'https' if os.path.exists(d + 'tls.crt') else 'http'; r = u.Request(s + '://127.0.0.1:9833/-/healthy'); f = [d + 'username', d + 'password']; all(map(os.path.exists, f)) and r.add_header('Authorization', 'Basic ' + base64.b64encode(b':'.join(open(n, 'rb').read().strip() for n in f)).decode()); sys.exit(u.urlopen(r, timeout=4, context=ssl._create_unverified_context()).status != 200)"]
ENTRYPOINT ["relayprobe"]
CMD ["run", "--config.file", "/etc/relayprobe/config.yml", "--web.listen-address", ":9833"]
