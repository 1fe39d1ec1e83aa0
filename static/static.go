// Package static holds the files bridged serves to browsers, embedded in the binary: the demo
// page and its script and style, and the browser client bridge.js with its types.
package static

import "embed"

// FS holds the files of this directory that browsers load.
//
//go:embed *.html *.js *.d.ts *.css *.svg
var FS embed.FS
