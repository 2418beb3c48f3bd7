package main

import (
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func regex(re string) *matcher.RegexMatcher { return &matcher.RegexMatcher{Regex: re} }

func authority(m *matcher.StringMatcher) *route.HeaderMatcher {
	return &route.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: m}}
}

// TestRouteMatches checks each match kind against Envoy's documented semantics.
func TestRouteMatches(t *testing.T) {
	prefix := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/user/alice"}}
	separated := &route.RouteMatch{PathSpecifier: &route.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/user/alice"}}
	exact := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/user/alice"}}
	folded := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/user/alice"}, CaseSensitive: wrapperspb.Bool(false)}
	re := &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: regex(`/a(/.*)?`)}}
	host := &route.RouteMatch{
		PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"},
		Headers:       []*route.HeaderMatcher{authority(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: "a.org"}})},
	}
	inverted := &route.RouteMatch{
		PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"},
		Headers: []*route.HeaderMatcher{{
			Name: ":authority", InvertMatch: true,
			HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: &matcher.StringMatcher{
				MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "A."}, IgnoreCase: true,
			}},
		}},
	}
	cases := []struct {
		name      string
		match     *route.RouteMatch
		authority string
		path      string
		want      bool
	}{
		{"a prefix is a raw string prefix", prefix, "h", "/user/alice2", true},
		{"a prefix is case-sensitive", prefix, "h", "/user/Alice", false},
		{"a separated prefix stops at a segment", separated, "h", "/user/alice2", false},
		{"a separated prefix takes the path below", separated, "h", "/user/alice/x", true},
		{"a separated prefix takes the path itself", separated, "h", "/user/alice", true},
		{"an exact path is whole", exact, "h", "/user/alice/", false},
		{"case_sensitive false folds case", folded, "h", "/USER/alice", true},
		{"a regex must match the whole path", re, "h", "/ab", false},
		{"a regex matches the path", re, "h", "/a/b", true},
		{"the query string is not matched", exact, "h", "/user/alice?x=1", true},
		{"authority is matched as sent, port kept", host, "a.org:80", "/", false},
		{"authority is matched as sent, case kept", host, "A.org", "/", false},
		{"authority exact", host, "a.org", "/", true},
		{"an inverted ignore-case prefix", inverted, "a.org", "/", false},
		{"an inverted match of another host", inverted, "b.org", "/", true},
	}
	for _, c := range cases {
		rc := &route.RouteConfiguration{VirtualHosts: []*route.VirtualHost{{
			Name: "vh", Domains: []string{"*"}, Routes: []*route.Route{{Match: c.match}},
		}}}
		got, _, err := evaluate(rc, request{Authority: c.authority, Path: c.path, Port: 80})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (got != nil) != c.want {
			t.Errorf("%s: matched %v, want %v", c.name, got != nil, c.want)
		}
	}
}

// TestVirtualHosts checks Envoy's virtual host choice: exact, then the longest suffix
// wildcard, then prefix wildcards, then `*`; the port and case of the host do not count.
func TestVirtualHosts(t *testing.T) {
	hosts := []*route.VirtualHost{
		{Name: "any", Domains: []string{"*"}},
		{Name: "suffix", Domains: []string{"*.org"}},
		{Name: "longer", Domains: []string{"*.hub.org"}},
		{Name: "prefix", Domains: []string{"hub.*"}},
		{Name: "exact", Domains: []string{"a.hub.org"}},
	}
	for host, want := range map[string]string{
		"a.hub.org:80": "exact", "A.HUB.ORG": "exact", "b.hub.org": "longer", "x.org": "suffix",
		"hub.com": "prefix", "example.com": "any", "hub.org": "suffix",
	} {
		if got := virtualHost(hosts, hostName(host)); got == nil || got.Name != want {
			t.Errorf("%s: got %v, want %s", host, got, want)
		}
	}
}

// TestRewrites checks prefix_rewrite replaces the matched part and regex_rewrite substitutes
// RE2 groups.
func TestRewrites(t *testing.T) {
	prefix := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/user/"}}
	exact := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/user"}}
	cases := []struct {
		match  *route.RouteMatch
		action *route.RouteAction
		path   string
		want   string
	}{
		{prefix, &route.RouteAction{PrefixRewrite: "/base/user/"}, "/user/a", "/base/user/a"},
		{exact, &route.RouteAction{PrefixRewrite: "/base/user"}, "/user", "/base/user"},
		{prefix, &route.RouteAction{RegexRewrite: &matcher.RegexMatchAndSubstitute{
			Pattern: regex(`^(.*)$`), Substitution: `/base\1`,
		}}, "/user/a$", "/base/user/a$"},
	}
	for _, c := range cases {
		got, err := rewrite(c.match, c.action, c.path)
		if err != nil || got != c.want {
			t.Errorf("%s: got %q (%v), want %q", c.path, got, err, c.want)
		}
	}
}
