# Build: docker build -t bridged .        Run the demo: docker run -p 8080:8080 bridged
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/bridged ./cmd/bridged

# Static binary on a minimal, non-root base with CA certificates.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bridged /bridged
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/bridged"]
