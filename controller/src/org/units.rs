//! Organizational units named by id or by path: one resolver for the whole process.
//!
//! `spec.organizationalUnit`, `--tenant-ou-root`, `silo import --ou` and the orphan gauge all
//! name an OU the same way: an id (`ou-ab12-cdef3456`, or the root's `r-...`) or a path of OU
//! names from the root (`/Tenants/Production`; `/` is the root). [`Target::parse`] reads that
//! form once, and [`walk`] and [`resolve`] follow it over any view of the OU tree (the
//! organization index, or the tree `silo import` read), given as closures. The placement step
//! reads through to AWS for what the index does not know ([`super::Organization::resolve`]),
//! with [`walk`] telling it where the known part of a path ends.
//!
//! Everything here is pure.

/// What `spec.organizationalUnit` (or `--tenant-ou-root`, or `--ou`) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Id(String),
    /// OU names from the root; empty for the root itself.
    Path(Vec<String>),
}

impl Target {
    /// Parses an OU given as an id or a path (the schema or the flag's help has told the user
    /// the shape).
    pub fn parse(spec: &str) -> Self {
        if spec.starts_with('/') {
            Target::Path(spec.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect())
        } else {
            Target::Id(spec.to_string())
        }
    }
}

/// Where a path of OU names leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathLookup {
    /// The OU (or the root, for an empty path).
    Found(String),
    /// The first `depth` names were found, ending at `parent`; the next one is not known.
    Missing { parent: String, depth: usize },
    /// The root is not known yet.
    NoRoot,
}

/// Follows a path of OU names from `root` as far as `child_named(parent, name)` knows it.
pub fn walk(root: Option<&str>, names: &[String], child_named: impl Fn(&str, &str) -> Option<String>) -> PathLookup {
    let Some(root) = root else { return PathLookup::NoRoot };
    let mut parent = root.to_string();
    for (depth, name) in names.iter().enumerate() {
        match child_named(&parent, name) {
            Some(id) => parent = id,
            None => return PathLookup::Missing { parent, depth },
        }
    }
    PathLookup::Found(parent)
}

/// The id of the OU `spec` names (an id or a path), in a tree given by its root, whether an id
/// is one of its OUs, and its children by name; `None` when the tree has no such OU.
pub fn resolve(
    spec: &str,
    root: &str,
    has_unit: impl Fn(&str) -> bool,
    child_named: impl Fn(&str, &str) -> Option<String>,
) -> Option<String> {
    match Target::parse(spec) {
        Target::Id(id) => (id == root || has_unit(&id)).then_some(id),
        Target::Path(names) => match walk(Some(root), &names, child_named) {
            PathLookup::Found(id) => Some(id),
            PathLookup::Missing { .. } | PathLookup::NoRoot => None,
        },
    }
}

/// The chain of parents from `parent` up to the root, both included, by `parent_of` (which
/// answers `None` at the root, or for an OU it does not know). AWS nests OUs at most five
/// deep, so a longer chain (a cycle in a stale view) is cut.
pub fn ancestors(parent: &str, parent_of: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut chain = vec![parent.to_string()];
    while let Some(up) = parent_of(chain.last().expect("never empty")) {
        if chain.contains(&up) || chain.len() > 8 {
            break;
        }
        chain.push(up);
    }
    chain
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// r-1 > Tenants (ou-t) > Prod (ou-p); r-1 > Sandbox (ou-s).
    fn tree() -> BTreeMap<&'static str, (&'static str, &'static str)> {
        BTreeMap::from([("ou-t", ("Tenants", "r-1")), ("ou-p", ("Prod", "ou-t")), ("ou-s", ("Sandbox", "r-1"))])
    }

    fn child_named(parent: &str, name: &str) -> Option<String> {
        tree().into_iter().find(|(_, (n, p))| *p == parent && *n == name).map(|(id, _)| id.to_string())
    }

    #[test]
    fn targets_parse_as_ids_or_paths() {
        assert_eq!(Target::parse("ou-ab12-cdef3456"), Target::Id("ou-ab12-cdef3456".into()));
        assert_eq!(Target::parse("/Tenants/Production"), Target::Path(vec!["Tenants".into(), "Production".into()]));
        assert_eq!(Target::parse("/"), Target::Path(vec![]));
    }

    #[test]
    fn a_walk_says_where_the_known_path_ends() {
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(walk(None, &path(&["Tenants"]), child_named), PathLookup::NoRoot);
        assert_eq!(walk(Some("r-1"), &path(&[]), child_named), PathLookup::Found("r-1".into()));
        assert_eq!(walk(Some("r-1"), &path(&["Tenants", "Prod"]), child_named), PathLookup::Found("ou-p".into()));
        assert_eq!(
            walk(Some("r-1"), &path(&["Tenants", "Staging"]), child_named),
            PathLookup::Missing { parent: "ou-t".into(), depth: 1 }
        );
    }

    #[test]
    fn ids_and_paths_resolve_to_the_same_ou() {
        let has_unit = |id: &str| tree().contains_key(id);
        let cases: [(&str, Option<&str>); 6] = [
            ("/", Some("r-1")),
            ("/Tenants/Prod", Some("ou-p")),
            ("/Tenants/Staging", None),
            ("ou-s", Some("ou-s")),
            ("ou-nope-12345678", None),
            ("r-1", Some("r-1")),
        ];
        for (spec, want) in cases {
            assert_eq!(resolve(spec, "r-1", has_unit, child_named).as_deref(), want, "resolve {spec}");
        }
    }

    #[test]
    fn ancestors_stop_at_the_root_and_at_cycles() {
        let parent_of = |id: &str| tree().get(id).map(|(_, p)| p.to_string());
        assert_eq!(ancestors("ou-p", parent_of), ["ou-p", "ou-t", "r-1"]);
        assert_eq!(ancestors("r-1", parent_of), ["r-1"]);
        let cycle = |id: &str| Some(if id == "a" { "b" } else { "a" }.to_string());
        assert_eq!(ancestors("a", cycle), ["a", "b"]);
    }
}
