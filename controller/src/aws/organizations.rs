//! AWS Organizations, as Silo uses it: plain data in, plain data out, errors classified.
//!
//! Nothing here decides anything; the tenant pipeline does. Each method is one AWS
//! operation, or one paginated listing, and every request (every page) first takes a permit
//! from the shared [`Budget`].
//!
//! The two listings a fleet would otherwise repeat for every new Tenant (all accounts, all
//! creation requests) are cached as snapshots shared by all reconciles; see
//! [`Organizations::accounts`].

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use aws_sdk_organizations::{
    Client,
    operation::close_account::CloseAccountError,
    types::{AccountState, CreateAccountState, Tag},
};
use tokio::sync::Mutex;

use super::{budget::Budget, error::AwsError};

/// Runs a paginated listing to the end, taking one budget permit per page, and returns the
/// items of every page.
macro_rules! all_pages {
    ($self:ident, $operation:literal, $request:expr, $items:ident) => {{
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let _permit = $self.budget.permit().await;
            let page =
                $request.set_next_token(token).send().await.map_err(|err| AwsError::from_sdk($operation, err))?;
            out.extend(page.$items.unwrap_or_default());
            token = page.next_token;
            if token.is_none() {
                break out;
            }
        }
    }};
}

/// An account of the organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub arn: String,
    pub name: String,
    pub email: String,
    /// ACTIVE, SUSPENDED, PENDING_CLOSURE, ...
    pub state: String,
}

impl Account {
    pub fn is_active(&self) -> bool {
        self.state == "ACTIVE"
    }

    /// Closed, or on its way: CloseAccount has been accepted.
    pub fn is_closing_or_closed(&self) -> bool {
        matches!(self.state.as_str(), "PENDING_CLOSURE" | "SUSPENDED" | "CLOSED")
    }
}

/// Where a CreateAccount request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreationState {
    InProgress,
    Succeeded {
        account_id: String,
    },
    /// `failed_for`: how long ago AWS gave up, when it said.
    Failed {
        reason: String,
        failed_for: Option<Duration>,
    },
}

/// One CreateAccount request, as ListCreateAccountStatus / DescribeCreateAccountStatus see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateRequest {
    pub id: String,
    pub account_name: String,
    pub state: CreationState,
}

/// A child of the organization tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationalUnit {
    pub id: String,
    pub name: String,
}

/// What CloseAccount answered, when AWS refused for a reason Silo handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseRefusal {
    /// CLOSE_ACCOUNT_QUOTA_EXCEEDED or CLOSE_ACCOUNT_REQUESTS_LIMIT_EXCEEDED.
    Quota(String),
    /// The account is closed already.
    AlreadyClosed,
}

/// A listing shared by every reconcile, refreshed when older than asked for. The lock is held
/// while refreshing, so concurrent callers wait for one listing instead of starting their own.
struct Snapshot<T> {
    inner: Mutex<Option<(Instant, Arc<Vec<T>>)>>,
}

impl<T> Snapshot<T> {
    fn new() -> Self {
        Self { inner: Mutex::new(None) }
    }

    async fn get<F, Fut>(&self, max_age: Duration, list: F) -> Result<Arc<Vec<T>>, AwsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<T>, AwsError>>,
    {
        let mut guard = self.inner.lock().await;
        if let Some((taken, items)) = guard.as_ref()
            && taken.elapsed() <= max_age
        {
            return Ok(items.clone());
        }
        let items = Arc::new(list().await?);
        *guard = Some((Instant::now(), items.clone()));
        Ok(items)
    }

    /// Adds what this process just did, so the snapshot agrees with our own writes.
    async fn append(&self, item: T)
    where
        T: Clone,
    {
        if let Some((_, items)) = self.inner.lock().await.as_mut() {
            Arc::make_mut(items).push(item);
        }
    }
}

/// The Organizations API of the management account.
#[derive(Clone)]
pub struct Organizations {
    client: Client,
    budget: Budget,
    accounts: Arc<Snapshot<Account>>,
    requests: Arc<Snapshot<CreateRequest>>,
}

impl Organizations {
    pub fn new(client: Client, budget: Budget) -> Self {
        Self { client, budget, accounts: Arc::new(Snapshot::new()), requests: Arc::new(Snapshot::new()) }
    }

    /// DescribeAccount; `None` when the account is not in the organization.
    pub async fn describe_account(&self, account_id: &str) -> Result<Option<Account>, AwsError> {
        let _permit = self.budget.permit().await;
        match self.client.describe_account().account_id(account_id).send().await {
            Ok(out) => Ok(out.account.map(account_from)),
            Err(err) => {
                let err = AwsError::from_sdk("DescribeAccount", err);
                if err.has_code("AccountNotFoundException") { Ok(None) } else { Err(err) }
            }
        }
    }

    /// Every account of the organization, from a snapshot at most `max_age` old.
    ///
    /// A fleet rollout asks this once per new Tenant; with thousands of accounts a fresh
    /// listing is hundreds of requests, so reconciles share one snapshot. Callers that need
    /// the truth (after AWS said an email is taken) pass `Duration::ZERO`.
    pub async fn accounts(&self, max_age: Duration) -> Result<Arc<Vec<Account>>, AwsError> {
        self.accounts.get(max_age, || self.list_accounts()).await
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, AwsError> {
        let accounts = all_pages!(self, "ListAccounts", self.client.list_accounts(), accounts);
        Ok(accounts.into_iter().map(account_from).collect())
    }

    /// CreateAccount requests that are in progress or succeeded, from a snapshot at most
    /// `max_age` old that also holds every request this process sent since.
    pub async fn open_create_requests(&self, max_age: Duration) -> Result<Arc<Vec<CreateRequest>>, AwsError> {
        self.requests.get(max_age, || self.list_open_create_requests()).await
    }

    async fn list_open_create_requests(&self) -> Result<Vec<CreateRequest>, AwsError> {
        let request = self
            .client
            .list_create_account_status()
            .states(CreateAccountState::InProgress)
            .states(CreateAccountState::Succeeded);
        let statuses = all_pages!(self, "ListCreateAccountStatus", request.clone(), create_account_statuses);
        Ok(statuses.into_iter().map(create_request_from).collect())
    }

    /// CreateAccount. AWS offers no idempotency token: see `tenant::account` for how Silo
    /// avoids a second account after a crash.
    pub async fn create_account(
        &self,
        name: &str,
        email: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<CreateRequest, AwsError> {
        let _permit = self.budget.permit().await;
        let out = self
            .client
            .create_account()
            .account_name(name)
            .email(email)
            .set_tags(Some(aws_tags(tags)))
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("CreateAccount", err))?;
        let request = out
            .create_account_status
            .map(create_request_from)
            .ok_or_else(|| AwsError::unexpected_answer("CreateAccount", "the answer carried no CreateAccountStatus"))?;
        self.requests.append(request.clone()).await;
        Ok(request)
    }

    /// DescribeCreateAccountStatus.
    pub async fn describe_create_request(&self, request_id: &str) -> Result<CreateRequest, AwsError> {
        let _permit = self.budget.permit().await;
        let out = self
            .client
            .describe_create_account_status()
            .create_account_request_id(request_id)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("DescribeCreateAccountStatus", err))?;
        out.create_account_status.map(create_request_from).ok_or_else(|| {
            AwsError::unexpected_answer("DescribeCreateAccountStatus", "the answer carried no CreateAccountStatus")
        })
    }

    /// The tags on an account (ListTagsForResource, all pages).
    pub async fn list_tags(&self, account_id: &str) -> Result<BTreeMap<String, String>, AwsError> {
        let request = self.client.list_tags_for_resource().resource_id(account_id);
        let tags = all_pages!(self, "ListTagsForResource", request.clone(), tags);
        Ok(tags.into_iter().map(|tag| (tag.key, tag.value)).collect())
    }

    /// TagResource.
    pub async fn tag_account(&self, account_id: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
        let _permit = self.budget.permit().await;
        self.client
            .tag_resource()
            .resource_id(account_id)
            .set_tags(Some(aws_tags(tags)))
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("TagResource", err))?;
        Ok(())
    }

    /// UntagResource.
    pub async fn untag_account(&self, account_id: &str, keys: &[String]) -> Result<(), AwsError> {
        let _permit = self.budget.permit().await;
        self.client
            .untag_resource()
            .resource_id(account_id)
            .set_tag_keys(Some(keys.to_vec()))
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("UntagResource", err))?;
        Ok(())
    }

    /// The id of the organization's root (ListRoots).
    pub async fn root_id(&self) -> Result<String, AwsError> {
        let _permit = self.budget.permit().await;
        let out = self.client.list_roots().send().await.map_err(|err| AwsError::from_sdk("ListRoots", err))?;
        out.roots()
            .iter()
            .find_map(|r| r.id.clone())
            .ok_or_else(|| AwsError::unexpected_answer("ListRoots", "the organization has no root"))
    }

    /// The OUs directly under a parent (ListOrganizationalUnitsForParent, all pages).
    pub async fn child_units(&self, parent_id: &str) -> Result<Vec<OrganizationalUnit>, AwsError> {
        let request = self.client.list_organizational_units_for_parent().parent_id(parent_id);
        let units = all_pages!(self, "ListOrganizationalUnitsForParent", request.clone(), organizational_units);
        Ok(units.into_iter().map(unit_from).collect())
    }

    /// Whether an OU with this id exists (DescribeOrganizationalUnit).
    pub async fn unit_exists(&self, ou_id: &str) -> Result<bool, AwsError> {
        let _permit = self.budget.permit().await;
        match self.client.describe_organizational_unit().organizational_unit_id(ou_id).send().await {
            Ok(_) => Ok(true),
            Err(err) => {
                let err = AwsError::from_sdk("DescribeOrganizationalUnit", err);
                if err.has_code("OrganizationalUnitNotFoundException") { Ok(false) } else { Err(err) }
            }
        }
    }

    /// CreateOrganizationalUnit.
    pub async fn create_unit(&self, parent_id: &str, name: &str) -> Result<OrganizationalUnit, AwsError> {
        let _permit = self.budget.permit().await;
        let out = self
            .client
            .create_organizational_unit()
            .parent_id(parent_id)
            .name(name)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("CreateOrganizationalUnit", err))?;
        out.organizational_unit
            .map(unit_from)
            .ok_or_else(|| AwsError::unexpected_answer("CreateOrganizationalUnit", "the answer carried no OU"))
    }

    /// The current parent of an account (ListParents).
    pub async fn parent_of(&self, account_id: &str) -> Result<String, AwsError> {
        let _permit = self.budget.permit().await;
        let out = self
            .client
            .list_parents()
            .child_id(account_id)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("ListParents", err))?;
        out.parents()
            .iter()
            .find_map(|p| p.id.clone())
            .ok_or_else(|| AwsError::unexpected_answer("ListParents", format!("account {account_id} has no parent")))
    }

    /// MoveAccount.
    pub async fn move_account(&self, account_id: &str, from: &str, to: &str) -> Result<(), AwsError> {
        let _permit = self.budget.permit().await;
        self.client
            .move_account()
            .account_id(account_id)
            .source_parent_id(from)
            .destination_parent_id(to)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("MoveAccount", err))?;
        Ok(())
    }

    /// CloseAccount. `Ok(Err(_))` when AWS refused for a reason the caller handles.
    pub async fn close_account(&self, account_id: &str) -> Result<Result<(), CloseRefusal>, AwsError> {
        let _permit = self.budget.permit().await;
        match self.client.close_account().account_id(account_id).send().await {
            Ok(_) => Ok(Ok(())),
            Err(err) => {
                let refusal = match err.as_service_error() {
                    Some(CloseAccountError::AccountAlreadyClosedException(_)) => Some(CloseRefusal::AlreadyClosed),
                    Some(CloseAccountError::ConstraintViolationException(e)) => {
                        let reason = e.reason().map(|r| r.as_str().to_string()).unwrap_or_default();
                        reason
                            .starts_with("CLOSE_ACCOUNT")
                            .then(|| CloseRefusal::Quota(format!("{reason}: {}", e.message().unwrap_or_default())))
                    }
                    _ => None,
                };
                match refusal {
                    Some(refusal) => Ok(Err(refusal)),
                    None => Err(AwsError::from_sdk("CloseAccount", err)),
                }
            }
        }
    }
}

fn aws_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build().expect("key and value are set")).collect()
}

fn account_from(a: aws_sdk_organizations::types::Account) -> Account {
    #[allow(deprecated)]
    let state = match (a.state(), a.status()) {
        (Some(state), _) => state.as_str().to_string(),
        (None, Some(status)) => status.as_str().to_string(),
        (None, None) => AccountState::Active.as_str().to_string(),
    };
    Account {
        id: a.id.unwrap_or_default(),
        arn: a.arn.unwrap_or_default(),
        name: a.name.unwrap_or_default(),
        email: a.email.unwrap_or_default(),
        state,
    }
}

fn unit_from(ou: aws_sdk_organizations::types::OrganizationalUnit) -> OrganizationalUnit {
    OrganizationalUnit { id: ou.id.unwrap_or_default(), name: ou.name.unwrap_or_default() }
}

fn create_request_from(s: aws_sdk_organizations::types::CreateAccountStatus) -> CreateRequest {
    let state = match s.state {
        Some(CreateAccountState::Succeeded) => match s.account_id {
            Some(account_id) => CreationState::Succeeded { account_id },
            // AWS reports SUCCEEDED together with the id; treat a missing id as not done yet.
            None => CreationState::InProgress,
        },
        Some(CreateAccountState::Failed) => CreationState::Failed {
            reason: s.failure_reason.map(|r| r.as_str().to_string()).unwrap_or_else(|| "UNKNOWN".to_string()),
            failed_for: s.completed_timestamp.as_ref().and_then(super::age),
        },
        _ => CreationState::InProgress,
    };
    CreateRequest { id: s.id.unwrap_or_default(), account_name: s.account_name.unwrap_or_default(), state }
}
