//! Host pattern lookups whose cost does not grow with the number of patterns: exact hosts in a
//! hash map, `*.suffix` wildcards in a second map probed once per label of the host (every
//! suffix that follows a `.` other than the first byte). Built once per config snapshot
//! ([`Routes`]) for classifying requests, and during validation ([`OverlapIndex`]) to find
//! overlapping patterns without comparing every pair.
//!
//! Both give exactly the answers of [`HostPattern::matches`] and [`HostPattern::overlaps`]
//! applied to every pattern in turn (see the differential tests).

use super::{Destination, Domestic, HostPattern};
use std::collections::HashMap;

/// The suffixes a `*.suffix` pattern would have to equal to match `host`: the text after each
/// `.` that is not the first byte (the wildcard needs at least one byte before the dot).
fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    host.bytes()
        .enumerate()
        .skip(1)
        .filter(|&(_, b)| b == b'.')
        .map(move |(i, _)| &host[i + 1..])
}

/// Patterns with an id each; answers the smallest id among the patterns that match a host.
#[derive(Debug, Clone, Default)]
pub struct HostIndex {
    exact: HashMap<String, usize>,
    wild: HashMap<String, usize>,
}

impl HostIndex {
    /// Adds a pattern; an id already present for the same pattern text is kept if smaller.
    pub fn insert(&mut self, p: &HostPattern, id: usize) {
        let (map, key) = match p {
            HostPattern::Exact(h) => (&mut self.exact, h),
            HostPattern::Wildcard(s) => (&mut self.wild, s),
        };
        let e = map.entry(key.clone()).or_insert(id);
        *e = (*e).min(id);
    }

    /// The smallest id of the patterns matching `host` (already lower-cased, without port or
    /// trailing dot, as for [`HostPattern::matches`]).
    pub fn first_match(&self, host: &str) -> Option<usize> {
        let exact = self.exact.get(host).copied();
        if self.wild.is_empty() {
            return exact;
        }
        wildcard_suffixes(host)
            .filter_map(|s| self.wild.get(s).copied())
            .chain(exact)
            .min()
    }
}

/// The host lookups of one config snapshot.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Destination host patterns; ids are indices into `Config::destinations`.
    pub destinations: HostIndex,
    /// Domestic host patterns; ids are indices into `Domestic::hosts`.
    pub domestic: HostIndex,
}

impl Routes {
    /// Indexes every destination's and every domestic host pattern.
    pub fn build(destinations: &[Destination], domestic: &Domestic) -> Self {
        let mut r = Routes::default();
        for (i, d) in destinations.iter().enumerate() {
            for p in &d.hosts {
                r.destinations.insert(p, i);
            }
        }
        for (i, p) in domestic.hosts.iter().enumerate() {
            r.domestic.insert(p, i);
        }
        r
    }
}

/// Patterns with ids, answering which ids have a pattern that overlaps a given one
/// ([`HostPattern::overlaps`]).
#[derive(Debug, Default)]
pub(crate) struct OverlapIndex {
    exact: HashMap<String, Vec<usize>>,
    wild: HashMap<String, Vec<usize>>,
    /// Every wildcard suffix of every pattern (see [`wildcard_suffixes`]): the patterns a
    /// `*.key` wildcard matches.
    under: HashMap<String, Vec<usize>>,
}

impl OverlapIndex {
    /// Adds a pattern under `id`.
    pub(crate) fn insert(&mut self, p: &HostPattern, id: usize) {
        let (map, key) = match p {
            HostPattern::Exact(h) => (&mut self.exact, h),
            HostPattern::Wildcard(s) => (&mut self.wild, s),
        };
        map.entry(key.clone()).or_default().push(id);
        for s in wildcard_suffixes(key) {
            self.under.entry(s.to_owned()).or_default().push(id);
        }
    }

    /// The ids of the patterns that overlap `p`, ascending, each once.
    pub(crate) fn overlapping(&self, p: &HostPattern) -> Vec<usize> {
        let mut ids: Vec<usize> = Vec::new();
        let mut add = |v: Option<&Vec<usize>>| ids.extend(v.into_iter().flatten().copied());
        match p {
            HostPattern::Exact(e) => {
                add(self.exact.get(e));
                for s in wildcard_suffixes(e) {
                    add(self.wild.get(s));
                }
            }
            HostPattern::Wildcard(a) => {
                add(self.wild.get(a));
                for s in wildcard_suffixes(a) {
                    add(self.wild.get(s));
                }
                add(self.under.get(a));
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Random host names and patterns over a small label pool (so that they overlap often), for
/// the differential tests here and in `proxy::classify`.
#[cfg(test)]
pub(crate) mod strategies {
    use super::HostPattern;
    use proptest::prelude::*;

    /// A name of 1–4 labels from `labels` (an empty label now and then).
    pub(crate) fn name(labels: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                8 => prop::sample::select(labels).prop_map(str::to_owned),
                1 => Just(String::new()),
            ],
            1..5,
        )
        .prop_map(|ls| ls.join("."))
    }

    /// A pattern as written in a config (parsed; unparseable ones are `None`): exact or `*.`,
    /// with a trailing dot now and then.
    pub(crate) fn pattern(
        labels: &'static [&'static str],
    ) -> impl Strategy<Value = Option<HostPattern>> {
        (prop::bool::ANY, name(labels), prop::bool::weighted(0.2)).prop_map(|(wild, n, dot)| {
            let raw = format!(
                "{}{n}{}",
                if wild { "*." } else { "" },
                if dot { "." } else { "" }
            );
            HostPattern::parse(&raw).ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Label pool with deliberate collisions, so random patterns overlap often.
    const LABELS: [&str; 6] = ["a", "b", "example", "com", "x-y", "EXAMPLE"];

    fn name() -> impl Strategy<Value = String> {
        strategies::name(&LABELS)
    }

    fn pattern() -> impl Strategy<Value = Option<HostPattern>> {
        strategies::pattern(&LABELS)
    }

    /// A request host, normalised as `classify` does.
    fn host() -> impl Strategy<Value = String> {
        (name(), prop::bool::weighted(0.2)).prop_map(|(n, dot)| {
            super::super::normalize_host(&format!("{n}{}", if dot { "." } else { "" }))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// `first_match` equals the first pattern, in insertion order, whose `matches` holds.
        #[test]
        fn first_match_is_the_linear_scan(
            groups in prop::collection::vec(prop::collection::vec(pattern(), 1..4), 0..12),
            hosts in prop::collection::vec(host(), 1..16),
        ) {
            let groups: Vec<Vec<HostPattern>> =
                groups.into_iter().map(|g| g.into_iter().flatten().collect()).collect();
            let mut idx = HostIndex::default();
            for (i, g) in groups.iter().enumerate() {
                for p in g {
                    idx.insert(p, i);
                }
            }
            for h in &hosts {
                let linear = groups.iter().position(|g| g.iter().any(|p| p.matches(h)));
                prop_assert_eq!(idx.first_match(h), linear, "host {:?} in {:?}", h, groups);
            }
        }

        /// `overlapping` equals the ids whose patterns `overlaps` holds for, checked pairwise.
        #[test]
        fn overlapping_is_the_pairwise_check(
            pats in prop::collection::vec(pattern(), 0..16),
            probes in prop::collection::vec(pattern(), 1..8),
        ) {
            let pats: Vec<HostPattern> = pats.into_iter().flatten().collect();
            let mut idx = OverlapIndex::default();
            for (i, p) in pats.iter().enumerate() {
                idx.insert(p, i);
            }
            for q in probes.iter().flatten() {
                let pairwise: Vec<usize> =
                    (0..pats.len()).filter(|&i| pats[i].overlaps(q)).collect();
                prop_assert_eq!(idx.overlapping(q), pairwise, "{} in {:?}", q, pats);
            }
        }
    }

    #[test]
    fn tricky_hosts() {
        let p = |s: &str| HostPattern::parse(s).unwrap();
        let mut idx = HostIndex::default();
        idx.insert(&p("*.example.com"), 2);
        idx.insert(&p("*.b.example.com"), 1);
        idx.insert(&p("Example.com."), 3);
        assert_eq!(idx.first_match("a.b.example.com"), Some(1));
        assert_eq!(idx.first_match("b.example.com"), Some(2));
        assert_eq!(idx.first_match("example.com"), Some(3));
        assert_eq!(idx.first_match(".example.com"), None);
        assert_eq!(idx.first_match("..example.com"), Some(2));
        assert_eq!(idx.first_match("com"), None);
        assert_eq!(idx.first_match(""), None);
    }
}
