//! What the organization knows beyond accounts and OUs: its service control policies (to
//! resolve `spec.policies`) and whether AWS Account Management has trusted access (which
//! account names and alternate contacts need). Both are read once and kept: they change
//! rarely, and a fleet of thousands of tenants asks about them all the time.

use std::time::{Duration, Instant};

use super::Organization;
use crate::aws::{
    AwsError, Priority,
    organizations::{AttachRefusal, Policy},
};

/// The service principal of AWS Account Management.
pub const ACCOUNT_MANAGEMENT: &str = "account.amazonaws.com";

/// How long a policy list or a "trusted access is on" answer is kept.
const KEEP: Duration = Duration::from_secs(3600);
/// How soon a miss (a policy not in the list, trusted access off) is read again from AWS.
const MISS_REREAD: Duration = Duration::from_secs(10);

/// A value read from AWS, and when. The lock is held while AWS is asked, so a fleet that
/// misses at once (a restart) sends one request, not one per tenant.
pub(super) type Kept<T> = tokio::sync::Mutex<Option<(T, Instant)>>;

impl Organization {
    /// Whether AWS Account Management has trusted access to the organization
    /// (ListAWSServiceAccessForOrganization): without it the management account cannot set a
    /// member account's name or contacts.
    pub async fn account_management_trusted(&self) -> Result<bool, AwsError> {
        let mut kept = self.account_trust.lock().await;
        match *kept {
            Some((true, at)) if at.elapsed() < KEEP => return Ok(true),
            Some((false, at)) if at.elapsed() < MISS_REREAD => return Ok(false),
            _ => {}
        }
        let trusted = self.api.trusted_services(Priority::User).await?.iter().any(|s| s == ACCOUNT_MANAGEMENT);
        *kept = Some((trusted, Instant::now()));
        Ok(trusted)
    }

    /// The service control policy `spec.policies` names (an id or a name), from the kept list
    /// of the organization's policies, read again on a miss. `None`: no such policy.
    pub async fn policy(&self, named: &str) -> Result<Option<Policy>, AwsError> {
        let find = |policies: &[Policy]| policies.iter().find(|p| p.id == named || p.name == named).cloned();
        let mut kept = self.policies.lock().await;
        if let Some((policies, at)) = &*kept {
            let found = find(policies);
            // A hit is good for an hour; a miss is read again after a little while.
            if (found.is_some() && at.elapsed() < KEEP) || at.elapsed() < MISS_REREAD {
                return Ok(found);
            }
        }
        let policies = self.api.service_control_policies(Priority::User).await?;
        let found = find(&policies);
        *kept = Some((policies, Instant::now()));
        Ok(found)
    }

    /// The service control policies attached directly to an account (ListPoliciesForTarget).
    pub async fn policies_of(&self, account_id: &str, priority: Priority) -> Result<Vec<String>, AwsError> {
        self.api.policies_of(account_id, priority).await
    }

    /// AttachPolicy.
    pub async fn attach_policy(
        &self,
        policy_id: &str,
        account_id: &str,
    ) -> Result<Result<(), AttachRefusal>, AwsError> {
        let answer = self.api.attach_policy(policy_id, account_id).await?;
        if answer == Err(AttachRefusal::PolicyNotFound) {
            // The kept list is out of date.
            *self.policies.lock().await = None;
        }
        Ok(answer)
    }

    /// DetachPolicy.
    pub async fn detach_policy(&self, policy_id: &str, account_id: &str) -> Result<(), AwsError> {
        self.api.detach_policy(policy_id, account_id).await
    }
}
