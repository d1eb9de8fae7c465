//! The other organizations Silo serves, for one question only: which of them has an account.
//!
//! A Tenant whose `spec.accountId` its own organization does not have is refused; when another
//! organization Silo serves has that account, the refusal says which
//! (`AccountInAnotherOrganization`), because the fix is a Tenant in that organization, not an
//! invitation. Every replica knows every organization's management role, whichever replica
//! leads it, so the answer does not depend on who leads what.
//!
//! ## Guarantees
//! - Read-only: the clients here are built with a closed write fence, and only
//!   DescribeAccount is ever sent, at background priority.
//! - Asked only on that refusal (one DescribeAccount per other organization), never on the
//!   way of a Tenant that is fine.

use std::{collections::BTreeMap, sync::RwLock};

use tracing::debug;

use crate::aws::{Organizations, Priority};

/// The Organizations API of every organization this process knows, by name (`""`: the
/// default organization).
#[derive(Default)]
pub struct Neighbours(RwLock<BTreeMap<String, Organizations>>);

impl Neighbours {
    /// Knows `organization` through `api` from now on (replacing what it knew of it).
    pub fn set(&self, organization: &str, api: Organizations) {
        self.0.write().expect("the neighbours lock is never poisoned").insert(organization.to_string(), api);
    }

    /// Forgets `organization` (its Organization was deleted).
    pub fn remove(&self, organization: &str) {
        self.0.write().expect("the neighbours lock is never poisoned").remove(organization);
    }

    /// The organization other than `own` that has the account `account_id`, if any does (an
    /// organization that cannot be asked now counts as not having it).
    pub async fn holder(&self, account_id: &str, own: &str) -> Option<String> {
        let others: Vec<(String, Organizations)> = {
            let known = self.0.read().expect("the neighbours lock is never poisoned");
            known.iter().filter(|(name, _)| name.as_str() != own).map(|(n, api)| (n.clone(), api.clone())).collect()
        };
        for (name, api) in others {
            match api.describe_account(account_id, Priority::Background).await {
                Ok(Some(_)) => return Some(name),
                Ok(None) => {}
                Err(err) => debug!(organization = %name, %err, "cannot ask the organization for the account"),
            }
        }
        None
    }
}
