//! AWS Organizations, as Silo uses it: plain data in, plain data out, errors classified.
//!
//! Nothing here decides anything; the tenant pipeline does. Each method is one AWS
//! operation (or one paginated listing) so the cost of a step is visible where it is called.

use std::collections::BTreeMap;

use aws_sdk_organizations::{
    Client,
    types::{AccountState, CreateAccountState, Tag},
};

use super::error::AwsError;

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
}

/// Where a CreateAccount request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreationState {
    InProgress,
    Succeeded { account_id: String },
    Failed { reason: String },
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

/// The Organizations API of the management account.
#[derive(Clone)]
pub struct Organizations {
    client: Client,
}

impl Organizations {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// DescribeAccount; `None` when the account is not in the organization.
    pub async fn describe_account(&self, account_id: &str) -> Result<Option<Account>, AwsError> {
        match self.client.describe_account().account_id(account_id).send().await {
            Ok(out) => Ok(out.account.map(account_from)),
            Err(err) => {
                let err = AwsError::from_sdk("DescribeAccount", err);
                if err.has_code("AccountNotFoundException") { Ok(None) } else { Err(err) }
            }
        }
    }

    /// Every account of the organization (ListAccounts, all pages).
    pub async fn list_accounts(&self) -> Result<Vec<Account>, AwsError> {
        let pages: Vec<_> = self
            .client
            .list_accounts()
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|err| AwsError::from_sdk("ListAccounts", err))?;
        Ok(pages.into_iter().flat_map(|p| p.accounts.unwrap_or_default()).map(account_from).collect())
    }

    /// CreateAccount requests that are still in progress or have succeeded (all pages).
    pub async fn list_open_create_requests(&self) -> Result<Vec<CreateRequest>, AwsError> {
        let pages: Vec<_> = self
            .client
            .list_create_account_status()
            .states(CreateAccountState::InProgress)
            .states(CreateAccountState::Succeeded)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|err| AwsError::from_sdk("ListCreateAccountStatus", err))?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.create_account_statuses.unwrap_or_default())
            .map(create_request_from)
            .collect())
    }

    /// CreateAccount. AWS offers no idempotency token: see `tenant::account` for how Silo
    /// avoids a second account after a crash.
    pub async fn create_account(
        &self,
        name: &str,
        email: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<CreateRequest, AwsError> {
        let tags = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build().expect("key and value are set"));
        let out = self
            .client
            .create_account()
            .account_name(name)
            .email(email)
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("CreateAccount", err))?;
        out.create_account_status
            .map(create_request_from)
            .ok_or_else(|| AwsError::unexpected_answer("CreateAccount", "the answer carried no CreateAccountStatus"))
    }

    /// DescribeCreateAccountStatus.
    pub async fn describe_create_request(&self, request_id: &str) -> Result<CreateRequest, AwsError> {
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
        let pages: Vec<_> = self
            .client
            .list_tags_for_resource()
            .resource_id(account_id)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|err| AwsError::from_sdk("ListTagsForResource", err))?;
        Ok(pages.into_iter().flat_map(|p| p.tags.unwrap_or_default()).map(|tag| (tag.key, tag.value)).collect())
    }

    /// TagResource.
    pub async fn tag_account(&self, account_id: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
        let tags = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build().expect("key and value are set"));
        self.client
            .tag_resource()
            .resource_id(account_id)
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("TagResource", err))?;
        Ok(())
    }

    /// The id of the organization's root (ListRoots).
    pub async fn root_id(&self) -> Result<String, AwsError> {
        let out = self.client.list_roots().send().await.map_err(|err| AwsError::from_sdk("ListRoots", err))?;
        out.roots()
            .iter()
            .find_map(|r| r.id.clone())
            .ok_or_else(|| AwsError::unexpected_answer("ListRoots", "the organization has no root"))
    }

    /// The OUs directly under a parent (ListOrganizationalUnitsForParent, all pages).
    pub async fn child_units(&self, parent_id: &str) -> Result<Vec<OrganizationalUnit>, AwsError> {
        let pages: Vec<_> = self
            .client
            .list_organizational_units_for_parent()
            .parent_id(parent_id)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|err| AwsError::from_sdk("ListOrganizationalUnitsForParent", err))?;
        Ok(pages.into_iter().flat_map(|p| p.organizational_units.unwrap_or_default()).map(unit_from).collect())
    }

    /// DescribeOrganizationalUnit; `None` when no such OU exists.
    pub async fn unit_exists(&self, ou_id: &str) -> Result<bool, AwsError> {
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
        },
        _ => CreationState::InProgress,
    };
    CreateRequest { id: s.id.unwrap_or_default(), account_name: s.account_name.unwrap_or_default(), state }
}
