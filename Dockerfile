# Static, non-root image for the webhook and the migration Job.
# Pinned: the same Go as go.mod, the same distroless release.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY apis/ apis/
COPY cmd/ cmd/
COPY internal/ internal/
COPY webhooks/ webhooks/
COPY migration/ migration/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/harvester/netconf-migrator/internal/version.Version=${VERSION}" \
      -o /out/netconf-migrator ./cmd/netconf-migrator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/netconf-migrator /usr/local/bin/netconf-migrator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/netconf-migrator"]
