package main

import (
	"strings"
	"testing"
	"time"
)

var secrets = []string{
	"BRIDGE_JWT_SECRET=0123456789abcdef0123456789abcdef",
	"BRIDGE_PUBLISH_KEY=publish-key-123456",
	"BRIDGE_ADMIN_KEY=admin-key-12345678",
}

func TestLoadDefaultsToDemoWhenNothingIsSet(t *testing.T) {
	cfg, err := Load([]string{"PATH=/bin", "HOME=/root"})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Demo || !cfg.demoByDefault {
		t.Fatal("no BRIDGE_ variable set: want demo mode")
	}
	if cfg.Addr != ":8080" || cfg.Store != "memory" || cfg.MessageTTL != 2*time.Minute || cfg.MaxMemory != 256<<20 ||
		cfg.MaxMessageBytes != 64<<10 || cfg.MaxBatch != 1000 || cfg.LongPollMax != 30*time.Second ||
		cfg.Heartbeat != 15*time.Second || cfg.ShutdownTimeout != 10*time.Second || cfg.StreamMaxMessages != 1000 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestLoadRefusesMissingSecretsNamingThem(t *testing.T) {
	_, err := Load([]string{"BRIDGE_ADDR=:9000", "BRIDGE_PUBLISH_KEY=publish-key-123456"})
	if err == nil {
		t.Fatal("started without secrets")
	}
	for _, name := range []string{"BRIDGE_JWT_SECRET", "BRIDGE_ADMIN_KEY"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	if strings.Contains(err.Error(), "BRIDGE_PUBLISH_KEY,") {
		t.Errorf("error names a variable that is set: %q", err)
	}
	// Set but empty is the same as missing (env falls back to the empty default).
	if _, err := Load(append([]string{"BRIDGE_JWT_SECRET="}, secrets[1:]...)); err == nil || !strings.Contains(err.Error(), "BRIDGE_JWT_SECRET") {
		t.Fatalf("empty secret: %v", err)
	}
}

func TestLoadExplicitDemoMintsSecrets(t *testing.T) {
	cfg, err := Load([]string{"BRIDGE_DEMO=true"})
	if err != nil || !cfg.Demo || cfg.demoByDefault {
		t.Fatalf("BRIDGE_DEMO=true: %+v %v", cfg, err)
	}
}

func TestLoadNamesInvalidVariables(t *testing.T) {
	tests := []struct{ set, name string }{
		{"BRIDGE_MESSAGE_TTL=abc", "BRIDGE_MESSAGE_TTL"},
		{"BRIDGE_MESSAGE_TTL=0s", "BRIDGE_MESSAGE_TTL"},
		{"BRIDGE_MAX_MEMORY=lots", "BRIDGE_MAX_MEMORY"},
		{"BRIDGE_MAX_MEMORY=-5MiB", "BRIDGE_MAX_MEMORY"},
		{"BRIDGE_MAX_BATCH=ten", "BRIDGE_MAX_BATCH"},
		{"BRIDGE_MAX_BATCH=0", "BRIDGE_MAX_BATCH"},
		{"BRIDGE_HEARTBEAT=-1s", "BRIDGE_HEARTBEAT"},
		{"BRIDGE_LOG_LEVEL=loud", "BRIDGE_LOG_LEVEL"},
		{"BRIDGE_LOG_FORMAT=xml", "BRIDGE_LOG_FORMAT"},
		{"BRIDGE_STORE=etcd", "BRIDGE_STORE"},
		{"BRIDGE_DEMO=maybe", "BRIDGE_DEMO"},
		{"BRIDGE_CORS_ORIGINS=https://ok.example,app.example/path", "BRIDGE_CORS_ORIGINS"},
		{"BRIDGE_MAX_MESSAGE_BYTES=2MiB", "BRIDGE_MAX_MESSAGE_BYTES"},
		{"BRIDGE_JWT_SECRET=short", "BRIDGE_JWT_SECRET"},
		{"BRIDGE_INTERNAL_ADDR=:8080", "BRIDGE_INTERNAL_ADDR"},
		{"BRIDGE_JWT_LEEWAY=10m", "BRIDGE_JWT_LEEWAY"},
		{"BRIDGE_MAX_CONNECTIONS=0", "BRIDGE_MAX_CONNECTIONS"},
		{"BRIDGE_MAX_CONNECTIONS_PER_USER=-1", "BRIDGE_MAX_CONNECTIONS_PER_USER"},
		{"BRIDGE_WRITE_TIMEOUT=0s", "BRIDGE_WRITE_TIMEOUT"},
		{"BRIDGE_READ_HEADER_TIMEOUT=x", "BRIDGE_READ_HEADER_TIMEOUT"},
		{"BRIDGE_MEMORY_LIMIT=256MiB", "BRIDGE_MEMORY_LIMIT"}, // not above BRIDGE_MAX_MEMORY
		{"BRIDGE_MEMORY_LIMIT=auto", "BRIDGE_MEMORY_LIMIT"},
	}
	for _, tt := range tests {
		t.Run(tt.set, func(t *testing.T) {
			env := append([]string{tt.set}, secrets...)
			if strings.HasPrefix(tt.set, "BRIDGE_JWT_SECRET") {
				env = append(secrets[1:], tt.set)
			}
			_, err := Load(env)
			if err == nil || !strings.Contains(err.Error(), tt.name) {
				t.Fatalf("Load(%s) = %v; want an error naming %s", tt.set, err, tt.name)
			}
		})
	}
}

func TestLoadReadsValues(t *testing.T) {
	cfg, err := Load(append([]string{
		"BRIDGE_MAX_MEMORY=1GiB", "BRIDGE_MAX_MESSAGE_BYTES=1000", "BRIDGE_LOG_LEVEL=WARN",
		"BRIDGE_CORS_ORIGINS=https://a.example,http://localhost:3000", "BRIDGE_LONGPOLL_MAX=45s",
	}, secrets...))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Demo || cfg.MaxMemory != 1<<30 || cfg.MaxMessageBytes != 1000 || cfg.LogLevel.String() != "warn" ||
		len(cfg.CORSOrigins) != 2 || cfg.LongPollMax != 45*time.Second {
		t.Fatalf("%+v", cfg)
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		bad  bool
	}{
		{in: "0", want: 0}, {in: "512", want: 512}, {in: "64KiB", want: 64 << 10}, {in: "256MiB", want: 256 << 20},
		{in: "1gib", want: 1 << 30}, {in: "10MB", want: 10_000_000}, {in: "7 B", want: 7},
		{in: "", bad: true}, {in: "MiB", bad: true}, {in: "1.5MiB", bad: true}, {in: "-1", bad: true},
		{in: "99999999999GiB", bad: true}, {in: "12XB", bad: true},
	}
	for _, tt := range tests {
		var b ByteSize
		err := b.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.bad || !tt.bad && b != tt.want {
			t.Errorf("ByteSize(%q) = %d, %v", tt.in, b, err)
		}
	}
}

func TestLoadRedis(t *testing.T) {
	cfg, err := Load(append([]string{"BRIDGE_STORE=redis", "BRIDGE_REDIS_URL=redis://:pw@127.0.0.1:6379/2"}, secrets...))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RedisPrefix != "bridged:" || cfg.RedisTimeout != 2*time.Second || cfg.RedisURL == "" {
		t.Fatalf("redis defaults: %+v", cfg)
	}
	tests := []struct {
		name, want string
		env        []string
	}{
		{"no URL", "BRIDGE_REDIS_URL", []string{"BRIDGE_STORE=redis"}},
		{"not a URL", "BRIDGE_REDIS_URL", []string{"BRIDGE_STORE=redis", "BRIDGE_REDIS_URL=http://secret-pw@host"}},
		{"braces in prefix", "BRIDGE_REDIS_PREFIX", []string{"BRIDGE_STORE=redis", "BRIDGE_REDIS_URL=redis://h:1", "BRIDGE_REDIS_PREFIX=a{b}"}},
		{"zero timeout", "BRIDGE_REDIS_TIMEOUT", []string{"BRIDGE_STORE=redis", "BRIDGE_REDIS_URL=redis://h:1", "BRIDGE_REDIS_TIMEOUT=0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(append(tt.env, secrets...))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load: %v, want an error naming %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret-pw") {
				t.Fatalf("the error repeats the URL, which may hold a password: %v", err)
			}
		})
	}
}

func TestLoadAcceptsAPublicKeyInsteadOfASecret(t *testing.T) {
	for _, v := range []string{"BRIDGE_JWT_PUBLIC_KEY_FILE=/etc/bridged/jwt.pem", "BRIDGE_JWT_JWKS_FILE=/etc/bridged/jwks.json"} {
		if _, err := Load(append([]string{v}, secrets[1:]...)); err != nil {
			t.Errorf("%s without BRIDGE_JWT_SECRET: %v", v, err)
		}
	}
}
