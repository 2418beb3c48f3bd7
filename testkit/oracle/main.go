// Command oracle answers where an Istio ingress gateway sends requests, using Istio's own
// control plane: the judge of the routing tests.
//
// It reads one JSON document on stdin, {"scenarios": [{"objects": [...], "requests": [...]}]},
// where objects are Istio resources as the Kubernetes API server lists them (Gateways,
// VirtualServices, ServiceEntries) and each request is {"authority", "path", "port"}. For each
// scenario it runs Istio's pilot in process, as Istio's own tests do (see pilot.go), takes the
// RouteConfiguration pilot generates for an ingress gateway pod (namespace istio-system, label
// istio=ingressgateway) and evaluates it as Envoy does (see envoy.go). It writes
// {"scenarios": [{"rejected": [...], "answers": [...]}]} on stdout: per request the virtual
// host, route and cluster Envoy picks, or null when no route matches. Scenarios under "mesh"
// instead ask what pilot gives a gateway and sidecars for the objects (see mesh.go), answered
// under "mesh".
//
// A scenario may also hold Kubernetes objects: the Gateway API's (a Gateway of class istio,
// HTTPRoutes, ReferenceGrants) and core ones (Services, EndpointSlices). Pilot then runs with
// Istio's Gateway API controller and Kubernetes service registry, as Istio's own tests feed
// them (see gatewayapi.go); the gateway is the pod Istio would deploy for the first Gateway,
// and each answer also names the HTTPRoute and rule its route came from.
//
// Istio sorts VirtualServices by creation time, then name, then namespace, so objects keep the
// creationTimestamp and name the API server stored. Objects that Istio's validation refuses are
// left out and listed under "rejected", as istiod skips them.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/runtime"

	"istio.io/istio/pkg/log"
)

// input is what the oracle reads.
type input struct {
	Scenarios []scenario `json:"scenarios"`
	// Mesh asks what the mesh carries instead (see mesh.go).
	Mesh []meshScenario `json:"mesh"`
}

// scenario is one set of objects and the requests to route through them.
type scenario struct {
	Objects  []json.RawMessage `json:"objects"`
	Requests []request         `json:"requests"`
}

// request is one HTTP request to the gateway.
type request struct {
	// Authority is the Host header as the client sent it, port and case included.
	Authority string `json:"authority"`
	// Path is the request target as sent: percent-encoded, with any query string.
	Path string `json:"path"`
	// Port is the gateway port the request arrives on.
	Port int `json:"port"`
}

// output is what the oracle writes.
type output struct {
	Scenarios []result     `json:"scenarios"`
	Mesh      []meshResult `json:"mesh"`
}

// result answers one scenario.
type result struct {
	// Rejected lists the objects Istio's validation refused, with why.
	Rejected []string `json:"rejected"`
	// Answers has one entry per request, in order; nil when no route matches (a 404).
	Answers []*answer `json:"answers"`
}

func main() {
	if err := quietLogs(); err != nil {
		fmt.Fprintf(os.Stderr, "oracle: configuring Istio's logs: %v\n", err)
		os.Exit(1)
	}
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "oracle: %v\n", err)
		os.Exit(1)
	}
}

// quietLogs sends Istio's logs to stderr, errors only: stdout carries the answers, and the
// caller shows stderr when the oracle fails.
func quietLogs() error {
	options := log.DefaultOptions()
	options.OutputPaths = []string{"stderr"}
	options.SetDefaultOutputLevel(log.OverrideScopeName, log.ErrorLevel)
	return log.Configure(options)
}

func run(in io.Reader, out io.Writer) error {
	var doc input
	if err := json.NewDecoder(in).Decode(&doc); err != nil {
		return fmt.Errorf("reading the scenarios on stdin: %w", err)
	}
	answered := output{Scenarios: make([]result, 0, len(doc.Scenarios))}
	for i, sc := range doc.Scenarios {
		r, err := routeScenario(sc)
		if err != nil {
			return fmt.Errorf("scenario %d: %w", i, err)
		}
		answered.Scenarios = append(answered.Scenarios, r)
	}
	for i, sc := range doc.Mesh {
		r, err := measure(sc)
		if err != nil {
			return fmt.Errorf("mesh scenario %d: %w", i, err)
		}
		answered.Mesh = append(answered.Mesh, r)
	}
	return json.NewEncoder(out).Encode(answered)
}

// routeScenario builds pilot's routes for the scenario's objects and routes its requests.
func routeScenario(sc scenario) (result, error) {
	var istio, kube []json.RawMessage
	for _, raw := range sc.Objects {
		var typed struct {
			APIVersion string `json:"apiVersion"`
		}
		if err := json.Unmarshal(raw, &typed); err != nil {
			return result{}, fmt.Errorf("an object that is not a Kubernetes object: %w", err)
		}
		if isKubernetesObject(typed.APIVersion) {
			kube = append(kube, raw)
		} else {
			istio = append(istio, raw)
		}
	}
	configs, rejected, err := parseObjects(istio)
	if err != nil {
		return result{}, err
	}
	var routes gateway
	if len(kube) == 0 {
		routes, err = gatewayRoutes(configs)
	} else {
		var objects []runtime.Object
		if objects, err = kubernetesObjects(kube); err == nil {
			routes, err = gatewayAPIRoutes(configs, objects)
		}
	}
	if err != nil {
		return result{}, err
	}
	answers := make([]*answer, 0, len(sc.Requests))
	for _, req := range sc.Requests {
		a, err := routes.route(req)
		if err != nil {
			return result{}, fmt.Errorf("request %+v: %w", req, err)
		}
		answers = append(answers, a)
	}
	return result{Rejected: rejected, Answers: answers}, nil
}
