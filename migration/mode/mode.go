// Package mode names what a run does to each NAD: migrate it, or roll it
// back. It is a leaf: the engine (migration) and the replacement
// (migration/replace), which computes what to create for a backup's mode,
// share the one type without importing each other.
package mode

// Mode is what a run does to each NAD.
type Mode string

const (
	// Migrate rewrites nested and double-encoded configs.
	Migrate Mode = "migrate"
	// Rollback restores the configs a migration rewrote.
	Rollback Mode = "rollback"
)
