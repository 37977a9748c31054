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
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /home/lloom --uid 10001 lloom
COPY --from=build /usr/local/bin/lloom-validator /usr/local/bin/lloom-validator
# Configuration: LLOOM_* environment variables, flags, or a TOML file mounted and named with
# LLOOM_CONFIG=/config/lloom.toml.
ENV LLOOM_LOG=info
# Keys and state (keystore, receipts, nonces) live in the data volume.
VOLUME ["/data"]
USER lloom
EXPOSE 4001 4001/udp
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["lloom-validator", "--version"]
ENTRYPOINT ["lloom-validator", "--data-dir", "/data"]
CMD ["start"]
