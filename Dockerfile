# argbridge container image: build the wheel (and a venv from it) in one stage, copy the
# venv into a clean slim runtime that runs as a non-root user.
#
#   docker build -t argbridge .
#   docker run -d --name argbridge -p 8080:8080 \
#       -v argbridge-state:/var/lib/argbridge \
#       -v $PWD/argbridge.toml:/etc/argbridge/argbridge.toml:ro argbridge
#
# State (the LevelDB journal) lives in the /var/lib/argbridge volume; the configuration is
# mounted at /etc/argbridge/argbridge.toml (config/container.toml is baked in as a
# working default). Secrets: mount files (Docker/Kubernetes secrets) and reference them
# as "file:/run/secrets/NAME" in the config, never as plain environment values.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# README.md is optional at build time (the glob lets the COPY succeed without it).
COPY pyproject.toml README.m[d] ./
COPY src ./src
# Build the wheel, then install it with its dependencies into a self-contained venv that
# the runtime stage copies as is (same base image, so the interpreter path matches).
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/argbridge \
    && /opt/argbridge/bin/pip install /wheels/argbridge-*.whl

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/argbridge/bin:$PATH
RUN groupadd --system --gid 10001 argbridge \
    && useradd --system --uid 10001 --gid argbridge --no-create-home \
       --home-dir /var/lib/argbridge --shell /usr/sbin/nologin argbridge \
    && install -d -o argbridge -g argbridge -m 0700 /var/lib/argbridge \
    && install -d -m 0755 /etc/argbridge
COPY --from=build /opt/argbridge /opt/argbridge
COPY config/container.toml /etc/argbridge/argbridge.toml
USER 10001:10001
WORKDIR /var/lib/argbridge
VOLUME ["/var/lib/argbridge"]
# 8080: webhooks, /healthz, /readyz (the public listener); 9464: /metrics (metrics.listener
# = "own" in the container config). The control API is the Unix socket in the volume:
#   docker exec argbridge argbridge status --config /etc/argbridge/argbridge.toml
EXPOSE 8080 9464
# Liveness over HTTP with the standard library (slim images have no curl); any error
# (refused, timeout, non-2xx) exits 1 = unhealthy. Override the URL if the config moves
# the listener.
ENV HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; sys.exit(0 if u.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4).status == 200 else 1)"]
# The daemon drains in-flight deliveries on SIGTERM (runtime.drain_timeout); give it
# time: docker stop --time 30, or stop_grace_period: 30s in compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["argbridge"]
CMD ["run", "--config", "/etc/argbridge/argbridge.toml"]
