//! What the gateways made of our HTTPRoutes, read back from their `status`.
//!
//! An implementation writes one `status.parents` entry per Gateway the route names, with an
//! `Accepted` condition (the route is attached) and a `ResolvedRefs` condition (its backends
//! exist and may be referred to). Either one `False` means requests for the route do not reach
//! its server: a Gateway that does not allow routes from the hub's namespace, a listener name
//! that does not exist, a Service in another namespace without a ReferenceGrant. Conditions set
//! for an older `generation` of the route say nothing about the current one.

use std::collections::{HashMap, HashSet};

use kube::runtime::watcher::Event;

use crate::resources::{HttpRoute, ParentReference};

/// How the gateways took the current generation of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    /// No gateway has said anything about this generation yet.
    Pending,
    /// Every parent that reported accepted it, with its references resolved.
    Accepted,
    /// A parent refused it, or could not resolve its backend.
    Refused(Refusal),
}

/// A parent's `False` condition on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The Gateway that refused it.
    pub parent: ParentReference,
    /// `Accepted` or `ResolvedRefs`.
    pub condition: String,
    /// The implementation's reason, e.g. `NotAllowedByListeners`, `RefNotPermitted`.
    pub reason: String,
    /// The implementation's message.
    pub message: String,
}

/// The conditions that decide whether requests reach the route's server.
const DECIDING: [&str; 2] = ["Accepted", "ResolvedRefs"];

/// How the gateways took `route` at its current generation.
pub fn acceptance(route: &HttpRoute) -> Acceptance {
    let generation = route.metadata.generation;
    let current = |observed: Option<i64>| generation.is_none() || observed >= generation;
    let mut accepted = false;
    for parent in route.status.iter().flat_map(|status| &status.parents) {
        for condition in &parent.conditions {
            if !DECIDING.contains(&condition.kind.as_str()) || !current(condition.observed_generation) {
                continue;
            }
            match condition.status.as_str() {
                "False" => {
                    return Acceptance::Refused(Refusal {
                        parent: parent.parent_ref.clone(),
                        condition: condition.kind.clone(),
                        reason: condition.reason.clone(),
                        message: condition.message.clone(),
                    });
                }
                "True" if condition.kind == "Accepted" => accepted = true,
                _ => {}
            }
        }
    }
    if accepted { Acceptance::Accepted } else { Acceptance::Pending }
}

/// The routes a gateway refused, kept up to date from the watch's events, each refusal and each
/// route taken again logged once.
#[derive(Debug, Default)]
pub struct Refusals {
    by_name: HashMap<String, Refusal>,
    /// During a relist, the names it has delivered: at its end, refusals of any other name
    /// (deleted while the watch was down) are let go.
    relisted: Option<HashSet<String>>,
}

impl Refusals {
    /// How many routes are refused now.
    pub fn count(&self) -> usize {
        self.by_name.len()
    }

    /// Takes one watch event in.
    pub fn follow(&mut self, event: &Event<HttpRoute>) {
        let (object, gone) = match event {
            Event::Init => {
                self.relisted = Some(HashSet::new());
                return;
            }
            Event::InitDone => {
                if let Some(relisted) = self.relisted.take() {
                    self.by_name.retain(|name, _| relisted.contains(name));
                }
                return;
            }
            Event::InitApply(object) => {
                if let Some(relisted) = self.relisted.as_mut() {
                    relisted.insert(object.metadata.name.clone().unwrap_or_default());
                }
                (object, false)
            }
            Event::Apply(object) => (object, false),
            Event::Delete(object) => (object, true),
        };
        let name = object.metadata.name.clone().unwrap_or_default();
        let route = object.metadata.annotations.as_ref().and_then(|a| a.get(kube_routes::SPEC_ANNOTATION));
        match (gone, acceptance(object)) {
            (false, Acceptance::Refused(refusal)) => {
                if self.by_name.get(&name) != Some(&refusal) {
                    // The one refusal the proxy's own configuration cannot fix: say what can.
                    let hint = (refusal.reason == "RefNotPermitted").then_some(
                        "a Service in another namespace needs a ReferenceGrant there allowing HTTPRoutes from this one (docs/gateway-api.md)",
                    );
                    tracing::warn!(
                        http_route = name,
                        route,
                        parent = %refusal.parent,
                        condition = refusal.condition,
                        reason = refusal.reason,
                        message = refusal.message,
                        hint,
                        "a gateway did not take a route: requests for it do not reach its server"
                    );
                    self.by_name.insert(name, refusal);
                }
            }
            // A generation no gateway has reported on yet: the last word stands.
            (false, Acceptance::Pending) => {}
            (_, _) => {
                if self.by_name.remove(&name).is_some() && !gone {
                    tracing::info!(http_route = name, route, "a gateway takes a route it had refused");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Condition, HttpRouteStatus, RouteParentStatus};

    fn route(generation: i64, conditions: &[(&str, &str, i64)]) -> HttpRoute {
        let mut route = HttpRoute::default();
        route.metadata.generation = Some(generation);
        let conditions = conditions
            .iter()
            .map(|(kind, status, observed)| Condition {
                kind: kind.to_string(),
                status: status.to_string(),
                reason: "Why".into(),
                message: format!("{kind} is {status}"),
                observed_generation: Some(*observed),
            })
            .collect();
        let parent = RouteParentStatus {
            parent_ref: "istio-system/gw".parse().unwrap(),
            controller_name: "example.net/gateway".into(),
            conditions,
        };
        route.status = Some(HttpRouteStatus { parents: vec![parent] });
        route
    }

    fn named(name: &str, mut route: HttpRoute) -> HttpRoute {
        route.metadata.name = Some(name.to_owned());
        route
    }

    #[test]
    fn refusals_follow_the_watch_and_a_relist_forgets_what_it_no_longer_holds() {
        let refused = |name| named(name, route(1, &[("Accepted", "False", 1)]));
        let mut refusals = Refusals::default();
        refusals.follow(&Event::Apply(refused("a")));
        refusals.follow(&Event::Apply(refused("b")));
        refusals.follow(&Event::Apply(refused("b")));
        assert_eq!(refusals.count(), 2);
        refusals.follow(&Event::Apply(named("a", route(1, &[("Accepted", "True", 1)]))));
        assert_eq!(refusals.count(), 1, "a taken again");
        refusals.follow(&Event::Delete(refused("b")));
        assert_eq!(refusals.count(), 0, "b deleted");

        refusals.follow(&Event::Apply(refused("c")));
        refusals.follow(&Event::Apply(refused("d")));
        // The watch broke; c was deleted meanwhile, so the relist does not deliver it.
        refusals.follow(&Event::Init);
        refusals.follow(&Event::InitApply(refused("d")));
        assert_eq!(refusals.count(), 2, "nothing let go before the relist ends");
        refusals.follow(&Event::InitDone);
        assert_eq!(refusals.count(), 1, "c is let go, d stays");
    }

    #[test]
    fn the_current_generations_conditions_decide() {
        assert_eq!(acceptance(&HttpRoute::default()), Acceptance::Pending);
        assert_eq!(
            acceptance(&route(2, &[("Accepted", "True", 2), ("ResolvedRefs", "True", 2)])),
            Acceptance::Accepted
        );
        assert_eq!(
            acceptance(&route(3, &[("Accepted", "True", 2)])),
            Acceptance::Pending,
            "an older generation's"
        );
        let Acceptance::Refused(refusal) =
            acceptance(&route(2, &[("Accepted", "True", 2), ("ResolvedRefs", "False", 2)]))
        else {
            panic!("a backend that cannot be resolved is a refusal")
        };
        assert_eq!(
            (refusal.condition.as_str(), refusal.message.as_str()),
            ("ResolvedRefs", "ResolvedRefs is False")
        );
        assert_eq!(refusal.parent.to_string(), "istio-system/gw");
        assert!(matches!(acceptance(&route(1, &[("Accepted", "False", 1)])), Acceptance::Refused(_)));
        assert_eq!(
            acceptance(&route(1, &[("Programmed", "False", 1)])),
            Acceptance::Pending,
            "not a deciding condition"
        );
    }
}
