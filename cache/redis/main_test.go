package redis_test

import (
	"os"
	"testing"

	"go.uber.org/zap"

	"github.com/bridged/bridged/cache/redis"
)

func TestMain(m *testing.M) {
	// go-redis logs every refused dial to stderr; the fault tests cause plenty on purpose.
	redis.RouteLibraryLog(zap.NewNop())
	os.Exit(m.Run())
}
