package main

import (
	"encoding/json"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	networking "istio.io/api/networking/v1alpha3"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
	"istio.io/istio/pilot/pkg/xds/endpoints"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/host"
	"istio.io/istio/pkg/config/schema/kind"
)

// meshScenario asks what the mesh carries for a set of objects: what pilot gives an ingress
// gateway pod and sidecars in other namespaces, and which of them a set of writes concerns.
type meshScenario struct {
	// Objects are the Istio objects, as the API server lists them.
	Objects []json.RawMessage `json:"objects"`
	// GatewayNamespace is where the ingress gateway pod (label istio=ingressgateway) runs.
	GatewayNamespace string `json:"gatewayNamespace"`
	// Sidecars are the namespaces of ordinary sidecar pods to measure.
	Sidecars []string `json:"sidecars"`
	// Writes are objects written (created, changed or deleted): each is one config event for
	// istiod, which pushes to the proxies it concerns.
	Writes []json.RawMessage `json:"writes"`
}

// proxyFigures is what pilot gives one proxy.
type proxyFigures struct {
	Namespace string `json:"namespace"`
	// Routes counts Envoy routes over all the proxy's route configurations.
	Routes int `json:"routes"`
	// Clusters counts the proxy's clusters, pilot's own (BlackHoleCluster...) included.
	Clusters int `json:"clusters"`
	// Endpoints counts the endpoints of the proxy's EDS clusters.
	Endpoints int `json:"endpoints"`
	// Pushes counts the writes that concern the proxy: each makes istiod push to it.
	Pushes int `json:"pushes"`
}

// meshResult answers one mesh scenario.
type meshResult struct {
	Rejected []string       `json:"rejected"`
	Gateway  proxyFigures   `json:"gateway"`
	Sidecars []proxyFigures `json:"sidecars"`
}

// measure runs pilot over the scenario's objects and measures each proxy.
func measure(sc meshScenario) (meshResult, error) {
	configs, rejected, err := parseObjects(sc.Objects)
	if err != nil {
		return meshResult{}, err
	}
	writes, _, err := parseObjects(sc.Writes)
	if err != nil {
		return meshResult{}, fmt.Errorf("writes: %w", err)
	}
	keys := configKeys(writes)
	result := meshResult{Rejected: rejected}
	err = withPilot(configs, func(server *core.ConfigGenTest) {
		push := server.PushContext()
		gatewayNamespace := sc.GatewayNamespace
		if gatewayNamespace == "" {
			gatewayNamespace = "istio-system"
		}
		result.Gateway = figures(server, push, gatewayProxy(server, gatewayNamespace), keys)
		for _, ns := range sc.Sidecars {
			labels := map[string]string{"app": "measured"}
			proxy := server.SetupProxy(&model.Proxy{
				Type:            model.SidecarProxy,
				ConfigNamespace: ns,
				Labels:          labels,
				Metadata:        &model.NodeMetadata{Labels: labels, Namespace: ns},
			})
			result.Sidecars = append(result.Sidecars, figures(server, push, proxy, keys))
		}
	})
	if err != nil {
		return meshResult{}, fmt.Errorf("Istio's pilot: %w", err)
	}
	return result, nil
}

// figures measures one proxy.
func figures(server *core.ConfigGenTest, push *model.PushContext, proxy *model.Proxy, writes []model.ConfigKey) proxyFigures {
	f := proxyFigures{Namespace: proxy.ConfigNamespace}
	for _, rc := range server.Routes(proxy) {
		for _, vh := range rc.VirtualHosts {
			f.Routes += len(vh.Routes)
		}
	}
	clusters := server.Clusters(proxy)
	f.Clusters = len(clusters)
	for _, c := range clusters {
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		builder := endpoints.NewEndpointBuilder(c.Name, proxy, push)
		for _, locality := range builder.BuildClusterLoadAssignment(server.Env().EndpointIndex).GetEndpoints() {
			f.Endpoints += len(locality.LbEndpoints)
		}
	}
	for _, key := range writes {
		if concerns(proxy, key, push) {
			f.Pushes++
		}
	}
	return f
}

// concerns is istiod's test of whether a config event needs a push to a proxy
// (pilot/pkg/xds/proxy_dependencies.go, proxyDependentOnConfig), for the kinds we write: a
// sidecar asks its scope; a gateway takes every VirtualService, and a ServiceEntry it can see.
func concerns(proxy *model.Proxy, key model.ConfigKey, push *model.PushContext) bool {
	switch proxy.Type {
	case model.SidecarProxy:
		return proxy.SidecarScope.DependsOnConfig(key, push.Mesh.RootNamespace)
	case model.Router:
		if key.Kind == kind.ServiceEntry {
			return proxy.SidecarScope.GetService(host.Name(key.Name)) != nil
		}
		return true
	}
	return true
}

// configKeys are the config events of writes: a VirtualService by name, a ServiceEntry by
// each of its hosts, as istiod's ServiceEntry controller reports them.
func configKeys(writes []config.Config) []model.ConfigKey {
	var keys []model.ConfigKey
	for _, w := range writes {
		switch spec := w.Spec.(type) {
		case *networking.ServiceEntry:
			for _, h := range spec.Hosts {
				keys = append(keys, model.ConfigKey{Kind: kind.ServiceEntry, Name: h, Namespace: w.Namespace})
			}
		default:
			keys = append(keys, model.ConfigKey{Kind: kind.FromString(w.GroupVersionKind.Kind), Name: w.Name, Namespace: w.Namespace})
		}
	}
	return keys
}
