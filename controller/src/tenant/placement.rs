//! Step 3: placement of the account in the requested organizational unit.
//!
//! `spec.organizationalUnit` is an OU id (`ou-ab12-cdef3456`) or a path of OU names from the
//! root (`/Tenants/Production`, or `/` for the root itself). A missing OU stalls the tenant
//! with `OrganizationalUnitNotFound`, unless the controller runs with `--create-missing-ous`.

use std::time::Duration;

use kube::runtime::events::EventType;

use super::{Context, Error, status::Report};
use crate::{api::Tenant, conditions::StepOutcome};

const RECHECK_STALLED: Duration = Duration::from_secs(600);

/// What `spec.organizationalUnit` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// No placement requested: the account stays where it is.
    Unspecified,
    Id(String),
    /// OU names from the root; empty for the root itself.
    Path(Vec<String>),
}

/// Parses `spec.organizationalUnit`. Pure; the schema has already checked the shape.
pub fn target(spec: Option<&str>) -> Target {
    match spec {
        None => Target::Unspecified,
        Some(path) if path.starts_with('/') => {
            Target::Path(path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect())
        }
        Some(id) => Target::Id(id.to_string()),
    }
}

/// Runs the placement step; returns when to come back if it is not done.
pub async fn run(tenant: &Tenant, report: &mut Report<'_>, ctx: &Context) -> Result<Duration, Error> {
    let Some(account_id) = report.status.account_id.clone() else {
        return Ok(Duration::MAX);
    };
    let wanted = tenant.spec.organizational_unit.as_deref();
    let target_id = match resolve(target(wanted), ctx).await? {
        Resolved::Parent(id) => Some(id),
        Resolved::Stay => None,
        Resolved::NotFound => {
            let wanted = wanted.unwrap_or_default();
            report.placement = Some(StepOutcome::stalled(
                "OrganizationalUnitNotFound",
                format!(
                    "Organizational unit {wanted} does not exist: create it in AWS Organizations, fix spec.organizationalUnit, \
                     or run the controller with --create-missing-ous"
                ),
            ));
            return Ok(RECHECK_STALLED);
        }
    };
    let org = &ctx.aws.organizations;
    let current = org.parent_of(&account_id).await?;
    let Some(target_id) = target_id else {
        report.status.organizational_unit_id = Some(current);
        report.placement = Some(StepOutcome::done("NoPlacementRequested", "The account stays where it is"));
        return Ok(Duration::MAX);
    };
    if current != target_id {
        if let Err(err) = org.move_account(&account_id, &current, &target_id).await {
            if err.has_code("DestinationParentNotFoundException") {
                // The cached OU was deleted since: forget what we knew and look again.
                ctx.ous.lock().expect("OU cache lock").clear();
            }
            return Err(err.into());
        }
        ctx.event(
            tenant,
            EventType::Normal,
            "AccountMoved",
            format!("Moved account {account_id} from {current} to {target_id}"),
        )
        .await;
    }
    report.status.organizational_unit_id = Some(target_id.clone());
    report.placement = Some(StepOutcome::done("Placed", format!("The account is in {target_id}")));
    Ok(Duration::MAX)
}

/// Where a target points in the organization tree.
enum Resolved {
    Stay,
    Parent(String),
    NotFound,
}

/// Resolves a target to a parent id, walking paths from the root.
///
/// Resolved ids and paths are cached for the whole fleet ([`Context::ous`]); a miss walks
/// the tree again, so an OU created since is found. A cached OU that was deleted since is
/// dropped when MoveAccount reports it missing.
async fn resolve(target: Target, ctx: &Context) -> Result<Resolved, Error> {
    let org = &ctx.aws.organizations;
    let cached = |key: &str| ctx.ous.lock().expect("OU cache lock").get(key).cloned();
    let remember = |key: String, id: &str| ctx.ous.lock().expect("OU cache lock").insert(key, id.to_string());
    match target {
        Target::Unspecified => Ok(Resolved::Stay),
        Target::Id(id) => {
            if cached(&id).is_some() || org.unit_exists(&id).await? {
                remember(id.clone(), &id);
                return Ok(Resolved::Parent(id));
            }
            Ok(Resolved::NotFound)
        }
        Target::Path(names) => {
            let full = format!("/{}", names.join("/"));
            if let Some(id) = cached(&full) {
                return Ok(Resolved::Parent(id));
            }
            let mut parent = org.root_id().await?;
            let mut path = String::new();
            for name in names {
                path = format!("{path}/{name}");
                let children = org.child_units(&parent).await?;
                parent = match children.into_iter().find(|ou| ou.name == name) {
                    Some(ou) => ou.id,
                    None if ctx.settings.create_missing_ous => {
                        let created = org.create_unit(&parent, &name).await?;
                        tracing::info!(path, ou = %created.id, "created organizational unit");
                        created.id
                    }
                    None => return Ok(Resolved::NotFound),
                };
                remember(path.clone(), &parent);
            }
            remember(full, &parent);
            Ok(Resolved::Parent(parent))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_ids_or_paths_from_the_root() {
        assert_eq!(target(None), Target::Unspecified);
        assert_eq!(target(Some("ou-ab12-cdef3456")), Target::Id("ou-ab12-cdef3456".into()));
        assert_eq!(target(Some("/Tenants/Production")), Target::Path(vec!["Tenants".into(), "Production".into()]));
        assert_eq!(target(Some("/")), Target::Path(vec![]));
    }
}
