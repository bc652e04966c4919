# sealgate container image: a static-ish release build on a distroless, non-root runtime.
# Build:  docker build -t sealgate .
# Run:    docker run -p 8080:8080 -v $PWD/deploy/sealgate.toml:/etc/sealgate/sealgate.toml:ro \
#           -v $PWD/keys:/etc/sealgate/keys:ro -e SEALGATE_OIDC__CLIENT_SECRET=... sealgate
# The image holds no key and no configuration: both are mounted (or the ring is given as
# SEALGATE_KEYS__RING / SEALGATE_KEYS__PRIMARY), see README "Deployment".

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The manifest names the bench target; cargo wants its file present to parse the package.
COPY benches ./benches
RUN cargo build --release --locked --bin sealgate

# distroless/cc: glibc and libgcc only, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sealgate /usr/local/bin/sealgate
USER 65532:65532
ENV SEALGATE_CONFIG=/etc/sealgate/sealgate.toml
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sealgate"]
CMD ["serve"]
