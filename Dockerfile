# syntax=docker/dockerfile:1
# One Dockerfile, two images:
#   docker build --target manager  -t vectordb-operator --build-arg VERSION=v0.1.0 .
#   docker build --target embedder -t vectordb-embedder --build-arg VERSION=v0.1.0 .
# Both are static Go binaries on distroless/static (no shell, no libc), running as nonroot (65532).
# test/chart/dockerfile_test.go runs this file's `go build` line itself, so keep it on one RUN.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
# Static (CGO off), reproducible paths (-trimpath), stripped, and stamped with the version.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
    -ldflags "-s -w -X github.com/vectordb-io/vectordb-operator/internal/version.Version=${VERSION}" \
    -o /out/ ./cmd/manager ./cmd/embedder

FROM gcr.io/distroless/static-debian12:nonroot AS embedder
COPY --from=build /out/embedder /embedder
USER 65532:65532
ENTRYPOINT ["/embedder"]

# The manager is last so a plain `docker build .` gives the operator image.
FROM gcr.io/distroless/static-debian12:nonroot AS manager
COPY --from=build /out/manager /manager
USER 65532:65532
EXPOSE 8000 8080 8081
ENTRYPOINT ["/manager"]
