# syntax=docker/dockerfile:1
# The jupyterhub-istio-proxy image:
#   docker build --build-arg JHUB_PROXY_COMMIT=$(git rev-parse HEAD) -t jupyterhub-istio-proxy .
#
# Runtime: gcr.io/distroless/cc (glibc, no shell, no package manager), not a static musl
# binary on scratch: the build is then the plain `cargo build --release` that the README and
# CI (.ci/check-release-binary) run and test, with no musl target or C cross-toolchain for
# ring and mimalloc (the binary's allocator, built from C) to set up. Builder and runtime are
# both Debian 12, so their glibc matches.

FROM docker.io/library/rust:1.89-slim-bookworm AS build
WORKDIR /src
COPY . .
# The commit for --version; build.rs falls back to git, which .dockerignore leaves out.
ARG JHUB_PROXY_COMMIT=unknown
ENV JHUB_PROXY_COMMIT=${JHUB_PROXY_COMMIT}
# The same command as .ci/check-release-binary, which checks that this binary starts.
# The binary answers to configurable-http-proxy's name too (a symbolic link, as
# .ci/check-release-binary runs it), so that Zero to JupyterHub's proxy pod, whose command is
# `configurable-http-proxy ...`, runs it with only its image changed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p jhub-proxy-bin --bin jupyterhub-istio-proxy \
    && mkdir /out && cp target/release/jupyterhub-istio-proxy /out/jupyterhub-istio-proxy \
    && ln -s jupyterhub-istio-proxy /out/configurable-http-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
# A folder's contents: the link is copied as a link. Both names are on distroless's PATH.
COPY --from=build /out/ /usr/local/bin/
# distroless's nonroot user, by number so that runAsNonRoot can verify it. The binary writes
# no files: it runs with a read-only root filesystem.
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/jupyterhub-istio-proxy"]
