# syntax=docker/dockerfile:1
# runner-fence: a static binary on distroless, running as a numeric non-root user.

FROM rust:1.95-bookworm AS build
# musl-tools gives musl-gcc for ring's C and assembly; Debian's own version is fine.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY benches ./benches
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin runner-fence \
 && cp target/x86_64-unknown-linux-musl/release/runner-fence /runner-fence

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /runner-fence /usr/local/bin/runner-fence
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["runner-fence", "serve"]
