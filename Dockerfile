# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run from distroless (glibc, CA
# certificates, no shell, non-root). Both binaries ship in the one image:
# `qpien-rest` (the facade, default) and `qpien-sandbox` (the stand-in Qpien).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
# The workspace: the facade at the root, the sandbox crate in sandbox/.
COPY Cargo.toml Cargo.lock build.rs ./
COPY sandbox/Cargo.toml ./sandbox/
COPY src/upstream/graphql ./src/upstream/graphql
RUN mkdir -p sandbox/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > sandbox/src/main.rs \
    && touch src/lib.rs sandbox/src/lib.rs \
    && cargo build --release --locked --bins \
    && rm -rf src/main.rs src/lib.rs sandbox/src
COPY src ./src
COPY sandbox/src ./sandbox/src
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs sandbox/src/main.rs sandbox/src/lib.rs \
    && cargo build --release --locked --bins \
    && mkdir -p /empty-data-dir

# HOST=0.0.0.0 makes the service reachable from outside the container, so in service mode
# it starts only with caller keys (API_KEYS_FILE, e.g. a mounted secret) or with
# ALLOW_ANONYMOUS=true; the image sets neither (README, "Caller keys").
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /src/target/release/qpien-rest /src/target/release/qpien-sandbox /usr/local/bin/
# The change feed's database on one instance (DATA_DIR), writable by the service's user
# under a read-only root: mount a volume here to keep it across containers.
COPY --from=build --chown=65532:65532 /empty-data-dir /var/lib/qpien-rest
ENV HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json \
    DATA_DIR=/var/lib/qpien-rest
VOLUME ["/var/lib/qpien-rest"]
EXPOSE 8080
# Numeric, so a runtime that checks "non-root" without the image's /etc/passwd
# (Kubernetes runAsNonRoot) can tell; 65532 is distroless's `nonroot`.
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/qpien-rest", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/qpien-rest"]
