package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"go.uber.org/zap/zapcore"
)

// envPrefix starts every variable bridged reads.
const envPrefix = "BRIDGE_"

// Config is bridged's configuration, read from BRIDGE_* environment variables. It is flat on
// purpose: env.ParseError names the Go field, and nameVariables maps it back to the variable.
// The README's configuration table lists the same variables.
type Config struct {
	Addr              string        `env:"ADDR" envDefault:":8080"`
	InternalAddr      string        `env:"INTERNAL_ADDR"`
	JWTSecret         string        `env:"JWT_SECRET,unset"`
	JWTPublicKeyFile  string        `env:"JWT_PUBLIC_KEY_FILE"`
	JWTJWKSFile       string        `env:"JWT_JWKS_FILE"`
	JWTAudience       string        `env:"JWT_AUDIENCE"`
	JWTIssuer         string        `env:"JWT_ISSUER"`
	JWTLeeway         time.Duration `env:"JWT_LEEWAY" envDefault:"5s"`
	TicketTTL         time.Duration `env:"TICKET_TTL" envDefault:"30s"`
	PublishKey        string        `env:"PUBLISH_KEY,unset"`
	AdminKey          string        `env:"ADMIN_KEY,unset"`
	Store             string        `env:"STORE" envDefault:"memory"`
	RedisURL          string        `env:"REDIS_URL,unset"` // may hold a password: cleared from the environment once read
	RedisPrefix       string        `env:"REDIS_PREFIX" envDefault:"bridged:"`
	RedisTimeout      time.Duration `env:"REDIS_TIMEOUT" envDefault:"2s"`
	MessageTTL        time.Duration `env:"MESSAGE_TTL" envDefault:"2m"`
	StreamMaxMessages int           `env:"STREAM_MAX_MESSAGES" envDefault:"1000"`
	StreamMaxBytes    ByteSize      `env:"STREAM_MAX_BYTES" envDefault:"1MiB"`
	MaxMemory         ByteSize      `env:"MAX_MEMORY" envDefault:"256MiB"`
	MemoryLimit       ByteSize      `env:"MEMORY_LIMIT"` // 0: derived (memlimit.go); GOMEMLIMIT wins over both
	MaxMessageBytes   ByteSize      `env:"MAX_MESSAGE_BYTES" envDefault:"64KiB"`
	MaxBatch          int           `env:"MAX_BATCH" envDefault:"1000"`
	MaxBodyBytes      ByteSize      `env:"MAX_BODY_BYTES" envDefault:"16MiB"`
	LongPollMax       time.Duration `env:"LONGPOLL_MAX" envDefault:"30s"`
	Heartbeat         time.Duration `env:"HEARTBEAT" envDefault:"15s"`
	WriteTimeout      time.Duration `env:"WRITE_TIMEOUT" envDefault:"10s"`
	ReadHeaderTimeout time.Duration `env:"READ_HEADER_TIMEOUT" envDefault:"10s"`
	IdleTimeout       time.Duration `env:"IDLE_TIMEOUT" envDefault:"2m"`
	MaxConnections    int           `env:"MAX_CONNECTIONS" envDefault:"50000"`
	MaxConnsPerUser   int           `env:"MAX_CONNECTIONS_PER_USER" envDefault:"16"`
	ShutdownTimeout   time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	DrainDelay        time.Duration `env:"DRAIN_DELAY" envDefault:"1s"`
	DrainWindow       time.Duration `env:"DRAIN_WINDOW" envDefault:"2s"`
	LogLevel          zapcore.Level `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat         string        `env:"LOG_FORMAT" envDefault:"json"`
	CORSOrigins       []string      `env:"CORS_ORIGINS" envSeparator:","`
	Demo              bool          `env:"DEMO"`
	AdaptiveProcs     bool          `env:"ADAPTIVE_PROCS" envDefault:"true"` // GOMAXPROCS follows the load (procs.go)

	// demoByDefault is set when no BRIDGE_ variable was set at all: `go run ./cmd/bridged`.
	demoByDefault bool
}

// Minimum secret lengths: HS256 wants a key of at least 256 bits (RFC 7518 section 3.2).
const (
	minJWTSecret = 32
	minKey       = 16
)

// Load reads the configuration from environ (KEY=value pairs as os.Environ returns them) and
// checks it. An error names every offending variable.
func Load(environ []string) (Config, error) {
	vars := make(map[string]string, len(environ))
	anySet := false
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
		if strings.HasPrefix(k, envPrefix) {
			anySet = true
		}
	}
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Prefix: envPrefix, Environment: vars})
	if err != nil {
		return cfg, nameVariables(err)
	}
	cfg.demoByDefault = !anySet
	if cfg.demoByDefault {
		cfg.Demo = true
	}
	return cfg, cfg.validate()
}

// nameVariables rewrites env's parse errors, which name Go fields, to name the variables.
func nameVariables(err error) error {
	agg, ok := errors.AsType[env.AggregateError](err)
	if !ok {
		return err
	}
	var out []error
	for _, e := range agg.Errors {
		if pe, ok := errors.AsType[env.ParseError](e); ok {
			if f, ok := reflect.TypeFor[Config]().FieldByName(pe.Name); ok {
				key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
				e = fmt.Errorf("%s%s: %w", envPrefix, key, pe.Err)
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

func (c *Config) validate() error {
	var errs []error
	bad := func(name, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", envPrefix, name, fmt.Sprintf(format, a...)))
	}
	if !c.Demo {
		var missing []string
		if c.JWTSecret == "" && c.JWTPublicKeyFile == "" && c.JWTJWKSFile == "" {
			missing = append(missing, "BRIDGE_JWT_SECRET (or BRIDGE_JWT_PUBLIC_KEY_FILE or BRIDGE_JWT_JWKS_FILE)")
		}
		for _, v := range []struct{ name, value string }{{"PUBLISH_KEY", c.PublishKey}, {"ADMIN_KEY", c.AdminKey}} {
			if v.value == "" {
				missing = append(missing, envPrefix+v.name)
			}
		}
		if len(missing) > 0 {
			errs = append(errs, fmt.Errorf("%s must be set (or BRIDGE_DEMO=true to run a demo that mints its own)", strings.Join(missing, ", ")))
		}
	}
	for _, v := range []struct {
		name, value string
		min         int
	}{{"JWT_SECRET", c.JWTSecret, minJWTSecret}, {"PUBLISH_KEY", c.PublishKey, minKey}, {"ADMIN_KEY", c.AdminKey, minKey}} {
		if v.value != "" && len(v.value) < v.min {
			bad(v.name, "must be at least %d bytes", v.min)
		}
	}
	if c.DrainDelay < 0 || c.DrainWindow < 0 {
		bad("DRAIN_DELAY", "and BRIDGE_DRAIN_WINDOW must not be negative")
	} else if c.DrainDelay+c.DrainWindow >= c.ShutdownTimeout {
		bad("SHUTDOWN_TIMEOUT", "(%s) must exceed BRIDGE_DRAIN_DELAY + BRIDGE_DRAIN_WINDOW (%s)", c.ShutdownTimeout, c.DrainDelay+c.DrainWindow)
	}
	if c.JWTLeeway < 0 || c.JWTLeeway > 5*time.Minute {
		bad("JWT_LEEWAY", "must be between 0 and 5m")
	}
	if _, port, _ := net.SplitHostPort(c.InternalAddr); c.InternalAddr == c.Addr && port != "0" {
		bad("INTERNAL_ADDR", "must differ from BRIDGE_ADDR")
	}
	switch c.Store {
	case "memory":
	case "redis":
		switch u, err := url.Parse(c.RedisURL); {
		case c.RedisURL == "":
			bad("REDIS_URL", "must be set when BRIDGE_STORE=redis (redis://[user:password@]host:port[/db])")
		case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix"):
			// Never repeat the value: it may carry a password.
			bad("REDIS_URL", "is not a redis://, rediss:// or unix:// URL")
		}
		if strings.ContainsAny(c.RedisPrefix, "{}") {
			bad("REDIS_PREFIX", "must not contain { or }: they would become the Redis Cluster hash tag")
		}
	default:
		bad("STORE", "unknown store %q; want memory or redis", c.Store)
	}
	positive := []struct {
		name string
		v    int64
	}{
		{"MESSAGE_TTL", int64(c.MessageTTL)}, {"STREAM_MAX_MESSAGES", int64(c.StreamMaxMessages)},
		{"STREAM_MAX_BYTES", int64(c.StreamMaxBytes)}, {"MAX_MEMORY", int64(c.MaxMemory)},
		{"MAX_MESSAGE_BYTES", int64(c.MaxMessageBytes)}, {"MAX_BATCH", int64(c.MaxBatch)},
		{"MAX_BODY_BYTES", int64(c.MaxBodyBytes)}, {"LONGPOLL_MAX", int64(c.LongPollMax)},
		{"HEARTBEAT", int64(c.Heartbeat)}, {"SHUTDOWN_TIMEOUT", int64(c.ShutdownTimeout)},
		{"REDIS_TIMEOUT", int64(c.RedisTimeout)},
		{"WRITE_TIMEOUT", int64(c.WriteTimeout)}, {"READ_HEADER_TIMEOUT", int64(c.ReadHeaderTimeout)},
		{"IDLE_TIMEOUT", int64(c.IdleTimeout)}, {"TICKET_TTL", int64(c.TicketTTL)},
		{"MAX_CONNECTIONS", int64(c.MaxConnections)}, {"MAX_CONNECTIONS_PER_USER", int64(c.MaxConnsPerUser)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			bad(p.name, "must be greater than zero")
		}
	}
	if c.MaxMessageBytes > c.StreamMaxBytes {
		bad("MAX_MESSAGE_BYTES", "(%d) must not exceed BRIDGE_STREAM_MAX_BYTES (%d)", c.MaxMessageBytes, c.StreamMaxBytes)
	}
	if c.StreamMaxBytes > c.MaxMemory {
		bad("STREAM_MAX_BYTES", "(%d) must not exceed BRIDGE_MAX_MEMORY (%d)", c.StreamMaxBytes, c.MaxMemory)
	}
	if c.Store == "memory" && c.MemoryLimit != 0 && c.MemoryLimit <= c.MaxMemory {
		bad("MEMORY_LIMIT", "(%d) must exceed BRIDGE_MAX_MEMORY (%d), which the store alone may hold; 0 derives it", c.MemoryLimit, c.MaxMemory)
	}
	if c.MaxBatch > 100_000 {
		bad("MAX_BATCH", "must be at most 100000")
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("LOG_FORMAT", "unknown format %q; want json or console", c.LogFormat)
	}
	for _, o := range c.CORSOrigins {
		if o != "*" && !isOrigin(o) {
			bad("CORS_ORIGINS", "%q is not an origin (scheme://host[:port], or *)", o)
		}
	}
	return errors.Join(errs...)
}

// isOrigin reports whether o is a serialised origin: a scheme and host, nothing more.
func isOrigin(o string) bool {
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil
}

// ByteSize is a size in bytes read from text such as "256MiB", "64KiB", "10MB" or "1048576".
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000},
	{"b", 1},
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.ToLower(strings.TrimSpace(string(text)))
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("invalid size %q: want a whole number with an optional unit B, KiB, MiB, GiB, KB, MB or GB", text)
	}
	*b = ByteSize(n * mult)
	return nil
}
