# syntax=docker/dockerfile:1
# inkan appliance node as a container image: the inkan binary on Debian slim with
# SoftHSM (a dev/test token, or the default PKCS#11 module), OpenSC (PKCS#11 for
# cards, used by `inkan enroll`) and CA certificates.
#
#   docker build -t inkan .
#   docker run … inkan                       # = inkan server --config /etc/inkan/node.yaml
#   docker run … inkan hsm init-token …      # any other inkan command
#
# docs/operations.md ("Containers") has the volumes, files and flags a node needs;
# deploy/docker/node.yaml is a configuration for it.
#
# The builder and the runtime are the same Debian release, so the cgo binary
# finds the glibc it was linked against. go.mod's `go` line sets the Go version.
ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=bookworm

FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# cgo: the PKCS#11 bindings dlopen the module at run time (gcc and libc6-dev are
# in the golang image).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -buildvcs=auto -o /out/inkan ./cmd/inkan

FROM debian:${DEBIAN_RELEASE}-slim
# curl only for the HEALTHCHECK below: inkan has no probe command, and slim has
# neither curl nor wget.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      softhsm2 opensc ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed, non-root UID/GID (10001), so files on the host (PIN files, a bind-
# mounted data dir) can be given to it. It is in group softhsm to use SoftHSM's
# token directory, /var/lib/softhsm/tokens (mode 2770, root:softhsm).
RUN groupadd --system --gid 10001 inkan \
 && useradd --system --uid 10001 --gid inkan --groups softhsm \
      --home-dir /var/lib/inkan --no-create-home --shell /usr/sbin/nologin inkan \
 && install -d -m 0700 -o inkan -g inkan /var/lib/inkan \
 && install -d -m 0750 -o root -g inkan /etc/inkan
COPY --from=build /out/inkan /usr/local/bin/inkan
USER inkan
WORKDIR /var/lib/inkan
# The node's state (the data dir; must stay mode 0700, owned by 10001) and the
# SoftHSM tokens (its keys). Both must outlive the container.
VOLUME ["/var/lib/inkan", "/var/lib/softhsm/tokens"]
# deploy/examples/node.yaml's ports: cluster (mutual TLS), API (HTTPS),
# OCSP and CRLs (HTTP), health and metrics (HTTP).
EXPOSE 7400 8443 8080 9090
# SIGTERM drains the node; give it time: `docker run --stop-timeout 60` (or
# compose's stop_grace_period: 60s), not Docker's default 10s.
STOPSIGNAL SIGTERM
# /healthz on the metrics listener: 200 while the node runs (also while it joins
# or drains), 503 once its cluster has failed. Expects metrics.listen on port 9090
# of 0.0.0.0 or 127.0.0.1; otherwise override with --health-cmd.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["curl", "-fsS", "--max-time", "3", "-o", "/dev/null", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["inkan"]
CMD ["server", "--config", "/etc/inkan/node.yaml"]
