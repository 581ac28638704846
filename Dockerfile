# brokerd in a container: non-root, data on a volume.
# Binding 0.0.0.0 inside the container needs a token; give it as a file (a mounted secret):
#   docker run -v "$PWD/brokerd-token:/run/secrets/brokerd-token:ro" \
#       -e BROKERD_TOKEN_FILE=/run/secrets/brokerd-token -p 5673:5673 -v brokerd-data:/data brokerd
# The management page and API (15673) stay on the container's loopback until users
# exist (a token alone does not log anyone in to them): add an administrator with
# brokerctl, then run with -e BROKERD_HTTP_HOST=0.0.0.0 -p 15673:15673.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin brokerd \
    && mkdir -p /data && chown brokerd /data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY brokerd ./brokerd
COPY protocol ./protocol
COPY clients ./clients
RUN pip install . && rm -rf /src

USER brokerd
VOLUME ["/data"]
EXPOSE 5673 9673 15673
ENV BROKERD_HOST=0.0.0.0 \
    BROKERD_DATA_DIR=/data \
    BROKERD_METRICS_HOST=0.0.0.0
STOPSIGNAL SIGTERM
ENTRYPOINT ["brokerd"]
