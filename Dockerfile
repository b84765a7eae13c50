# The vardo-backup image: `vardo-backup serve` on port 8080, in debian:bookworm-slim, as the
# unprivileged user `vardo` (uid 10001).
#
#   DOCKER_BUILDKIT=1 docker build -t vardo-backup .    compiles the engine in rust:1-bookworm
#   scripts/image                                       copies in a binary built on a Debian 12 host
#
# BuildKit builds only the stages the last one needs: `--build-arg BINARY=prebuilt` (what
# scripts/image passes) needs neither the Rust image nor a compiler, only target/image/vardo-backup,
# a binary built on Debian 12 (the release this image runs).
ARG BINARY=compiled

FROM rust:1-bookworm AS compiled
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin vardo-backup \
 && install -D -m 0755 target/release/vardo-backup /out/vardo-backup

# (The wildcard and Cargo.lock keep this stage from failing where no binary was put there: the
# classic builder, which docker-compose 1.29 uses, builds every stage, needed or not.)
FROM scratch AS prebuilt
COPY Cargo.lock target/image/vardo-backu[p] /out/

FROM ${BINARY} AS binary

FROM debian:bookworm-slim
# ca-certificates: S3, R2, B2 over TLS; openssh-client: SFTP targets (`ssh` carries them);
# postgresql-client: pg_dump and psql for the engine's own database (self_backup, restore-self);
# age: to open an encrypted archive by hand; tini: PID 1, passes signals, reaps children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        ca-certificates openssh-client postgresql-client age tini \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/vardo --create-home \
        --shell /usr/sbin/nologin vardo \
 && install -d -o vardo -g vardo -m 0750 /var/lib/vardo/backups
COPY --from=binary /out/vardo-backup /usr/local/bin/vardo-backup
COPY config/vardo.example.yml /etc/vardo/vardo.example.yml

# Every setting can come from the environment (README, "Configuration"); these are the image's.
ENV VARDO_LISTEN=0.0.0.0:8080
WORKDIR /var/lib/vardo
# Unprivileged: Docker is reached through its socket (mount it and add its group, see compose.yaml).
# Only `read_volumes_from_host` needs root, to read the host's /var/lib/docker/volumes.
USER vardo
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["vardo-backup", "healthcheck"]
ENTRYPOINT ["tini", "--", "vardo-backup"]
CMD ["serve"]
