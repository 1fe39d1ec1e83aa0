module github.com/bridged/bridged

go 1.26.8

require (
	github.com/caarlos0/env/v11 v11.4.2
	github.com/coder/websocket v1.8.15
	github.com/golang-jwt/jwt/v5 v5.3.1
	github.com/r3labs/sse/v2 v2.10.0
	go.uber.org/zap v1.28.0
	gopkg.in/cenkalti/backoff.v1 v1.1.0
)

require (
	go.uber.org/multierr v1.10.0 // indirect
	golang.org/x/net v0.62.0 // indirect
)
