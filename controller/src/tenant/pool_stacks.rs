//! After the baseline step: the stacks a pool's Baseline made in an account this Tenant took
//! from the pool, which its own Baseline does not replace (`status.poolStacks`, recorded with
//! the claim). They are deleted once the Tenant's own baseline runs, so that the account
//! carries only what the Tenant asks for; then the record is forgotten.
//!
//! Only a stack that still carries the pool's tag (`silo.dev/pool`) is deleted: one the
//! Tenant's own bootstrap took over (same name, same Region) carries the Tenant's tags
//! instead. The stacks are their own record: a controller stopped anywhere describes them
//! again and repeats nothing (each DeleteStack carries a ClientRequestToken).

use std::time::Duration;

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use super::{Context, Error, RECHECK_STALLED, status::Progress};
use crate::{
    api::{PoolStacks, Tenant},
    aws::{
        Priority, SessionKey,
        cloudformation::Stack,
        stack_answers::{SessionRefusal, session_refusal},
    },
    baseline::stack::request_token,
    conditions::{self, StepOutcome},
    contract::POOL_TAG,
};

/// The Stalled reason of a pool stack CloudFormation could not delete.
const DELETE_FAILED_REASON: &str = "PoolStackDeleteFailed";
/// How soon a stack being deleted is looked at again.
const DELETION_POLL: Duration = Duration::from_secs(5);

/// What to do with the pool's stack in one Region.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Leftover {
    /// No stack by that name (or it is deleted): nothing left.
    Gone,
    /// The stack no longer carries the pool's tag: the Tenant's own now, or someone else's.
    NotThePools,
    Delete,
    Deleting,
    /// CloudFormation could not delete it: why.
    DeleteFailed(String),
}

/// Judges the stack found by the pool stack's name in one Region. Pure.
fn judge(stack: Option<&Stack>, pool: &str) -> Leftover {
    let Some(stack) = stack else { return Leftover::Gone };
    if stack.tags.get(POOL_TAG).map(String::as_str) != Some(pool) {
        return Leftover::NotThePools;
    }
    match stack.status.as_str() {
        "DELETE_COMPLETE" => Leftover::Gone,
        "DELETE_IN_PROGRESS" => Leftover::Deleting,
        "DELETE_FAILED" => {
            Leftover::DeleteFailed(stack.reason.clone().unwrap_or_else(|| "CloudFormation gave no reason".into()))
        }
        _ => Leftover::Delete,
    }
}

/// Deletes what `status.poolStacks` names, once the Tenant's own baseline is done: done once
/// nothing is left (and the record is forgotten); otherwise what `BaselineReady` says while
/// they are being deleted.
pub async fn remove(tenant: &Tenant, ctx: &Context, progress: &mut Progress) -> Result<StepOutcome, Error> {
    let Some(left) = progress.status.pool_stacks.clone() else { return Ok(deleted()) };
    let pool = progress.status.claimed_from_pool.clone().unwrap_or_default();
    let account_id = progress.status.account_id.clone().unwrap_or_default();
    let key = session_key(tenant, ctx, &left, &account_id).await?;
    let credentials = match ctx.aws.tenants.credentials(&key, &tenant.name_any(), Priority::User).await {
        Ok(credentials) => credentials,
        Err(err) if session_refusal(&err) == SessionRefusal::RoleRefused => {
            return Ok(StepOutcome::stalled(
                DELETE_FAILED_REASON,
                format!(
                    "Cannot assume {} in account {account_id} to delete stack {} that AccountPool {pool} made: {}; \
                     check the role of Baseline {:?}",
                    key.role_name, left.stack_name, err.message, left.baseline
                ),
                RECHECK_STALLED,
            ));
        }
        Err(err) => return Err(err.into()),
    };
    // A deletion that failed is sent again only at a stalled recheck (someone may have
    // removed what blocked it), not on every look.
    let rechecking = tenant
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::STALLED))
        .is_some_and(|c| c.status == "True" && c.reason == DELETE_FAILED_REASON);
    let (mut remaining, mut failed) = (vec![], vec![]);
    for region in &left.regions {
        let stacks = ctx.aws.stacks(&account_id, credentials.clone(), region, Priority::User);
        let stack = stacks.describe(&left.stack_name).await?;
        match judge(stack.as_ref(), &pool) {
            Leftover::Gone | Leftover::NotThePools => continue,
            Leftover::Deleting => {}
            Leftover::DeleteFailed(why) if !rechecking => {
                failed.push(format!("{} in {region} ({why})", left.stack_name));
            }
            Leftover::Delete | Leftover::DeleteFailed(_) => {
                let stack = stack.as_ref().expect("judged a stack");
                let token = request_token("delete-pool", &left.stack_name, stack.changed_at);
                stacks.delete(stack, &token).await?;
            }
        }
        remaining.push(region.clone());
    }
    if remaining.is_empty() {
        progress.status.pool_stacks = None;
        return Ok(deleted());
    }
    progress.status.pool_stacks = Some(PoolStacks { regions: remaining.clone(), ..left.clone() });
    if !failed.is_empty() {
        return Ok(StepOutcome::stalled(
            DELETE_FAILED_REASON,
            format!(
                "AccountPool {pool} made stacks in account {account_id} that this Tenant's baseline does not use, \
                 and CloudFormation could not delete them: {}. Remove what blocks the deletion (or delete the stack \
                 yourself); Silo tries again at every recheck",
                failed.join("; ")
            ),
            RECHECK_STALLED,
        ));
    }
    Ok(StepOutcome::wait(
        "DeletingPoolStacks",
        format!(
            "Deleting stack {} that AccountPool {pool} made, which this Tenant's baseline does not use, in {}",
            left.stack_name,
            remaining.join(", ")
        ),
        DELETION_POLL,
    ))
}

fn deleted() -> StepOutcome {
    StepOutcome::done("PoolStacksDeleted", "The stacks the pool made that this Tenant does not use are deleted")
}

/// The session of the pool's Baseline (the role that made the stacks); the default
/// organization role when that Baseline is gone.
async fn session_key(tenant: &Tenant, ctx: &Context, left: &PoolStacks, account_id: &str) -> Result<SessionKey, Error> {
    let made = ctx.baselines.get(&ObjectRef::new(&left.baseline));
    let (role_name, session_policy, external_id) = match &made {
        Some(baseline) => {
            let external_id = match &baseline.spec.external_id {
                Some(reference) => ctx.external_id(&reference.name, &reference.key).await?,
                None => None,
            };
            (baseline.spec.role_name.clone(), baseline.spec.session_policy.clone(), external_id)
        }
        None => ("OrganizationAccountAccessRole".to_string(), None, None),
    };
    Ok(SessionKey {
        tenant_uid: tenant.uid().unwrap_or_default(),
        account_id: account_id.to_string(),
        role_name,
        external_id,
        session_policy,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn stack(status: &str, pool: Option<&str>) -> Stack {
        Stack {
            id: "arn:stack".into(),
            status: status.into(),
            reason: Some("a bucket is not empty".into()),
            tags: pool.map(|p| BTreeMap::from([(POOL_TAG.to_string(), p.to_string())])).unwrap_or_default(),
            since: Duration::from_secs(1),
            changed_at: 1,
            outputs: BTreeMap::new(),
            termination_protection: false,
        }
    }

    #[test]
    fn only_a_stack_that_still_carries_the_pools_tag_is_deleted() {
        assert_eq!(judge(None, "warm"), Leftover::Gone);
        assert_eq!(judge(Some(&stack("CREATE_COMPLETE", Some("warm"))), "warm"), Leftover::Delete);
        assert_eq!(judge(Some(&stack("UPDATE_ROLLBACK_COMPLETE", Some("warm"))), "warm"), Leftover::Delete);
        assert_eq!(
            judge(Some(&stack("UPDATE_COMPLETE", None)), "warm"),
            Leftover::NotThePools,
            "the Tenant's own bootstrap took it over"
        );
        assert_eq!(judge(Some(&stack("CREATE_COMPLETE", Some("cold"))), "warm"), Leftover::NotThePools);
        assert_eq!(judge(Some(&stack("DELETE_IN_PROGRESS", Some("warm"))), "warm"), Leftover::Deleting);
        assert_eq!(judge(Some(&stack("DELETE_COMPLETE", Some("warm"))), "warm"), Leftover::Gone);
        assert_eq!(
            judge(Some(&stack("DELETE_FAILED", Some("warm"))), "warm"),
            Leftover::DeleteFailed("a bucket is not empty".into())
        );
    }
}
