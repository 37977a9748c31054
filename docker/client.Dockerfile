# syntax=docker/dockerfile:1
# lloom-client: multi-stage build; the runtime image holds only the binary and what it needs.
# Build from the repository root: docker build -f docker/client.Dockerfile -t lloom/client .

FROM rust:1.94-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lloom-client \
    && cp target/release/lloom-client /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /home/lloom --uid 10001 lloom
COPY --from=build /usr/local/bin/lloom-client /usr/local/bin/lloom-client
# Configuration: LLOOM_* environment variables, flags, or a TOML file mounted and named with
# LLOOM_CONFIG=/config/lloom.toml.
ENV LLOOM_LOG=info
# Keys and state (keystore, receipts, nonces) live in the data volume.
VOLUME ["/data"]
USER lloom
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["curl", "-fsS", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["lloom-client", "--data-dir", "/data"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
