# syntax=docker/dockerfile:1
# lloom-validator: multi-stage build; the runtime image holds only the binary and what it needs.
# Build from the repository root: docker build -f docker/validator.Dockerfile -t lloom/validator .

FROM rust:1.94-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lloom-validator \
    && cp target/release/lloom-validator /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /home/lloom --uid 10001 lloom
COPY --from=build /usr/local/bin/lloom-validator /usr/local/bin/lloom-validator
# Configuration: LLOOM_* environment variables, flags, or a TOML file mounted and named with
# LLOOM_CONFIG=/config/lloom.toml.
ENV LLOOM_LOG=info
# Keys and state (keystore, receipts, nonces) live in the data volume.
VOLUME ["/data"]
# Metrics at :9465/metrics, and /health: 200 while the registry service runs.
ENV LLOOM_METRICS_LISTEN=0.0.0.0:9465
USER lloom
EXPOSE 4001 4001/udp 9465
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["curl", "-fsS", "http://127.0.0.1:9465/health"]
ENTRYPOINT ["lloom-validator", "--data-dir", "/data"]
CMD ["start"]
