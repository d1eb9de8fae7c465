//! AWS Account Management (the Account API), from the management account: a member account's
//! name and alternate contacts. Plain data in, plain data out, errors classified; every
//! request takes a permit from its own [`Budget`] and is counted in `silo_aws_requests_total`.
//!
//! Naming a member account (`AccountId`) needs trusted access for AWS Account Management in
//! the organization; [`crate::org::Organization::account_management_trusted`] checks it.

use aws_sdk_account::{
    Client,
    operation::{
        delete_alternate_contact::DeleteAlternateContactError, get_alternate_contact::GetAlternateContactError,
    },
    types::AlternateContactType,
};

use super::{
    budget::{Budget, Gate, Priority},
    error::AwsError,
    fence::Fence,
};
use crate::api::{Contact, ContactKind};

/// The Account API of the management account.
#[derive(Clone)]
pub struct AccountManagement {
    client: Client,
    gate: Gate,
}

impl AccountManagement {
    pub fn new(client: Client, budget: Budget) -> Self {
        Self { client, gate: Gate::new("account", budget) }
    }

    /// The same client, whose writes first check `fence` (the leader's proof that it leads).
    pub fn fenced(self, fence: Fence) -> Self {
        Self { gate: self.gate.fenced(fence), ..self }
    }

    /// GetAlternateContact; `None` when the account has no contact of that kind.
    pub async fn contact(
        &self,
        account_id: &str,
        kind: ContactKind,
        priority: Priority,
    ) -> Result<Option<Contact>, AwsError> {
        let request = self.client.get_alternate_contact().account_id(account_id).alternate_contact_type(aws_kind(kind));
        match self.gate.read(priority, "GetAlternateContact", || request.send()).await {
            Ok(out) => Ok(out.alternate_contact.map(|c| Contact {
                name: c.name.unwrap_or_default(),
                title: c.title.unwrap_or_default(),
                email: c.email_address.unwrap_or_default(),
                phone: c.phone_number.unwrap_or_default(),
            })),
            Err(failure)
                if matches!(failure.service_error(), Some(GetAlternateContactError::ResourceNotFoundException(_))) =>
            {
                Ok(None)
            }
            Err(failure) => Err(failure.into_aws()),
        }
    }

    /// PutAlternateContact.
    pub async fn set_contact(&self, account_id: &str, kind: ContactKind, contact: &Contact) -> Result<(), AwsError> {
        let request = self
            .client
            .put_alternate_contact()
            .account_id(account_id)
            .alternate_contact_type(aws_kind(kind))
            .name(&contact.name)
            .title(&contact.title)
            .email_address(&contact.email)
            .phone_number(&contact.phone);
        self.gate.write("PutAlternateContact", || request.send()).await?;
        Ok(())
    }

    /// DeleteAlternateContact; a contact that is not set is fine.
    pub async fn delete_contact(&self, account_id: &str, kind: ContactKind) -> Result<(), AwsError> {
        let request =
            self.client.delete_alternate_contact().account_id(account_id).alternate_contact_type(aws_kind(kind));
        match self.gate.write("DeleteAlternateContact", || request.send()).await {
            Ok(_) => Ok(()),
            Err(failure)
                if matches!(
                    failure.service_error(),
                    Some(DeleteAlternateContactError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(())
            }
            Err(failure) => Err(failure.into_aws()),
        }
    }

    /// PutAccountName.
    pub async fn rename(&self, account_id: &str, name: &str) -> Result<(), AwsError> {
        let request = self.client.put_account_name().account_id(account_id).account_name(name);
        self.gate.write("PutAccountName", || request.send()).await?;
        Ok(())
    }
}

fn aws_kind(kind: ContactKind) -> AlternateContactType {
    match kind {
        ContactKind::Security => AlternateContactType::Security,
        ContactKind::Billing => AlternateContactType::Billing,
        ContactKind::Operations => AlternateContactType::Operations,
    }
}
