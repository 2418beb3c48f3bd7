package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// gatewayAPIScenario is a Gateway of class istio, an HTTPRoute for /user/alice to a pod IP
// behind a selector-less Service, one for /hub to a Service with a base path, and one to a
// Service in another namespace that no ReferenceGrant opens.
const gatewayAPIScenario = `{"scenarios": [{"objects": [
 {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
  "metadata": {"name": "istio", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"controllerName": "istio.io/gateway-controller"}},
 {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
  "metadata": {"name": "jupyterhub", "namespace": "istio-system", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"gatewayClassName": "istio", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP",
   "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
 {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
  "metadata": {"name": "alice", "namespace": "hub", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"parentRefs": [{"name": "jupyterhub", "namespace": "istio-system"}],
   "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/user/alice"}}],
    "backendRefs": [{"name": "alice", "port": 8888}]}]}},
 {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
  "metadata": {"name": "hub", "namespace": "hub", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"parentRefs": [{"name": "jupyterhub", "namespace": "istio-system"}],
   "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/hub"}}],
    "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/base/hub"}}}],
    "backendRefs": [{"name": "hub", "port": 8081}]}]}},
 {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
  "metadata": {"name": "elsewhere", "namespace": "hub", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"parentRefs": [{"name": "jupyterhub", "namespace": "istio-system"}],
   "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/elsewhere"}}],
    "backendRefs": [{"name": "hub", "namespace": "other", "port": 8081}]}]}},
 {"apiVersion": "v1", "kind": "Service",
  "metadata": {"name": "hub", "namespace": "other", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"selector": {"app": "hub"}, "ports": [{"name": "http", "port": 8081}]}},
 {"apiVersion": "v1", "kind": "Service",
  "metadata": {"name": "alice", "namespace": "hub", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"ports": [{"name": "http", "port": 8888, "appProtocol": "http"}]}},
 {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {"name": "alice", "namespace": "hub", "creationTimestamp": "2020-01-01T00:00:00Z",
   "labels": {"kubernetes.io/service-name": "alice"}},
  "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": true}}],
  "ports": [{"name": "http", "port": 8888}]},
 {"apiVersion": "v1", "kind": "Service",
  "metadata": {"name": "hub", "namespace": "hub", "creationTimestamp": "2020-01-01T00:00:00Z"},
  "spec": {"selector": {"app": "hub"}, "ports": [{"name": "http", "port": 8081}]}}
], "requests": [
 {"authority": "hub.org", "path": "/user/alice/lab?x=1", "port": 80},
 {"authority": "hub.org", "path": "/user/alice2", "port": 80},
 {"authority": "hub.org", "path": "/hub/login", "port": 80},
 {"authority": "hub.org", "path": "/elsewhere", "port": 80}
]}]}`

// TestGatewayAPI checks the oracle answers for HTTPRoutes through Istio's Gateway API
// controller: the HTTPRoute and rule, whole-segment prefixes, the rewrite, known clusters,
// ReferenceGrants.
func TestGatewayAPI(t *testing.T) {
	var out bytes.Buffer
	if err := run(strings.NewReader(gatewayAPIScenario), &out); err != nil {
		t.Fatal(err)
	}
	var got output
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	answers := got.Scenarios[0].Answers
	if a := answers[0]; a == nil || a.HTTPRoute != "hub/alice" || a.Path != "/user/alice/lab?x=1" || !a.ClusterKnown {
		t.Errorf("/user/alice/lab: %+v", a)
	}
	if a := answers[1]; a != nil {
		t.Errorf("/user/alice2 is not below /user/alice: %+v", a)
	}
	if a := answers[2]; a == nil || a.HTTPRoute != "hub/hub" || a.Rule != 0 || a.Path != "/base/hub/login" {
		t.Errorf("/hub/login: %+v", a)
	}
	// A Service in another namespace without a ReferenceGrant: Istio keeps the route, to no
	// cluster (a 500).
	if a := answers[3]; a == nil || a.HTTPRoute != "hub/elsewhere" || a.ClusterKnown {
		t.Errorf("/elsewhere: %+v", a)
	}
}
