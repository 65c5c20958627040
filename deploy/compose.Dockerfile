# Image for deploy/compose.yaml: the broker (API and worker) on Python 3.11.
# Build from the repository root: docker compose -f deploy/compose.yaml build
FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/broker broker
WORKDIR /opt/broker
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY scheduler_adapters ./scheduler_adapters
COPY kernels ./kernels
COPY migrations ./migrations
RUN pip install --no-cache-dir . && mkdir -p /var/lib/broker && chown broker /var/lib/broker
USER broker
ENV BROKER_DATA_DIR=/var/lib/broker BROKER_LOG_FORMAT=json
EXPOSE 8000
CMD ["brokerctl", "api", "--host", "0.0.0.0", "--port", "8000"]
