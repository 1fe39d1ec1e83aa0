package redis

import (
	_ "embed"

	goredis "github.com/redis/go-redis/v9"
)

// The Lua scripts. Each starts with a Redis 7 shebang whose flags say what Redis may do with it:
// a script without flags may write, so Redis refuses to start it while the server is over its
// maxmemory (that refusal is how an append is refused, never half done, when Redis is full);
// "allow-oom" lets the scripts that only free or touch a little run anyway; "no-writes" marks the
// read, which then also runs as EVALSHA_RO.
var (
	//go:embed lua/common.lua
	luaCommon string
	//go:embed lua/append.lua
	luaAppend string
	//go:embed lua/ensure.lua
	luaEnsure string
	//go:embed lua/reclaim.lua
	luaReclaim string
	//go:embed lua/read.lua
	luaRead string
	//go:embed lua/claim.lua
	luaClaim string
)

var (
	scriptAppend  = goredis.NewScript("#!lua\n" + luaCommon + luaAppend)
	scriptEnsure  = goredis.NewScript("#!lua flags=allow-oom\n" + luaCommon + luaEnsure)
	scriptReclaim = goredis.NewScript("#!lua flags=allow-oom\n" + luaCommon + luaReclaim)
	scriptRead    = goredis.NewScript("#!lua flags=no-writes\n" + luaRead)
	scriptClaim   = goredis.NewScript("#!lua\n" + luaClaim)
)
