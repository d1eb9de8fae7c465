//! AWS Organizations, one request at a time: plain data in, plain data out, errors classified.
//!
//! Nothing here decides or remembers anything: [`crate::org`] owns this client, its budget,
//! the organization index and the creation slots, and is the only caller. Each method is one
//! AWS operation or one paginated listing; every request (every page) first takes a permit
//! from the Organizations [`Budget`] at the caller's [`Priority`] and is counted in
//! `silo_aws_requests_total`.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use aws_sdk_organizations::{
    Client,
    operation::{attach_policy::AttachPolicyError, close_account::CloseAccountError, detach_policy::DetachPolicyError},
    types::{AccountState, CreateAccountState, PolicyType, Tag},
};

use super::{
    budget::{Budget, Gate, Priority},
    error::{AwsError, Failure},
    fence::Fence,
};

/// Runs a paginated listing to the end, each page a request of its own (its own permit, its
/// own count), and returns the items of every page.
macro_rules! all_pages {
    ($self:ident, $priority:expr, $operation:literal, $request:expr, $items:ident) => {{
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = $self.gate.read($priority, $operation, || $request.set_next_token(token).send()).await?;
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

/// The organization itself: who manages it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationInfo {
    pub id: String,
    pub management_account_id: String,
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
    /// How long AWS took, from its own timestamps, once the request has ended.
    pub took: Option<Duration>,
}

/// A child of the organization tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationalUnit {
    pub id: String,
    pub name: String,
}

/// The whole organization as one walk saw it ([`Organizations::walk`]).
#[derive(Clone, Debug)]
pub struct Walk {
    pub org: OrganizationInfo,
    pub root: String,
    /// Every OU with its parent (an OU id or the root id), parents before children.
    pub units: Vec<(OrganizationalUnit, String)>,
    /// Every account with its parent, in the order the walk found them.
    pub accounts: Vec<(Account, String)>,
}

/// A service control policy of the organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub id: String,
    pub name: String,
}

/// What AttachPolicy answered, when AWS refused for a reason Silo handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachRefusal {
    /// The policy was attached already (by someone, maybe Silo before a crash).
    AlreadyAttached,
    /// The account has as many policies of the type as AWS allows (5 SCPs).
    LimitReached(String),
    /// The policy does not exist (any more).
    PolicyNotFound,
}

/// What CloseAccount answered, when AWS refused for a reason Silo handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseRefusal {
    /// CLOSE_ACCOUNT_QUOTA_EXCEEDED or CLOSE_ACCOUNT_REQUESTS_LIMIT_EXCEEDED.
    Quota(String),
    /// The account is closed already.
    AlreadyClosed,
}

/// The Organizations API of the management account.
#[derive(Clone)]
pub struct Organizations {
    client: Client,
    gate: Gate,
}

impl Organizations {
    pub fn new(client: Client, budget: Budget) -> Self {
        Self { client, gate: Gate::new("organizations", budget) }
    }

    /// The same client, whose writes first check `fence` (the leader's proof that it leads).
    pub fn fenced(self, fence: Fence) -> Self {
        Self { gate: self.gate.fenced(fence), ..self }
    }

    /// DescribeOrganization.
    pub async fn describe_organization(&self, priority: Priority) -> Result<OrganizationInfo, AwsError> {
        let out =
            self.gate.read(priority, "DescribeOrganization", || self.client.describe_organization().send()).await?;
        let org = out
            .organization
            .ok_or_else(|| AwsError::unexpected_answer("DescribeOrganization", "the answer carried no organization"))?;
        Ok(OrganizationInfo {
            id: org.id.unwrap_or_default(),
            management_account_id: org.master_account_id.unwrap_or_default(),
        })
    }

    /// DescribeAccount; `None` when the account is not in the organization.
    pub async fn describe_account(&self, account_id: &str, priority: Priority) -> Result<Option<Account>, AwsError> {
        let request = self.client.describe_account().account_id(account_id);
        let answer = self.gate.read(priority, "DescribeAccount", || request.send()).await;
        match answer.map_err(Failure::into_aws) {
            Ok(out) => Ok(out.account.map(account_from)),
            Err(err) if err.has_code("AccountNotFoundException") => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// One walk of the whole organization: DescribeOrganization, ListRoots, then breadth first
    /// per parent ListOrganizationalUnitsForParent and ListAccountsForParent (every page).
    /// ListAccounts would list the accounts in fewer pages, but without their parents.
    pub async fn walk(&self, priority: Priority) -> Result<Walk, AwsError> {
        let org = self.describe_organization(priority).await?;
        let root = self.root_id(priority).await?;
        let mut walk = Walk { org, root: root.clone(), units: vec![], accounts: vec![] };
        let mut parents = VecDeque::from([root]);
        while let Some(parent) = parents.pop_front() {
            for unit in self.child_units(&parent, priority).await? {
                parents.push_back(unit.id.clone());
                walk.units.push((unit, parent.clone()));
            }
            for account in self.accounts_under(&parent, priority).await? {
                walk.accounts.push((account, parent.clone()));
            }
        }
        Ok(walk)
    }

    /// The accounts directly under a parent (ListAccountsForParent, all pages).
    pub async fn accounts_under(&self, parent_id: &str, priority: Priority) -> Result<Vec<Account>, AwsError> {
        let request = self.client.list_accounts_for_parent().parent_id(parent_id);
        let accounts = all_pages!(self, priority, "ListAccountsForParent", request.clone(), accounts);
        Ok(accounts.into_iter().map(account_from).collect())
    }

    /// CreateAccount requests in the given states (ListCreateAccountStatus, all pages).
    pub async fn create_requests(
        &self,
        states: &[CreateAccountState],
        priority: Priority,
    ) -> Result<Vec<CreateRequest>, AwsError> {
        let request = self.client.list_create_account_status().set_states(Some(states.to_vec()));
        let statuses = all_pages!(self, priority, "ListCreateAccountStatus", request.clone(), create_account_statuses);
        Ok(statuses.into_iter().map(create_request_from).collect())
    }

    /// CreateAccount. AWS offers no idempotency token: see `tenant::account` for how Silo
    /// avoids a second account after a crash, and `org::creations` for the slots.
    pub async fn create_account(
        &self,
        name: &str,
        email: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<CreateRequest, AwsError> {
        let request = self.client.create_account().account_name(name).email(email).set_tags(Some(aws_tags(tags)));
        let out = self.gate.write("CreateAccount", || request.send()).await?;
        out.create_account_status
            .map(create_request_from)
            .ok_or_else(|| AwsError::unexpected_answer("CreateAccount", "the answer carried no CreateAccountStatus"))
    }

    /// DescribeCreateAccountStatus.
    pub async fn describe_create_request(
        &self,
        request_id: &str,
        priority: Priority,
    ) -> Result<CreateRequest, AwsError> {
        let request = self.client.describe_create_account_status().create_account_request_id(request_id);
        let out = self.gate.read(priority, "DescribeCreateAccountStatus", || request.send()).await?;
        out.create_account_status.map(create_request_from).ok_or_else(|| {
            AwsError::unexpected_answer("DescribeCreateAccountStatus", "the answer carried no CreateAccountStatus")
        })
    }

    /// The tags on an account (ListTagsForResource, all pages).
    pub async fn list_tags(&self, account_id: &str, priority: Priority) -> Result<BTreeMap<String, String>, AwsError> {
        let request = self.client.list_tags_for_resource().resource_id(account_id);
        let tags = all_pages!(self, priority, "ListTagsForResource", request.clone(), tags);
        Ok(tags.into_iter().map(|tag| (tag.key, tag.value)).collect())
    }

    /// TagResource.
    pub async fn tag_account(&self, account_id: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
        let request = self.client.tag_resource().resource_id(account_id).set_tags(Some(aws_tags(tags)));
        self.gate.write("TagResource", || request.send()).await?;
        Ok(())
    }

    /// UntagResource.
    pub async fn untag_account(&self, account_id: &str, keys: &[String]) -> Result<(), AwsError> {
        let request = self.client.untag_resource().resource_id(account_id).set_tag_keys(Some(keys.to_vec()));
        self.gate.write("UntagResource", || request.send()).await?;
        Ok(())
    }

    /// The id of the organization's root (ListRoots).
    pub async fn root_id(&self, priority: Priority) -> Result<String, AwsError> {
        let out = self.gate.read(priority, "ListRoots", || self.client.list_roots().send()).await?;
        out.roots()
            .iter()
            .find_map(|r| r.id.clone())
            .ok_or_else(|| AwsError::unexpected_answer("ListRoots", "the organization has no root"))
    }

    /// The OUs directly under a parent (ListOrganizationalUnitsForParent, all pages).
    pub async fn child_units(&self, parent_id: &str, priority: Priority) -> Result<Vec<OrganizationalUnit>, AwsError> {
        let request = self.client.list_organizational_units_for_parent().parent_id(parent_id);
        let units =
            all_pages!(self, priority, "ListOrganizationalUnitsForParent", request.clone(), organizational_units);
        Ok(units.into_iter().map(unit_from).collect())
    }

    /// The parent of an OU (ListParents); `None` when the OU does not exist.
    pub async fn parent_of_unit(&self, ou_id: &str, priority: Priority) -> Result<Option<String>, AwsError> {
        match self.parent_of(ou_id, priority).await {
            Ok(parent) => Ok(Some(parent)),
            Err(err) if err.has_code("ChildNotFoundException") => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The name of an OU (DescribeOrganizationalUnit); `None` when it does not exist.
    pub async fn describe_unit(&self, ou_id: &str, priority: Priority) -> Result<Option<OrganizationalUnit>, AwsError> {
        let request = self.client.describe_organizational_unit().organizational_unit_id(ou_id);
        let answer = self.gate.read(priority, "DescribeOrganizationalUnit", || request.send()).await;
        match answer.map_err(Failure::into_aws) {
            Ok(out) => Ok(out.organizational_unit.map(unit_from)),
            Err(err) if err.has_code("OrganizationalUnitNotFoundException") => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// CreateOrganizationalUnit.
    pub async fn create_unit(&self, parent_id: &str, name: &str) -> Result<OrganizationalUnit, AwsError> {
        let request = self.client.create_organizational_unit().parent_id(parent_id).name(name);
        let out = self.gate.write("CreateOrganizationalUnit", || request.send()).await?;
        out.organizational_unit
            .map(unit_from)
            .ok_or_else(|| AwsError::unexpected_answer("CreateOrganizationalUnit", "the answer carried no OU"))
    }

    /// The current parent of an account or OU (ListParents).
    pub async fn parent_of(&self, child_id: &str, priority: Priority) -> Result<String, AwsError> {
        let request = self.client.list_parents().child_id(child_id);
        let out = self.gate.read(priority, "ListParents", || request.send()).await?;
        out.parents()
            .iter()
            .find_map(|p| p.id.clone())
            .ok_or_else(|| AwsError::unexpected_answer("ListParents", format!("{child_id} has no parent")))
    }

    /// MoveAccount.
    pub async fn move_account(&self, account_id: &str, from: &str, to: &str) -> Result<(), AwsError> {
        let request =
            self.client.move_account().account_id(account_id).source_parent_id(from).destination_parent_id(to);
        self.gate.write("MoveAccount", || request.send()).await?;
        Ok(())
    }

    /// The organization's service control policies (ListPolicies, all pages).
    pub async fn service_control_policies(&self, priority: Priority) -> Result<Vec<Policy>, AwsError> {
        let request = self.client.list_policies().filter(PolicyType::ServiceControlPolicy);
        let policies = all_pages!(self, priority, "ListPolicies", request.clone(), policies);
        Ok(policies
            .into_iter()
            .map(|p| Policy { id: p.id.unwrap_or_default(), name: p.name.unwrap_or_default() })
            .collect())
    }

    /// The ids of the service control policies attached directly to an account
    /// (ListPoliciesForTarget, all pages).
    pub async fn policies_of(&self, account_id: &str, priority: Priority) -> Result<Vec<String>, AwsError> {
        let request =
            self.client.list_policies_for_target().target_id(account_id).filter(PolicyType::ServiceControlPolicy);
        let policies = all_pages!(self, priority, "ListPoliciesForTarget", request.clone(), policies);
        Ok(policies.into_iter().filter_map(|p| p.id).collect())
    }

    /// AttachPolicy. `Ok(Err(_))` when AWS refused for a reason the caller handles.
    pub async fn attach_policy(
        &self,
        policy_id: &str,
        account_id: &str,
    ) -> Result<Result<(), AttachRefusal>, AwsError> {
        let request = self.client.attach_policy().policy_id(policy_id).target_id(account_id);
        match self.gate.write("AttachPolicy", || request.send()).await {
            Ok(_) => Ok(Ok(())),
            Err(failure) => {
                // Refusals Silo handles are answers: they are not classified or counted as errors.
                let refusal = match failure.service_error() {
                    Some(AttachPolicyError::DuplicatePolicyAttachmentException(_)) => {
                        Some(AttachRefusal::AlreadyAttached)
                    }
                    Some(AttachPolicyError::PolicyNotFoundException(_)) => Some(AttachRefusal::PolicyNotFound),
                    Some(AttachPolicyError::ConstraintViolationException(e)) => {
                        let reason = e.reason().map(|r| r.as_str().to_string()).unwrap_or_default();
                        (reason == "MAX_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED")
                            .then(|| AttachRefusal::LimitReached(e.message().unwrap_or_default().to_string()))
                    }
                    _ => None,
                };
                match refusal {
                    Some(refusal) => Ok(Err(refusal)),
                    None => Err(failure.into_aws()),
                }
            }
        }
    }

    /// DetachPolicy; a policy that is not attached (any more) is fine.
    pub async fn detach_policy(&self, policy_id: &str, account_id: &str) -> Result<(), AwsError> {
        let request = self.client.detach_policy().policy_id(policy_id).target_id(account_id);
        match self.gate.write("DetachPolicy", || request.send()).await {
            Ok(_) => Ok(()),
            Err(failure) => match failure.service_error() {
                Some(
                    DetachPolicyError::PolicyNotAttachedException(_) | DetachPolicyError::PolicyNotFoundException(_),
                ) => Ok(()),
                _ => Err(failure.into_aws()),
            },
        }
    }

    /// The service principals with trusted access to the organization
    /// (ListAWSServiceAccessForOrganization, all pages).
    pub async fn trusted_services(&self, priority: Priority) -> Result<Vec<String>, AwsError> {
        let request = self.client.list_aws_service_access_for_organization();
        let services = all_pages!(
            self,
            priority,
            "ListAWSServiceAccessForOrganization",
            request.clone(),
            enabled_service_principals
        );
        Ok(services.into_iter().filter_map(|s| s.service_principal).collect())
    }

    /// CloseAccount. `Ok(Err(_))` when AWS refused for a reason the caller handles.
    pub async fn close_account(&self, account_id: &str) -> Result<Result<(), CloseRefusal>, AwsError> {
        let request = self.client.close_account().account_id(account_id);
        match self.gate.write("CloseAccount", || request.send()).await {
            Ok(_) => Ok(Ok(())),
            Err(failure) => {
                // As for AttachPolicy: a refusal Silo handles is not counted as an error.
                let refusal = match failure.service_error() {
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
                    None => Err(failure.into_aws()),
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
    let took = match (&s.requested_timestamp, &s.completed_timestamp) {
        (Some(requested), Some(completed)) => {
            let millis = |t: &aws_smithy_types::DateTime| t.to_millis().ok();
            match (millis(requested), millis(completed)) {
                (Some(a), Some(b)) if b >= a => Some(Duration::from_millis(u64::try_from(b - a).unwrap_or_default())),
                _ => None,
            }
        }
        _ => None,
    };
    CreateRequest { id: s.id.unwrap_or_default(), account_name: s.account_name.unwrap_or_default(), state, took }
}
