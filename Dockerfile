# syntax=docker/dockerfile:1
# One image for the three Dagster services of docker-compose.yml (code server, webserver, daemon).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/home

# Every runtime dependency ships as a manylinux wheel (confluent-kafka bundles librdkafka,
# psycopg[binary] bundles libpq), so no compiler or -dev package is installed.
RUN python -m venv "$VIRTUAL_ENV" \
 && groupadd --system --gid 10001 dagster \
 && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --shell /usr/sbin/nologin dagster

WORKDIR /opt/dagster/app

# Metadata first, so the dependency layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
COPY billing_domain ./billing_domain
COPY billing_pipelines ./billing_pipelines
RUN pip install . \
 && rm -rf build ./*.egg-info

# Instance config (PostgreSQL storage) and the workspace that points at the gRPC code server.
COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml
COPY deploy/workspace.yaml ./workspace.yaml
# storage/ is a named volume shared by the three services (compute logs, local artifacts); it is
# created here, owned by the runtime user, so the empty volume takes these permissions.
RUN mkdir -p ${DAGSTER_HOME}/storage \
 && chown -R dagster:dagster /opt/dagster

USER dagster:dagster

EXPOSE 3000 4000

# docker-compose.yml sets the command per service; this default serves the code location.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "billing_pipelines.definitions"]
