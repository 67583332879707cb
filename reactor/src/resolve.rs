//! Dependency resolution: which units can load, and in what order.
//!
//! Load order is a topological sort of the manifests' `dependencies`. A unit whose dependency
//! is absent, of the wrong version, refused itself, or part of a cycle is refused with an error
//! that names the units involved.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use swarm_schemas::UnitManifest;

use crate::LoadError;

/// The outcome of resolving a set of manifests.
#[derive(Debug, Default)]
pub(crate) struct Resolution {
    /// Names in an order where every unit comes after its dependencies.
    pub order: Vec<String>,
    /// Units that cannot load, with why.
    pub refused: BTreeMap<String, LoadError>,
}

/// Resolves `manifests` (names are unique). Every dependency must be among them.
pub(crate) fn resolve<'a>(manifests: impl IntoIterator<Item = &'a UnitManifest>) -> Resolution {
    let by_name: BTreeMap<&str, &UnitManifest> = manifests
        .into_iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let mut refused = unmet_dependencies(&by_name);
    let live: BTreeSet<&str> = by_name
        .keys()
        .copied()
        .filter(|n| !refused.contains_key(*n))
        .collect();
    let deps_of = |name: &str| -> Vec<&str> {
        by_name[name]
            .dependencies
            .iter()
            .map(|d| d.name.as_str())
            .filter(|d| by_name.contains_key(d))
            .collect()
    };
    let order = topological_order(&live, &deps_of);
    // Whatever is left waits on a refused unit or sits on (or behind) a cycle.
    let placed: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let stuck: Vec<&str> = live
        .iter()
        .copied()
        .filter(|n| !placed.contains(n))
        .collect();
    for name in &stuck {
        let error = match find_cycle(name, &stuck, &deps_of) {
            Some(cycle) => LoadError::DependencyCycle { cycle },
            None => blocked(by_name[*name], &placed, &deps_of),
        };
        refused.insert((*name).to_owned(), error);
    }
    Resolution { order, refused }
}

/// Direct problems: absent dependencies and unsatisfied versions, by unit.
fn unmet_dependencies(by_name: &BTreeMap<&str, &UnitManifest>) -> BTreeMap<String, LoadError> {
    let mut refused = BTreeMap::new();
    for (name, manifest) in by_name {
        for dep in &manifest.dependencies {
            let error = match by_name.get(dep.name.as_str()) {
                None => LoadError::MissingDependency {
                    unit: (*name).to_owned(),
                    dependency: dep.name.clone(),
                    requirement: dep.version.to_string(),
                },
                Some(found) if !dep.version.matches(&found.version) => {
                    LoadError::DependencyVersion {
                        unit: (*name).to_owned(),
                        dependency: dep.name.clone(),
                        requirement: dep.version.to_string(),
                        found: found.version.to_string(),
                    }
                }
                Some(_) => continue,
            };
            refused.entry((*name).to_owned()).or_insert(error);
        }
    }
    refused
}

/// Kahn's algorithm over `live`: every unit after its dependencies. A unit that waits on one
/// not in `live` (refused) or on a cycle is left out.
fn topological_order<'a>(
    live: &BTreeSet<&'a str>,
    deps_of: &dyn Fn(&str) -> Vec<&'a str>,
) -> Vec<String> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for name in live {
        let deps = deps_of(name);
        waiting.insert(name, deps.len());
        for dep in deps {
            dependents.entry(dep).or_default().push(name);
        }
    }
    let mut ready: VecDeque<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(name, _)| *name)
        .collect();
    let mut order = Vec::new();
    while let Some(name) = ready.pop_front() {
        order.push(name.to_owned());
        for dependent in dependents.get(name).map(Vec::as_slice).unwrap_or_default() {
            if let Some(count) = waiting.get_mut(dependent) {
                *count -= 1;
                if *count == 0 {
                    ready.push_back(dependent);
                }
            }
        }
    }
    order
}

/// Why `manifest`'s unit, on no cycle, could not be placed: the first dependency that was not.
fn blocked<'a>(
    manifest: &UnitManifest,
    placed: &BTreeSet<&str>,
    deps_of: &dyn Fn(&str) -> Vec<&'a str>,
) -> LoadError {
    let blocker = deps_of(&manifest.name)
        .into_iter()
        .find(|d| !placed.contains(d))
        .unwrap_or_default();
    LoadError::MissingDependency {
        unit: manifest.name.clone(),
        dependency: blocker.to_owned(),
        requirement: manifest
            .dependencies
            .iter()
            .find(|d| d.name == blocker)
            .map_or_else(|| "*".to_owned(), |d| d.version.to_string()),
    }
}

/// Follows unplaced dependencies from `start`; returns the cycle it runs into, if `start` is
/// on it, as names with the first repeated at the end.
fn find_cycle<'a>(
    start: &'a str,
    stuck: &[&'a str],
    deps_of: &dyn Fn(&str) -> Vec<&'a str>,
) -> Option<Vec<String>> {
    let mut path: Vec<&str> = vec![start];
    let mut current = start;
    loop {
        let next = deps_of(current).into_iter().find(|d| stuck.contains(d))?;
        if let Some(at) = path.iter().position(|n| *n == next) {
            let mut cycle: Vec<String> = path[at..].iter().map(|n| (*n).to_owned()).collect();
            cycle.push(next.to_owned());
            return cycle.contains(&start.to_owned()).then_some(cycle);
        }
        path.push(next);
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(name: &str, version: &str, deps: &[(&str, &str)]) -> UnitManifest {
        serde_json::from_value(json!({
            "name": name, "version": version, "subscribes": ["x"],
            "dependencies": deps.iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>(),
        }))
        .expect("manifest")
    }

    #[test]
    fn dependencies_load_first() {
        let units = [
            m("c", "1.0.0", &[("b", "^1")]),
            m("b", "1.2.0", &[("a", "*")]),
            m("a", "1.0.0", &[]),
        ];
        let r = resolve(&units);
        assert!(r.refused.is_empty(), "{:?}", r.refused);
        assert_eq!(r.order, vec!["a", "b", "c"]);
    }

    #[test]
    fn missing_and_wrong_version_dependencies_name_the_units() {
        let units = [
            m("a", "1.0.0", &[("ghost", "*")]),
            m("b", "1.0.0", &[("a", "*")]),
            m("c", "1.0.0", &[("d", "^2")]),
            m("d", "1.5.0", &[]),
        ];
        let r = resolve(&units);
        assert_eq!(r.order, vec!["d"]);
        assert_eq!(
            r.refused["a"].to_string(),
            "unit `a` depends on `ghost` (*), which is not loaded"
        );
        assert_eq!(
            r.refused["b"].to_string(),
            "unit `b` depends on `a` (*), which is not loaded"
        );
        assert_eq!(
            r.refused["c"].to_string(),
            "unit `c` needs `d` ^2, but version 1.5.0 is loaded"
        );
    }

    #[test]
    fn cycles_are_refused_with_the_cycle_named() {
        let units = [
            m("a", "1.0.0", &[("b", "*")]),
            m("b", "1.0.0", &[("c", "*")]),
            m("c", "1.0.0", &[("a", "*")]),
            m("d", "1.0.0", &[("a", "*")]),
            m("e", "1.0.0", &[]),
        ];
        let r = resolve(&units);
        assert_eq!(r.order, vec!["e"]);
        assert_eq!(
            r.refused["a"].to_string(),
            "dependency cycle: a -> b -> c -> a"
        );
        assert_eq!(
            r.refused["c"].to_string(),
            "dependency cycle: c -> a -> b -> c"
        );
        assert_eq!(
            r.refused["d"].to_string(),
            "unit `d` depends on `a` (*), which is not loaded"
        );
    }
}
