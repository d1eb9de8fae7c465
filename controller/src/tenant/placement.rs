//! Step 3: placement of the account in the requested organizational unit.
//!
//! `spec.organizationalUnit` is an OU id (`ou-ab12-cdef3456`) or a path of OU names from the
//! root (`/Tenants/Production`, or `/` for the root itself). A missing OU stalls the tenant
//! with `OrganizationalUnitNotFound`, unless the controller runs with `--create-missing-ous`.
//!
//! Tenant accounts go only where the controller allows (`--tenant-ou-root`, repeatable: OU
//! paths or ids, and everything below them); without the flag, anywhere but the root itself.
//! A target outside is `Stalled` with `OrganizationalUnitNotAllowed`, and nothing is moved or
//! created.
//!
//! Observe (the target and the account's parent, from the organization index, reading
//! through to AWS on a miss) -> decide ([`allowed`] and [`plan`], pure) -> act (MoveAccount).

use kube::runtime::events::EventType;

use super::{
    Context, Error, RECHECK_STALLED,
    schedule::Mode,
    status::{Progress, trusted},
};
use crate::{
    api::Tenant,
    aws::AwsError,
    aws::Priority,
    conditions::{self, StepOutcome},
    org::{Organization, Placed, Resolved, Target},
};

/// What the placement step does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// No placement requested: the account stays where it is.
    Stay,
    /// The requested OU does not exist.
    NotFound,
    /// The account is where it should be.
    InPlace { parent: String },
    /// Move the account from where it is (as far as Silo knows) to `to`.
    Move { to: String },
}

/// Whether an OU (by its path of names from the root) may hold tenant accounts: at or below
/// one of the allowed roots (paths); with no roots configured (`None`), anywhere but the
/// root. Pure.
pub fn allowed(path: &[String], roots: Option<&[Vec<String>]>) -> bool {
    match roots {
        None => !path.is_empty(),
        Some(roots) => roots.iter().any(|root| path.len() >= root.len() && path[..root.len()] == root[..]),
    }
}

/// Decides from what `spec.organizationalUnit` resolved to and the account's parent. Pure.
pub fn plan(resolved: Option<&Resolved>, current: Option<&str>) -> Plan {
    match resolved {
        None => Plan::Stay,
        Some(Resolved::NotFound) => Plan::NotFound,
        Some(Resolved::Parent(target)) if current == Some(target.as_str()) => Plan::InPlace { parent: target.clone() },
        Some(Resolved::Parent(target)) => Plan::Move { to: target.clone() },
    }
}

/// Everything the placement step works with in one reconcile.
pub struct PlacementStep<'a> {
    pub tenant: &'a Tenant,
    pub mode: Mode,
    pub ctx: &'a Context,
}

impl PlacementStep<'_> {
    /// Runs the placement step; the account step is done, so the account id is recorded.
    pub async fn run(&self, progress: &mut Progress) -> Result<StepOutcome, Error> {
        if let Some(trusted) = trusted(self.tenant, self.mode, conditions::PLACEMENT_READY) {
            return Ok(trusted);
        }
        let org = &self.ctx.org;
        let account_id = progress.status.account_id.clone().unwrap_or_default();
        let wanted = self.tenant.spec.organizational_unit.as_deref();
        let resolved = match wanted {
            Some(spec) => {
                let target = Target::parse(spec);
                if !target_allowed(org, &target, &self.ctx.config.tenant_ou_roots).await? {
                    return Ok(self.not_allowed(spec));
                }
                Some(org.resolve(&target, self.ctx.config.create_missing_ous).await?)
            }
            None => None,
        };
        let current = org.account(&account_id, Priority::User).await?.and_then(|a| a.parent);
        match plan(resolved.as_ref(), current.as_deref()) {
            Plan::Stay => {
                progress.status.organizational_unit_id = current;
                Ok(StepOutcome::done("NoPlacementRequested", "The account stays where it is"))
            }
            Plan::NotFound => Ok(StepOutcome::stalled(
                "OrganizationalUnitNotFound",
                format!(
                    "Organizational unit {} does not exist: create it in AWS Organizations, fix \
                     spec.organizationalUnit, or run the controller with --create-missing-ous",
                    wanted.unwrap_or_default()
                ),
                RECHECK_STALLED,
            )),
            Plan::InPlace { parent } => {
                progress.status.organizational_unit_id = Some(parent.clone());
                Ok(StepOutcome::done("Placed", format!("The account is in {parent}")))
            }
            Plan::Move { to } => {
                if let Placed::Moved { from } = org.place(&account_id, &to).await? {
                    let note = format!("Moved account {account_id} from {from} to {to}");
                    self.ctx.event(self.tenant, EventType::Normal, "AccountMoved", note).await;
                }
                progress.status.organizational_unit_id = Some(to.clone());
                Ok(StepOutcome::done("Placed", format!("The account is in {to}")))
            }
        }
    }
}

/// Whether `target` may hold tenant accounts under the controller's `--tenant-ou-root`s
/// (`configured`), from the index, reading through to AWS. An OU id that does not exist is
/// not judged here (`true`): resolving it finds it missing.
pub async fn target_allowed(org: &Organization, target: &Target, configured: &[String]) -> Result<bool, AwsError> {
    let Some(path) = path(org, target).await? else { return Ok(true) };
    if configured.is_empty() {
        return Ok(allowed(&path, None));
    }
    // A root given as an OU id that does not exist allows nothing.
    let mut roots = vec![];
    for root in configured {
        if let Some(root) = self::path(org, &Target::parse(root)).await? {
            roots.push(root);
        }
    }
    Ok(allowed(&path, Some(&roots)))
}

/// The path of a target, `None` for an OU id that does not exist.
async fn path(org: &Organization, target: &Target) -> Result<Option<Vec<String>>, AwsError> {
    Ok(match target {
        Target::Path(names) => Some(names.clone()),
        Target::Id(id) => org.path_of(id).await?,
    })
}

impl PlacementStep<'_> {
    fn not_allowed(&self, wanted: &str) -> StepOutcome {
        let roots = &self.ctx.config.tenant_ou_roots;
        let message = if roots.is_empty() {
            format!(
                "spec.organizationalUnit {wanted} is the organization's root, where tenant accounts do not go: name an \
                 OU below it (and run the controller with --tenant-ou-root to say which)"
            )
        } else {
            format!(
                "spec.organizationalUnit {wanted} is outside the OUs this controller places tenant accounts in ({}); \
                 nothing was moved: name an OU at or below one of them",
                roots.join(", ")
            )
        };
        StepOutcome::stalled("OrganizationalUnitNotAllowed", message, RECHECK_STALLED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_accounts_go_only_under_the_allowed_roots() {
        let path = |p: &str| -> Vec<String> { p.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect() };
        let table: &[(&str, Option<&[&str]>, bool)] = &[
            ("/", None, false),
            ("/Tenants", None, true),
            ("/Tenants", Some(&["/Tenants"]), true),
            ("/Tenants/Prod/EU", Some(&["/Tenants"]), true),
            ("/TenantsOld", Some(&["/Tenants"]), false),
            ("/Other/X", Some(&["/Tenants", "/Sandbox"]), false),
            ("/Sandbox/X", Some(&["/Tenants", "/Sandbox"]), true),
            ("/", Some(&["/"]), true),
            ("/Tenants", Some(&[]), false),
        ];
        for (target, roots, expected) in table {
            let roots: Option<Vec<Vec<String>>> = roots.map(|roots| roots.iter().map(|r| path(r)).collect());
            assert_eq!(allowed(&path(target), roots.as_deref()), *expected, "{target} under {roots:?}");
        }
    }

    #[test]
    fn every_placement_case() {
        let ou = |id: &str| Resolved::Parent(id.into());
        let table: &[(&str, Option<Resolved>, Option<&str>, Plan)] = &[
            ("nothing requested", None, Some("r-1"), Plan::Stay),
            ("the OU does not exist", Some(Resolved::NotFound), Some("r-1"), Plan::NotFound),
            ("already there", Some(ou("ou-a")), Some("ou-a"), Plan::InPlace { parent: "ou-a".into() }),
            ("elsewhere: move", Some(ou("ou-a")), Some("r-1"), Plan::Move { to: "ou-a".into() }),
            ("parent unknown: move (MoveAccount finds out)", Some(ou("ou-a")), None, Plan::Move { to: "ou-a".into() }),
        ];
        for (case, resolved, current, expected) in table {
            assert_eq!(&plan(resolved.as_ref(), *current), expected, "{case}");
        }
    }
}
