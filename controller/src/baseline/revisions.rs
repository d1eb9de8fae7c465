//! A Baseline's revisions, kept as `apps/v1` ControllerRevisions in Silo's namespace (the way
//! a StatefulSet keeps its history), owned by the Baseline and labelled with its name.
//!
//! Each holds one [`Deployed`] as its data; its name is `<baseline>-<revision>`, and its
//! `revision` number grows with each new content. History beyond the Baseline's
//! `revisionHistoryLimit` is pruned, oldest first, but a revision a tenant still runs (or the
//! rollout still names) is never pruned.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::apps::v1::ControllerRevision,
    apimachinery::pkg::{apis::meta::v1::OwnerReference, runtime::RawExtension},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
    runtime::reflector::Store,
};

use super::Deployed;
use crate::api::Baseline;

/// The label naming the Baseline a revision belongs to.
pub const BASELINE_LABEL: &str = "silo.dev/baseline";
/// Revisions kept besides those in use, unless the Baseline says otherwise.
pub const DEFAULT_HISTORY_LIMIT: u32 = 10;

/// The name of a Baseline's revision object.
pub fn name(baseline: &str, revision: &str) -> String {
    format!("{baseline}-{revision}")
}

/// What a revision object deploys; `None` when its data is not Silo's.
pub fn deployed(object: &ControllerRevision) -> Option<Deployed> {
    serde_json::from_value(object.data.0.clone()).ok()
}

/// A Baseline revision's content from the cache of revision objects.
pub fn find(store: &Store<ControllerRevision>, namespace: &str, baseline: &str, revision: &str) -> Option<Deployed> {
    let key = kube::runtime::reflector::ObjectRef::new(&name(baseline, revision)).within(namespace);
    deployed(store.get(&key)?.as_ref())
}

/// The revision objects of one Baseline, oldest first.
pub fn of_baseline(store: &Store<ControllerRevision>, baseline: &str) -> Vec<ControllerRevision> {
    let mut revisions: Vec<ControllerRevision> = store
        .state()
        .into_iter()
        .filter(|r| r.labels().get(BASELINE_LABEL).map(String::as_str) == Some(baseline))
        .map(|r| r.as_ref().clone())
        .collect();
    revisions.sort_by_key(|r| r.revision.unwrap_or_default());
    revisions
}

/// Records `deployed` as the Baseline's revision `revision`, if it is not recorded yet.
/// Creating an existing name is a no-op, so a controller killed after the call is safe.
pub async fn record(
    api: &Api<ControllerRevision>,
    baseline: &Baseline,
    existing: &[ControllerRevision],
    revision: &str,
    deployed: &Deployed,
) -> Result<(), kube::Error> {
    let name = name(&baseline.name_any(), revision);
    if existing.iter().any(|r| r.name_any() == name) {
        return Ok(());
    }
    let next = existing.iter().filter_map(|r| r.revision).max().unwrap_or(0) + 1;
    let owner = OwnerReference {
        api_version: Baseline::api_version(&()).into_owned(),
        kind: Baseline::kind(&()).into_owned(),
        name: baseline.name_any(),
        uid: baseline.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let object = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(BTreeMap::from([(BASELINE_LABEL.to_string(), baseline.name_any())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: RawExtension(serde_json::to_value(deployed).expect("a revision serializes")),
        revision: Some(next),
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

/// The revision objects to delete: beyond `limit`, oldest first, never one in use. Pure.
pub fn to_prune(existing: &[ControllerRevision], in_use: &BTreeSet<&str>, limit: u32) -> Vec<String> {
    let unused: Vec<&ControllerRevision> =
        existing.iter().filter(|r| !in_use.iter().any(|u| r.name_any().ends_with(&format!("-{u}")))).collect();
    let excess = unused.len().saturating_sub(limit as usize);
    let mut oldest = unused;
    oldest.sort_by_key(|r| r.revision.unwrap_or_default());
    oldest.into_iter().take(excess).map(|r| r.name_any()).collect()
}

/// Deletes revision objects by name (already gone is fine).
pub async fn prune(api: &Api<ControllerRevision>, names: &[String]) -> Result<(), kube::Error> {
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(baseline: &str, hash: &str, number: i64) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta { name: Some(name(baseline, hash)), ..Default::default() },
            data: RawExtension(serde_json::Value::Null),
            revision: Some(number),
        }
    }

    #[test]
    fn history_is_pruned_oldest_first_but_never_a_revision_in_use() {
        let existing: Vec<ControllerRevision> = (1..=6).map(|n| revision("std", &format!("h{n}"), n)).collect();
        let in_use = BTreeSet::from(["h1", "h6"]);
        assert_eq!(to_prune(&existing, &in_use, 2), vec!["std-h2".to_string(), "std-h3".to_string()]);
        assert!(to_prune(&existing, &in_use, 10).is_empty());
    }
}
