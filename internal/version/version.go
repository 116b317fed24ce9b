// Package version holds the build's version, stamped by -ldflags.
package version

// Version is set at build time with -X .../internal/version.Version=<v>.
var Version = "dev"
