# syntax=docker/dockerfile:1
# A small, non-root image for `listener run` (and `docker run IMAGE migrate`).
#   docker build -t listener .
#   docker run --rm -e DATABASE_URL=... listener migrate
#   docker run -d --stop-timeout 30 -p 8080:8080 --env-file .env listener

# Both stages share one base so compiled wheels match the runtime's Python and libc.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Builder: turns the checkout and every runtime dependency into wheels in /wheels.
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY requirements/run.lock ./requirements/run.lock
# The runtime dependencies at the versions of the lock, each checked against its hash: no
# `[demo]` or `[test]` extras, so no embedded Postgres, moto or pytest in the image.
RUN pip wheel --no-cache-dir --disable-pip-version-check --require-hashes \
        --wheel-dir /wheels -r requirements/run.lock
COPY pyproject.toml README.md ./
COPY listener ./listener
COPY sql ./sql
# The project's own wheel, with sql/ inside as listener/sql.
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

# Runtime: only the installed wheels; no compiler, no sources, no wheel files left behind.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LISTENER_HTTP_PORT=8080 \
    LISTENER_SPOOL_DIR=/var/spool/listener
# The wheels are bind-mounted from the builder for this one step, so they never become a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --no-index --no-deps /wheels/*.whl \
    && groupadd --system --gid 10001 listener \
    && useradd --system --uid 10001 --gid listener --no-create-home --shell /usr/sbin/nologin listener \
    && install -d -o listener -g listener -m 0750 "${LISTENER_SPOOL_DIR}"
# `listener` reads a `.env` file from its working folder; mount one here if you use one.
WORKDIR /srv/listener
# Numeric, so the host and Kubernetes (runAsNonRoot) can tell it is not root.
USER 10001:10001
EXPOSE 8080
# No curl in the slim image: the stdlib asks /healthz; any error or non-2xx answer exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LISTENER_HTTP_PORT', '8080'), timeout=4)"]
# On SIGTERM the listener stops claiming, hands its leases back and exits 0. Give it time:
# `docker stop` waits 10 s by default, so pass --stop-timeout (or stop_grace_period) of 30 s or more.
STOPSIGNAL SIGTERM
# Exec form, not shell form: `listener` itself is PID 1 and receives SIGTERM from `docker stop`.
# A shell-form ENTRYPOINT would make /bin/sh PID 1, which does not forward signals, so the
# listener would be SIGKILLed after the timeout, mid-job. Exec form also lets `docker run IMAGE
# migrate` (or `status`) replace CMD as the sub-command. The listener handles SIGTERM and SIGINT
# itself, as PID 1 must (the kernel applies no default action to PID 1), and starts no children.
ENTRYPOINT ["listener"]
CMD ["run"]
