# Build: docker build -t bridged .
# Run the demo: docker run -p 8080:8080 bridged
# Run for real: docker run -p 8080:8080 -e BRIDGE_JWT_SECRET=… -e BRIDGE_PUBLISH_KEY=… -e BRIDGE_ADMIN_KEY=… bridged
# .ci/run cannot run Docker; cmd/bridged's TestDockerfile lints this file and runs its go build line.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so editing the code does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/bridged ./cmd/bridged

# A static binary on a minimal base: CA certificates and tzdata, no shell, non-root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bridged /usr/local/bin/bridged
USER nonroot:nonroot
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/bridged", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/bridged"]
