# syntax=docker/dockerfile:1
#
# engine daemon in a container.
#
#   docker build -t engine .
#
#   # a bearer token for /v1/*: required, the daemon listens beyond loopback
#   head -c 32 /dev/urandom | base64 > engine-token
#   chmod 0400 engine-token && sudo chown 10001 engine-token
#
#   docker run -d --name engine --stop-timeout 40 \
#     -v ./policies:/policies:ro \
#     -v engine-state:/state \
#     -v ./engine-token:/run/secrets/engine-token:ro \
#     -e AWS_REGION=us-east-1 \
#     -p 127.0.0.1:9464:9464 \
#     --read-only --tmpfs /tmp \
#     engine
#
# - /policies: the policy directory (*.toml), mounted read-only; the image
#   ships none, so nothing acts on an account until you mount your own.
# - /state: the SQLite journal, engine.lock, plan.key and plugin-cache/
#   (external plugins compiled once; safe to delete). A named volume is
#   created owned by UID 10001; a bind-mounted host directory must be
#   writable by UID 10001 (`chown 10001 DIR`). Keep it: it is what makes a
#   crashed run recoverable and a saved plan applicable only once.
# - /run/secrets/engine-token: with Compose or Swarm, a `secrets:` entry named
#   engine-token lands exactly there. The engine refuses a token file others
#   can read, and Swarm mounts secrets 0444 by default: use the long syntax
#   (`secrets: [{source: engine-token, uid: "10001", mode: 0400}]`).
# - AWS credentials: the task/instance role (ECS task role, EKS IRSA or Pod
#   Identity, EC2 instance profile: IMDSv2 needs a hop limit of 2 to be reached
#   from a container), or AWS_* environment variables, or a read-only mounted
#   credentials file named by AWS_SHARED_CREDENTIALS_FILE (the user has no
#   home directory).
# - --stop-timeout 40 (Compose: stop_grace_period: 40s): `docker stop` sends
#   SIGTERM, and the daemon gives in-flight work --shutdown-timeout (30s) to
#   finish; Docker's default of 10s would SIGKILL it in the middle of an apply.
# - Exit code 78: the policy directory is invalid; a restart policy of
#   `on-failure` will keep failing until the policies are fixed.
# - Any other command: `docker run --rm engine check /policies ...`
#   (the entrypoint is the engine binary; `docker run --rm engine --help`).

# ---------------------------------------------------------------------------
# Build: the engine binary, with the builtin plugins compiled to wasm32-wasip2
# and embedded in it by runtime/wasm/build.rs (a nested cargo build of the
# whole workspace's plugin crates, so the whole workspace is copied in).
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src

# The toolchain rust-toolchain.toml pins, with the plugins' target (a no-op
# when the image already has it). rustfmt and clippy are listed in that file;
# installing them here keeps rustup from fetching them behind cargo's back.
COPY rust-toolchain.toml ./
RUN toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)" \
 && rustup toolchain install "$toolchain" --profile minimal \
      --component rustfmt,clippy --target wasm32-wasip2 \
 && rustc --version && cargo --version

COPY . .

# The release profile keeps line tables (about 170 MB of the binary); drop
# them in the image but keep symbols, so a panic's backtrace still names
# functions. The nested plugin build sets its own profile.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
# --locked: exactly Cargo.lock's versions, or fail. The caches keep the crate
# downloads and the target directory (plugins included) between builds; the
# binary is copied out because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p engine-cli \
 && install -D -m 0755 target/release/engine /out/engine \
 && /out/engine --version

# ---------------------------------------------------------------------------
# Runtime: glibc (the binary links libc, libm, libgcc_s), CA certificates for
# AWS's TLS endpoints (the SDK reads the system store), busybox for the
# health check. Nothing else.
FROM debian:bookworm-slim AS runtime

# HEALTHCHECK client: busybox's wget (the Debian package is about 1 MB, one
# file, no applet links). curl would pull in libcurl and its TLS, LDAP, SSH and
# Kerberos libraries, about 10 MB more to patch, for one plain-HTTP GET on
# loopback. If the engine grows a `healthcheck` subcommand, use it instead
# and drop busybox.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates busybox \
 && rm -rf /var/lib/apt/lists/*

# A fixed, numeric, unprivileged identity (not root, not in any group with
# rights), so volume and secret ownership can be set from the host. No home
# directory, no login shell.
RUN groupadd --system --gid 10001 engine \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin engine \
 && install -d -m 0755 -o root -g root /policies \
 && install -d -m 0700 -o 10001 -g 10001 /state

COPY --from=build /out/engine /usr/local/bin/engine

# The journal and the plan key are private to the engine.
ENV ENGINE_STATE=/state
# External plugins compiled once, kept with the state (safe to delete).
ENV ENGINE_PLUGIN_CACHE=/state/plugin-cache
VOLUME ["/state"]

# The daemon's HTTP endpoint: /healthz (open) and /v1/* (bearer token).
EXPOSE 9464

USER 10001:10001

# 200 "ok" from the daemon itself, over loopback inside the container. The
# start period covers compiling the plugins at start.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["busybox", "wget", "-q", "-T", "4", "-O", "/dev/null", "http://127.0.0.1:9464/healthz"]

# SIGTERM (Docker's default) stops gracefully; SIGHUP (`docker kill -s HUP
# engine`) re-reads /policies.
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/local/bin/engine"]
# 0.0.0.0: reachable through the published port. A listener beyond loopback
# requires a bearer token for /v1/*, hence --token-file. JSON logs, one object
# per line, for whatever collects `docker logs`.
CMD ["daemon", "/policies", \
     "--state", "/state", \
     "--listen", "0.0.0.0:9464", \
     "--token-file", "/run/secrets/engine-token", \
     "--log-format", "json", \
     "--shutdown-timeout", "30s"]

LABEL org.opencontainers.image.title="engine" \
      org.opencontainers.image.description="Keeps AWS IAM credentials compliant with CIS AWS Foundations 1.3 and 1.4" \
      org.opencontainers.image.licenses="Apache-2.0"
