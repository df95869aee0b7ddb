# syntax=docker/dockerfile:1
#
# megawatch images, one Dockerfile, two targets:
#
#   docker build --target collector -t megawatch-collector .   # GPU nodes (NVML, cgo, glibc)
#   docker build -t megawatch .                                # ingest, alerts, demo, tap, loadgen, check-config
#
# Why both are built with cgo: the binary imports github.com/NVIDIA/go-nvml,
# whose package needs cgo (`CGO_ENABLED=0 go build ./cmd/megawatch` fails
# with "undefined: Return"). go-nvml dlopen()s libnvidia-ml.so.1 at run
# time, only when the collector starts NVML, so:
#   - the collector is linked dynamically against glibc and runs on a
#     glibc base (debian:bookworm-slim, which has the ldconfig that the
#     NVIDIA container toolkit's hook runs); the toolkit mounts the host
#     driver's libnvidia-ml.so.1 into the container at run time
#     (NVIDIA_DRIVER_CAPABILITIES=utility), so nothing NVIDIA is in the image;
#   - every other subcommand never calls NVML, so the same source is linked
#     fully statically (-linkmode external -extldflags -static, netgo and
#     osusergo: no NSS, no libc at run time) and runs on distroless/static
#     as nonroot. The linker's warning that dlopen in a static binary needs
#     the build's glibc at run time is expected: that code path is the
#     collector's NVML start, which this image never takes.
# No Docker engine was available where this file was written: the two
# `go build` commands below were run exactly as written (Debian bookworm,
# Go 1.26.8, CGO_ENABLED=1) and each binary ran `megawatch version`.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" GOFLAGS=-mod=readonly
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# Collector: dynamic (glibc), NVML loaded at run time.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/collector/megawatch ./cmd/megawatch && \
    /out/collector/megawatch version
# Everything else: fully static.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -tags netgo,osusergo \
      -ldflags "-s -w -X main.version=${VERSION} -linkmode external -extldflags -static" \
      -o /out/static/megawatch ./cmd/megawatch && \
    /out/static/megawatch version

# --- collector: one per GPU node (DaemonSet with runtimeClassName: nvidia) ---
FROM debian:bookworm-slim AS collector
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && \
    rm -rf /var/lib/apt/lists/* && \
    groupadd --system --gid 65532 megawatch && \
    useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/megawatch --create-home megawatch
# The NVIDIA container toolkit injects libnvidia-ml.so.1 and /dev/nvidia*.
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=utility
COPY --from=build /out/collector/megawatch /usr/local/bin/megawatch
COPY configs/*.yaml /etc/megawatch/
# NVML reads need no root (the device nodes are 0666); the offline buffer
# lives under /var/lib/megawatch (mount a hostPath/volume to keep it).
USER 65532:65532
WORKDIR /var/lib/megawatch
EXPOSE 9401
ENTRYPOINT ["/usr/local/bin/megawatch"]
CMD ["collector", "--config", "/etc/megawatch/collector.yaml", "--buffer-dir", "/var/lib/megawatch/buffer"]

# --- default: ingest, alerts (live page :8080), demo, tap, loadgen, check-config ---
# distroless nonroot is uid/gid 65532; USER is numeric so that Kubernetes
# can check runAsNonRoot (configs/k8s sets runAsUser/fsGroup 65532 to match).
FROM gcr.io/distroless/static-debian12:nonroot AS megawatch
COPY --from=build /out/static/megawatch /usr/local/bin/megawatch
COPY configs/*.yaml /etc/megawatch/
USER 65532:65532
EXPOSE 8080 9102
ENTRYPOINT ["/usr/local/bin/megawatch"]
CMD ["alerts", "--config", "/etc/megawatch/alerts.yaml", "--http-addr", ":8080"]
