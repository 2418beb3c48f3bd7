//go:build crds

// The CRDs the test server installs come from the modules that publish them:
// istio.io/api (kubernetes/customresourcedefinitions.gen.yaml) and sigs.k8s.io/gateway-api
// (config/crd/standard). These imports are never built (the crds tag is never set); they
// keep both modules, at the versions go.mod pins, in go.mod through `go mod tidy`, so
// `go mod download -json istio.io/api sigs.k8s.io/gateway-api` here finds their files.
package main

import (
	_ "istio.io/api/networking/v1"
	_ "sigs.k8s.io/gateway-api/apis/v1"
)
