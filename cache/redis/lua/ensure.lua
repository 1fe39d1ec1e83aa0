-- ensure: KEYS h m q; ARGV a fresh epoch, idle (ms). A reader is about to watch the stream:
-- create it if it does not exist, so the reader gets a real cursor (<epoch>-0) and can tell
-- later whether anything it never saw was lost; and keep it from idling away meanwhile.
create(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
touch(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
return 1
