# syntax=docker/dockerfile:1
# runner-fence with Docker/BuildKit, for those who build their own image:
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/runner-fence:TAG .
# The published images are built without a container engine by scripts/release/build-image.sh
# (.gitlab-ci.yml). Both build the same thing: a static glibc binary (-C target-feature=+crt-static,
# profile dist; arm64 cross-compiled) in the filesystem scripts/release/oci_image.py writes
# (passwd/group with the nonroot user 65532, CA bundle, /tmp, the licence) on no base image.
# tests/release.rs keeps the two in step.

FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
ARG TARGETARCH
# Debian's aarch64 cross gcc links the arm64 binary and compiles ring's C; static glibc for
# arm64 comes from libc6-dev-arm64-cross. Debian's own versions are fine.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
WORKDIR /src
COPY Cargo.toml Cargo.lock LICENSE ./
COPY src ./src
COPY examples ./examples
COPY benches ./benches
COPY scripts/release/oci_image.py ./scripts/release/
# With --target, RUSTFLAGS reach only the target's code, not build scripts or proc macros.
RUN case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; platform=linux/amd64 ;; \
      arm64) triple=aarch64-unknown-linux-gnu; platform=linux/arm64 ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH (amd64, arm64)" >&2; exit 1 ;; \
    esac \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --locked --profile dist --target "$triple" --bin runner-fence \
 && python3 scripts/release/oci_image.py layer --out /rootfs.tar --ca-bundle /etc/ssl/certs/ca-certificates.crt \
      --license LICENSE --binary "$platform=target/$triple/dist/runner-fence" \
 && mkdir /rootfs && tar -x -p -f /rootfs.tar -C /rootfs

FROM scratch
COPY --from=build /rootfs /
ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8443 8080
# The binary alone: each container names its verb first (the chart's Deployment
# `serve`, its uninstall hook `uninstall`); without args the image serves.
ENTRYPOINT ["/usr/local/bin/runner-fence"]
CMD ["serve"]
