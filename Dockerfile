# One image with every binary of the fleet; the container command picks the
# service (guardian, timesquare, command, projector) or the CLI (allies).
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins \
 && mkdir /out \
 && cp target/release/guardian target/release/timesquare target/release/command \
       target/release/projector target/release/allies target/release/allies-store /out/

FROM debian:bookworm-slim
# ca-certificates: the system's roots, for rediss:// to a Redis with a public
# certificate (REDIS_TLS_CA_FILE names a private CA instead).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 allies \
 && mkdir -p /var/lib/allies && chown 10001 /var/lib/allies
COPY --from=build /out/ /usr/local/bin/
# The shipped configuration: the CQRS file and the game rules (every older
# rules version in game-rules.d stays loadable so old games replay).
COPY configs/ /etc/allies/
USER 10001
ENV LOG_FORMAT=json RUST_LOG=info \
    CQRS_CONFIG=/etc/allies/cqrs.yaml \
    TIMESQUARE_RULES=/etc/allies/game-rules.yaml \
    TIMESQUARE_RULES_DIR=/etc/allies/game-rules.d
ENTRYPOINT []
