package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	kubelib "istio.io/istio/pkg/kube"
)

// gatewayPodIP is the address of the gateway pod the oracle plays for a Gateway API Gateway.
const gatewayPodIP = "10.255.0.1"

// gatewayNameLabel is the label Istio's deployment controller puts on a Gateway's pods.
const gatewayNameLabel = "gateway.networking.k8s.io/gateway-name"

// isKubernetesObject says whether an object is one istiod reads from the cluster rather than
// an Istio config: the Gateway API's kinds and core objects (Services, EndpointSlices, ...).
func isKubernetesObject(apiVersion string) bool {
	group, _, grouped := strings.Cut(apiVersion, "/")
	return !grouped || strings.HasSuffix(group, ".k8s.io")
}

// kubernetesObjects decodes objects as the API server would serve them.
func kubernetesObjects(objects []json.RawMessage) ([]runtime.Object, error) {
	decoder := kubelib.IstioCodec.UniversalDeserializer()
	out := make([]runtime.Object, 0, len(objects))
	for _, raw := range objects {
		obj, gvk, err := decoder.Decode(raw, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("a Kubernetes object Istio cannot read: %w", err)
		}
		if _, ok := obj.(*gatewayv1.Gateway); ok && gvk.Version != "v1" {
			return nil, fmt.Errorf("a Gateway of %s: the oracle plays gateway.networking.k8s.io/v1 Gateways", gvk.GroupVersion())
		}
		out = append(out, obj)
	}
	return out, nil
}

// gatewayAPIRoutes runs pilot with Istio's Gateway API controller over configs and the
// Kubernetes objects, and returns what it generates for the pod of the first Gateway.
//
// This is pilot/test/xds's FakeDiscoveryServer, the harness Istio's own tests feed Gateway API
// objects to: a fake Kubernetes client holding the objects, Istio's Kubernetes service registry
// reading Services and EndpointSlices from it, and the Gateway API controller converting
// Gateways and HTTPRoutes into pilot's Gateways and VirtualServices. Istio's deployment
// controller, which would create the Gateway's Deployment and Service, does not run, so the
// oracle adds what it would: a Service `<gateway>-istio` and one pod behind it, which is the
// proxy asked.
func gatewayAPIRoutes(configs []config.Config, objects []runtime.Object) (gateway, error) {
	var gw *gatewayv1.Gateway
	for _, obj := range objects {
		if g, ok := obj.(*gatewayv1.Gateway); ok {
			gw = g
			break
		}
	}
	if gw == nil {
		return gateway{}, fmt.Errorf("Gateway API objects without a Gateway")
	}
	labels := map[string]string{gatewayNameLabel: gw.Name}
	objects = append(objects, gatewayDeployment(gw, labels)...)
	var routes []*route.RouteConfiguration
	var clusters []*clusterv3.Cluster
	f := &failer{}
	defer f.cleanup()
	err := f.guard(func() {
		server := xds.NewFakeDiscoveryServer(f, xds.FakeOptions{Configs: configs, KubernetesObjects: objects})
		proxy := server.SetupProxy(&model.Proxy{
			Type:            model.Router,
			ConfigNamespace: gw.Namespace,
			IPAddresses:     []string{gatewayPodIP},
			Labels:          labels,
			Metadata:        &model.NodeMetadata{Labels: labels, Namespace: gw.Namespace},
		})
		routes = server.Routes(proxy)
		clusters = server.Clusters(proxy)
	})
	if err != nil {
		return gateway{}, fmt.Errorf("Istio's pilot: %w", err)
	}
	g := gateway{routes: map[string]*route.RouteConfiguration{}, clusters: map[string]bool{}, httpRoutes: true}
	for _, rc := range routes {
		g.routes[rc.Name] = rc
	}
	for _, c := range clusters {
		g.clusters[c.Name] = true
	}
	return g, nil
}

// gatewayDeployment is what Istio's deployment controller would create for gw: its Service
// (`<name>-istio`, where the converted Gateway looks for its pods) and one running pod.
func gatewayDeployment(gw *gatewayv1.Gateway, labels map[string]string) []runtime.Object {
	var ports []corev1.ServicePort
	for _, l := range gw.Spec.Listeners {
		port := int32(l.Port)
		// The gateway pod listens on the listener's port itself.
		ports = append(ports, corev1.ServicePort{
			Name: string(l.Name), Port: port, TargetPort: intstr.FromInt32(port), Protocol: corev1.ProtocolTCP,
		})
	}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: gw.Namespace, Labels: labels}
	}
	name := gw.Name + "-" + string(gw.Spec.GatewayClassName)
	return []runtime.Object{
		&corev1.Service{
			ObjectMeta: meta(name),
			Spec:       corev1.ServiceSpec{Selector: labels, Ports: ports, ClusterIP: "10.255.1.1"},
		},
		&corev1.Pod{
			ObjectMeta: meta(name + "-0"),
			Spec:       corev1.PodSpec{NodeName: "node"},
			Status: corev1.PodStatus{
				Phase:      corev1.PodRunning,
				PodIP:      gatewayPodIP,
				PodIPs:     []corev1.PodIP{{IP: gatewayPodIP}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			},
		},
	}
}

// httpRouteOf is `namespace/name` and rule index of the HTTPRoute rule an Envoy route came
// from. Istio names the route of each rule without a name `<namespace>.<name>.<index>`
// (convertHTTPRoute in pilot/pkg/config/kube/gateway); a namespace holds no dot.
func httpRouteOf(r *route.Route) (string, int, error) {
	namespace, rest, ok1 := strings.Cut(r.Name, ".")
	at := strings.LastIndexByte(rest, '.')
	if !ok1 || at < 0 {
		return "", 0, fmt.Errorf("route %q is not named after an HTTPRoute rule", r.Name)
	}
	index, err := strconv.Atoi(rest[at+1:])
	if err != nil {
		return "", 0, fmt.Errorf("route %q is not named after an HTTPRoute rule", r.Name)
	}
	return namespace + "/" + rest[:at], index, nil
}
