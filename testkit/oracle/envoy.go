package main

import (
	"fmt"
	"regexp"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// answer is where Envoy sends a request.
type answer struct {
	// VirtualHost is the name of the virtual host chosen by the request's host.
	VirtualHost string `json:"virtualHost"`
	// RouteIndex is the position of the matching route in the virtual host.
	RouteIndex int `json:"routeIndex"`
	// Route is the matching route's name (the http route's name, when it has one).
	Route string `json:"route"`
	// VirtualService is `namespace/name` of the VirtualService the route came from; for
	// HTTPRoutes, the VirtualService Istio converted them to.
	VirtualService string `json:"virtualService"`
	// HTTPRoute is `namespace/name` of the HTTPRoute the route came from, when the scenario
	// has Gateway API objects.
	HTTPRoute string `json:"httpRoute,omitempty"`
	// Rule is the index of that HTTPRoute's rule.
	Rule int `json:"rule"`
	// Cluster is the upstream cluster, empty for a redirect or a direct response.
	Cluster string `json:"cluster"`
	// ClusterKnown says whether pilot gave the gateway that cluster; a route to a cluster
	// Envoy does not have answers 503.
	ClusterKnown bool `json:"clusterKnown"`
	// Path is the path forwarded upstream, after any rewrite, query string kept.
	Path string `json:"path"`
	// ResponseHeaders are the headers the route adds to the response.
	ResponseHeaders map[string]string `json:"responseHeaders"`
}

// evaluate routes req through rc as Envoy's router does: the virtual host by host name, then
// the first route, in order, whose match holds; the answer and that route. It fails on a match
// Envoy would evaluate but this evaluator does not know, rather than guessing.
func evaluate(rc *route.RouteConfiguration, req request) (*answer, *route.Route, error) {
	vh := virtualHost(rc.VirtualHosts, hostName(req.Authority))
	if vh == nil {
		return nil, nil, nil
	}
	path, query, _ := strings.Cut(req.Path, "?")
	for i, r := range vh.Routes {
		ok, err := matches(r.Match, path, req)
		if err != nil {
			return nil, nil, fmt.Errorf("route %d (%q) of virtual host %s: %w", i, r.Name, vh.Name, err)
		}
		if ok {
			a, err := describe(vh, i, r, path, query)
			return a, r, err
		}
	}
	return nil, nil, nil
}

// hostName is the authority without its port, lower-cased: a gateway strips any port before
// choosing the virtual host (Istio sets strip_any_host_port on gateways).
func hostName(authority string) string {
	host := authority
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	return strings.ToLower(host)
}

// virtualHost is Envoy's choice of virtual host for host: an exact domain, then the longest
// suffix wildcard (`*.hub.org`), then the longest prefix wildcard (`hub.*`), then `*`.
func virtualHost(hosts []*route.VirtualHost, host string) *route.VirtualHost {
	var best *route.VirtualHost
	bestRank, bestLen := 0, 0
	for _, vh := range hosts {
		for _, domain := range vh.Domains {
			rank := domainRank(strings.ToLower(domain), host)
			if rank > bestRank || (rank == bestRank && rank > 0 && len(domain) > bestLen) {
				best, bestRank, bestLen = vh, rank, len(domain)
			}
		}
	}
	return best
}

// domainRank says how domain covers host: 4 exactly, 3 as a suffix wildcard, 2 as a prefix
// wildcard, 1 as `*`, 0 not at all. A wildcard stands for at least one character.
func domainRank(domain, host string) int {
	switch {
	case domain == host:
		return 4
	case domain == "*":
		return 1
	case strings.HasPrefix(domain, "*") && len(host) > len(domain)-1 && strings.HasSuffix(host, domain[1:]):
		return 3
	case strings.HasSuffix(domain, "*") && len(host) > len(domain)-1 && strings.HasPrefix(host, domain[:len(domain)-1]):
		return 2
	}
	return 0
}

// matches is Envoy's route match: the path specifier on the path without its query string,
// and every header matcher.
func matches(m *route.RouteMatch, path string, req request) (bool, error) {
	if err := supported(m); err != nil {
		return false, err
	}
	ok, err := pathMatches(m, path)
	if err != nil || !ok {
		return false, err
	}
	for _, h := range m.Headers {
		ok, err := headerMatches(h, req)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// supported refuses the match conditions this evaluator does not evaluate.
func supported(m *route.RouteMatch) error {
	switch {
	case len(m.QueryParameters) > 0:
		return fmt.Errorf("query parameter matches are not evaluated")
	case len(m.DynamicMetadata) > 0 || m.FilterState != nil:
		return fmt.Errorf("metadata and filter state matches are not evaluated")
	case m.RuntimeFraction != nil || m.Grpc != nil || m.TlsContext != nil:
		return fmt.Errorf("runtime, gRPC and TLS matches are not evaluated")
	}
	return nil
}

// pathMatches evaluates the path specifier; prefixes and exact paths honour case_sensitive
// (true unless set false), regexes must match the whole path (RE2 full match).
func pathMatches(m *route.RouteMatch, path string) (bool, error) {
	fold := m.CaseSensitive != nil && !m.CaseSensitive.Value
	equal := func(a, b string) bool { return a == b || (fold && strings.EqualFold(a, b)) }
	hasPrefix := func(s, prefix string) bool { return len(s) >= len(prefix) && equal(s[:len(prefix)], prefix) }
	switch spec := m.PathSpecifier.(type) {
	case *route.RouteMatch_Prefix:
		return hasPrefix(path, spec.Prefix), nil
	case *route.RouteMatch_Path:
		return equal(path, spec.Path), nil
	case *route.RouteMatch_PathSeparatedPrefix:
		// The prefix, then the end of the path or a `/`.
		p := spec.PathSeparatedPrefix
		return hasPrefix(path, p) && (len(path) == len(p) || path[len(p)] == '/'), nil
	case *route.RouteMatch_SafeRegex:
		return fullMatch(spec.SafeRegex.Regex, path)
	}
	return false, fmt.Errorf("path specifier %T is not evaluated", m.PathSpecifier)
}

// fullMatch is RE2's FullMatch, as Envoy's safe_regex uses it. Go's regexp is RE2's syntax.
func fullMatch(pattern, value string) (bool, error) {
	re, err := compile(`^(?:` + pattern + `)$`)
	if err != nil {
		return false, err
	}
	return re.MatchString(value), nil
}

// compiled keeps each regex compiled once: every request meets every route's regex, and
// compiling dominated the oracle's time. The oracle is single-threaded.
var compiled = map[string]*regexp.Regexp{}

func compile(pattern string) (*regexp.Regexp, error) {
	if re, ok := compiled[pattern]; ok {
		return re, nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pattern, err)
	}
	compiled[pattern] = re
	return re, nil
}

// headerMatches evaluates one header matcher against the request's headers; the request has
// only `:authority`, as sent (case and port kept), besides the path. As in Envoy, a missing
// header (unless treated as empty) satisfies only a present_match that expects it missing.
func headerMatches(h *route.HeaderMatcher, req request) (bool, error) {
	value, present := header(h.Name, req)
	presence, isPresence := h.HeaderMatchSpecifier.(*route.HeaderMatcher_PresentMatch)
	if !present && !h.TreatMissingHeaderAsEmpty {
		return isPresence && presence.PresentMatch == h.InvertMatch, nil
	}
	var ok bool
	switch spec := h.HeaderMatchSpecifier.(type) {
	case *route.HeaderMatcher_PresentMatch:
		ok = spec.PresentMatch
	case *route.HeaderMatcher_StringMatch:
		var err error
		if ok, err = stringMatches(spec.StringMatch, value); err != nil {
			return false, err
		}
	default:
		return false, fmt.Errorf("header matcher %T on %s is not evaluated", h.HeaderMatchSpecifier, h.Name)
	}
	return ok != h.InvertMatch, nil
}

func header(name string, req request) (string, bool) {
	if name == ":authority" || strings.EqualFold(name, "host") {
		return req.Authority, true
	}
	return "", false
}

// stringMatches is Envoy's StringMatcher; ignore_case applies to all but regexes.
func stringMatches(m *matcher.StringMatcher, value string) (bool, error) {
	fold := func(s string) string {
		if m.IgnoreCase {
			return strings.ToLower(s)
		}
		return s
	}
	switch spec := m.MatchPattern.(type) {
	case *matcher.StringMatcher_Exact:
		return fold(value) == fold(spec.Exact), nil
	case *matcher.StringMatcher_Prefix:
		return strings.HasPrefix(fold(value), fold(spec.Prefix)), nil
	case *matcher.StringMatcher_Suffix:
		return strings.HasSuffix(fold(value), fold(spec.Suffix)), nil
	case *matcher.StringMatcher_Contains:
		return strings.Contains(fold(value), fold(spec.Contains)), nil
	case *matcher.StringMatcher_SafeRegex:
		return fullMatch(spec.SafeRegex.Regex, value)
	}
	return false, fmt.Errorf("string matcher %T is not evaluated", m.MatchPattern)
}

// describe says where the chosen route sends the request.
func describe(vh *route.VirtualHost, index int, r *route.Route, path, query string) (*answer, error) {
	a := &answer{
		VirtualHost:     vh.Name,
		RouteIndex:      index,
		Route:           r.Name,
		VirtualService:  virtualService(r),
		ResponseHeaders: map[string]string{},
	}
	for _, h := range r.ResponseHeadersToAdd {
		a.ResponseHeaders[h.Header.Key] = h.Header.Value
	}
	forwarded := path
	if action := r.GetRoute(); action != nil {
		a.Cluster = clusterName(action)
		var err error
		if forwarded, err = rewrite(r.Match, action, path); err != nil {
			return nil, err
		}
	}
	if query != "" {
		forwarded += "?" + query
	}
	a.Path = forwarded
	return a, nil
}

// clusterName is the action's cluster; of weighted clusters, the names joined by `,` in order.
func clusterName(action *route.RouteAction) string {
	if name := action.GetCluster(); name != "" {
		return name
	}
	var names []string
	for _, c := range action.GetWeightedClusters().GetClusters() {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

// rewrite is Envoy's path rewrite: prefix_rewrite replaces what the match matched (the prefix,
// or the whole path for an exact path or a regex), regex_rewrite substitutes every match.
func rewrite(m *route.RouteMatch, action *route.RouteAction, path string) (string, error) {
	if prefix := action.PrefixRewrite; prefix != "" {
		matched := len(path)
		switch spec := m.PathSpecifier.(type) {
		case *route.RouteMatch_Prefix:
			matched = len(spec.Prefix)
		case *route.RouteMatch_PathSeparatedPrefix:
			matched = len(spec.PathSeparatedPrefix)
		}
		return prefix + path[matched:], nil
	}
	if rr := action.RegexRewrite; rr != nil {
		re, err := compile(rr.Pattern.Regex)
		if err != nil {
			return "", fmt.Errorf("rewrite: %w", err)
		}
		return re.ReplaceAllString(path, re2Substitution(rr.Substitution)), nil
	}
	return path, nil
}

var re2Group = regexp.MustCompile(`\\([0-9])`)

// re2Substitution turns RE2's `\1` into Go's `${1}`, escaping Go's `$`.
func re2Substitution(s string) string {
	return re2Group.ReplaceAllString(strings.ReplaceAll(s, "$", "$$"), "$${$1}")
}

// virtualService is `namespace/name` of the VirtualService a route came from, from the
// metadata Istio puts on it (`/apis/<group>/<version>/namespaces/<ns>/virtual-service/<name>`).
func virtualService(r *route.Route) string {
	config := r.GetMetadata().GetFilterMetadata()["istio"].GetFields()["config"].GetStringValue()
	parts := strings.Split(config, "/")
	if len(parts) < 8 {
		return config
	}
	return parts[len(parts)-3] + "/" + parts[len(parts)-1]
}
