package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/config/schema/resource"
)

// clusterDomain is the domain istiod gives configs it reads from Kubernetes: short destination
// hosts (`jupyter-alice`) are completed with it.
const clusterDomain = "cluster.local"

// parseObjects turns API objects into pilot's configs as istiod's Kubernetes config store
// does: name, namespace and creation time as stored, the cluster domain set. Objects Istio's
// validation refuses are left out and described in the second result.
func parseObjects(objects []json.RawMessage) ([]config.Config, []string, error) {
	var configs []config.Config
	var rejected []string
	for _, raw := range objects {
		var obj crd.IstioKind
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, nil, fmt.Errorf("an object that is not a Kubernetes object: %w", err)
		}
		gvk := obj.GroupVersionKind()
		schema, ok := collections.Pilot.FindByGroupVersionAliasesKind(resource.FromKubernetesGVK(&gvk))
		if !ok {
			return nil, nil, fmt.Errorf("%s %s/%s: not a kind Istio's pilot reads", gvk, obj.Namespace, obj.Name)
		}
		cfg, err := crd.ConvertObject(schema, &obj, clusterDomain)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %s/%s: %w", gvk.Kind, obj.Namespace, obj.Name, err)
		}
		if _, err := schema.ValidateConfig(*cfg); err != nil {
			rejected = append(rejected, fmt.Sprintf("%s %s/%s: %v", gvk.Kind, obj.Namespace, obj.Name, err))
			continue
		}
		configs = append(configs, *cfg)
	}
	return configs, rejected, nil
}

// gatewayRoutes runs pilot over configs and returns what it generates for an ingress gateway
// pod in istio-system labelled istio=ingressgateway: route configurations by name (`http.80`)
// and cluster names.
//
// Pilot is core.ConfigGenTest, the config generator and registries (configs, ServiceEntries)
// that pilot/test/xds's FakeDiscoveryServer wraps and Istio's own simulation tests use. The
// FakeDiscoveryServer adds an xDS gRPC server and a fake Kubernetes service registry, which
// we do not need, and costs three times as much per scenario (about 60 ms, against 20 ms).
func gatewayRoutes(configs []config.Config) (gateway, error) {
	var routes []*route.RouteConfiguration
	var clusters []*clusterv3.Cluster
	err := withPilot(configs, func(server *core.ConfigGenTest) {
		proxy := gatewayProxy(server, "istio-system")
		routes = server.Routes(proxy)
		clusters = server.Clusters(proxy)
	})
	if err != nil {
		return gateway{}, fmt.Errorf("Istio's pilot: %w", err)
	}
	g := gateway{routes: map[string]*route.RouteConfiguration{}, clusters: map[string]bool{}}
	for _, rc := range routes {
		g.routes[rc.Name] = rc
	}
	for _, c := range clusters {
		g.clusters[c.Name] = true
	}
	return g, nil
}

// withPilot runs pilot over configs and calls use with it; a failure of pilot's fixtures is
// the error.
func withPilot(configs []config.Config, use func(*core.ConfigGenTest)) error {
	f := &failer{}
	defer f.cleanup()
	return f.guard(func() {
		use(core.NewConfigGenTest(f, core.TestOptions{Configs: configs}))
	})
}

// gatewayProxy is an ingress gateway pod in namespace, labelled istio=ingressgateway.
func gatewayProxy(server *core.ConfigGenTest, namespace string) *model.Proxy {
	labels := map[string]string{"istio": "ingressgateway"}
	return server.SetupProxy(&model.Proxy{
		Type:            model.Router,
		ConfigNamespace: namespace,
		Labels:          labels,
		Metadata:        &model.NodeMetadata{Labels: labels, Namespace: namespace},
	})
}

// gateway is what pilot gives the gateway: route configurations and cluster names, by name.
type gateway struct {
	routes   map[string]*route.RouteConfiguration
	clusters map[string]bool
	// httpRoutes says the routes come from HTTPRoutes, which answers name.
	httpRoutes bool
}

// route answers one request: the route configuration of its port, then Envoy's choice.
func (g gateway) route(req request) (*answer, error) {
	rc, ok := g.routes["http."+strconv.Itoa(req.Port)]
	if !ok {
		return nil, nil
	}
	a, r, err := evaluate(rc, req)
	if a == nil || err != nil {
		return nil, err
	}
	a.ClusterKnown = g.clusters[a.Cluster]
	if g.httpRoutes {
		if a.HTTPRoute, a.Rule, err = httpRouteOf(r); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// failer is the test.Failer pilot's test fixtures take: a failure panics, and guard turns the
// panic into an error.
type failer struct {
	cleanups []func()
}

type failure struct{ message string }

func (f *failer) guard(run func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			stop, ok := r.(failure)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%s", stop.message)
		}
	}()
	run()
	return nil
}

func (f *failer) cleanup() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func (f *failer) Fail()                             { panic(failure{"failed"}) }
func (f *failer) FailNow()                          { panic(failure{"failed"}) }
func (f *failer) Fatal(args ...any)                 { panic(failure{fmt.Sprint(args...)}) }
func (f *failer) Fatalf(format string, args ...any) { panic(failure{fmt.Sprintf(format, args...)}) }
func (f *failer) Log(args ...any)                   {}
func (f *failer) Logf(format string, args ...any)   {}
func (f *failer) Helper()                           {}
func (f *failer) Cleanup(cleanup func())            { f.cleanups = append(f.cleanups, cleanup) }
func (f *failer) Skip(args ...any)                  { panic(failure{"skipped: " + fmt.Sprint(args...)}) }

func (f *failer) TempDir() string {
	dir, err := os.MkdirTemp("", "oracle-")
	if err != nil {
		panic(failure{err.Error()})
	}
	f.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
