// Package logging builds the structured (zapr) logger every command uses,
// with named verbosity levels and fixed keys, so logs read the same everywhere.
package logging

import (
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Verbosity levels for logger.V(n). Configs are only logged at Debug or above.
const (
	Info  = 0
	Debug = 1
	Trace = 2
)

// Fixed log keys.
const (
	KeyObject   = "object"   // namespace/name
	KeyForm     = "form"     // netconf form
	KeyOutcome  = "outcome"  // what was done
	KeyReason   = "reason"   // why, for denials, reports and failures
	KeyDiff     = "diff"     // the change, at Debug
	KeyConfig   = "config"   // a whole config, at Debug only
	KeyDuration = "duration" // how long something took
	KeyCount    = "count"
	KeyFile     = "file"
)

// Options are the logging flags shared by every command.
type Options struct {
	Format    string // json or console
	Verbosity int
}

// New returns a zapr logger writing to w.
func New(w io.Writer, o Options) (logr.Logger, error) {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch o.Format {
	case "", "json":
		enc = zapcore.NewJSONEncoder(ec)
	case "console", "text":
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return logr.Discard(), fmt.Errorf("unknown log format %q (want json or console)", o.Format)
	}
	if o.Verbosity < 0 || o.Verbosity > 10 {
		return logr.Discard(), fmt.Errorf("log verbosity %d out of range 0..10", o.Verbosity)
	}
	// zap levels are negative for logr's V levels.
	level := zap.NewAtomicLevelAt(zapcore.Level(-o.Verbosity))
	// Locked: workers log at once, and the caller's writer (a test's
	// buffer, a user's) need not be safe for concurrent use.
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	return zapr.NewLogger(zap.New(core)), nil
}

// Ref names an object as namespace/name (name alone when cluster-scoped or unknown).
func Ref(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// Cut shortens s to at most max bytes, at a rune boundary, and says how
// many bytes it cut off: messages quoting whole configs are bounded where
// they are logged or shown.
func Cut(s string, max int) (head string, cut int) {
	if len(s) <= max {
		return s, 0
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], len(s) - n
}
