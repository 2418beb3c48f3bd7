//! What the backends keep between requests, and how they give its memory back when routes go.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, PoisonError};

use proxy_api::Route;

/// The last listing of routes, reused while the store's generation stays the same: JupyterHub
/// lists every few minutes and a scrape counts the routes, so a listing of 10,000 routes is
/// built once per change rather than once per call.
///
/// A write lets go of it ([`Listing::clear`]): kept until the next listing, it would hold every
/// route it lists, deleted or not, and after a day of servers started and stopped that can be
/// hundreds of thousands.
#[derive(Debug, Default)]
pub struct Listing(Mutex<Option<(u64, Vec<Arc<Route>>)>>);

impl Listing {
    /// The listing built at `generation`, if it is the one kept; a listing of another
    /// generation is of no further use, and is let go.
    pub fn at(&self, generation: Option<u64>) -> Option<Vec<Arc<Route>>> {
        let mut kept = self.lock();
        match (generation, kept.as_ref()) {
            (Some(generation), Some((built, routes))) if *built == generation => Some(routes.clone()),
            _ => {
                *kept = None;
                None
            }
        }
    }

    /// Keeps `routes` as the listing at `generation`; a store that cannot say its generation
    /// (`None`) gets no listing kept.
    pub fn keep(&self, generation: Option<u64>, routes: &[Arc<Route>]) {
        *self.lock() = generation.map(|generation| (generation, routes.to_vec()));
    }

    /// Lets go of the listing: the store is changing.
    pub fn clear(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, Vec<Arc<Route>>)>> {
        // Every update replaces the whole value, so a poisoned lock holds nothing half-made.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Gives a map's spare room back once it is mostly empty. A `HashMap` keeps the capacity of
/// its largest size for good, so a cache that once held 100,000 routes would keep their
/// buckets after they are deleted. It shrinks to twice its entries when they fill less than a
/// quarter of it, so that shrinking, which moves every entry, stays rare; small maps are left
/// alone.
pub fn shrink_when_sparse<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    const SMALL: usize = 1024;
    if map.capacity() > SMALL && map.len() < map.capacity() / 4 {
        map.shrink_to((2 * map.len()).max(SMALL));
    }
}

#[cfg(test)]
mod tests {
    use proxy_api::{RouteSpec, RoutingMode, Target};

    use super::*;

    fn route(spec: &str) -> Arc<Route> {
        let spec = RouteSpec::new(spec, RoutingMode::Path).unwrap();
        Arc::new(Route::new(spec, Target::parse("http://a:1").unwrap(), Default::default()).unwrap())
    }

    #[test]
    fn a_listing_serves_its_own_generation_only() {
        let listing = Listing::default();
        listing.keep(Some(3), &[route("/a")]);
        assert_eq!(listing.at(Some(3)).unwrap().len(), 1);
        assert!(listing.at(Some(4)).is_none());
        assert!(listing.at(Some(3)).is_none(), "let go once the store moved on");

        listing.keep(Some(5), &[route("/a")]);
        listing.clear();
        assert!(listing.at(Some(5)).is_none());
        listing.keep(None, &[route("/a")]);
        assert!(listing.at(None).is_none(), "a store without generations gets nothing kept");
    }

    #[test]
    fn a_map_that_emptied_gives_its_room_back() {
        let mut map: HashMap<u64, u64> = (0..100_000).map(|i| (i, i)).collect();
        map.retain(|key, _| *key < 10_000);
        shrink_when_sparse(&mut map);
        assert!(map.capacity() < 40_000, "capacity {}", map.capacity());
        assert_eq!(map.len(), 10_000);

        // Shrinking again right away would move every entry for little: it is not sparse now.
        let capacity = map.capacity();
        shrink_when_sparse(&mut map);
        assert_eq!(map.capacity(), capacity);

        let mut small: HashMap<u64, u64> = HashMap::with_capacity(1000);
        small.insert(1, 1);
        shrink_when_sparse(&mut small);
        assert!(small.capacity() >= 1000, "small maps are left alone");
    }
}
