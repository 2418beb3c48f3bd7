//go:build tools

// Keeps Traefik's command in this module's requirements: testkit builds it with
// `go build github.com/traefik/traefik/v3/cmd/traefik` (testkit/src/traefik.rs).
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
