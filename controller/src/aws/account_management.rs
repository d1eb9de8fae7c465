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
        let _permit = self.gate.read(priority, "GetAlternateContact").await?;
        let request = self.client.get_alternate_contact().account_id(account_id).alternate_contact_type(aws_kind(kind));
        match request.send().await {
            Ok(out) => Ok(out.alternate_contact.map(|c| Contact {
                name: c.name.unwrap_or_default(),
                title: c.title.unwrap_or_default(),
                email: c.email_address.unwrap_or_default(),
                phone: c.phone_number.unwrap_or_default(),
            })),
            Err(err)
                if matches!(err.as_service_error(), Some(GetAlternateContactError::ResourceNotFoundException(_))) =>
            {
                Ok(None)
            }
            Err(err) => Err(AwsError::from_sdk("GetAlternateContact", err)),
        }
    }

    /// PutAlternateContact.
    pub async fn set_contact(&self, account_id: &str, kind: ContactKind, contact: &Contact) -> Result<(), AwsError> {
        let _permit = self.gate.write("PutAlternateContact").await?;
        self.client
            .put_alternate_contact()
            .account_id(account_id)
            .alternate_contact_type(aws_kind(kind))
            .name(&contact.name)
            .title(&contact.title)
            .email_address(&contact.email)
            .phone_number(&contact.phone)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("PutAlternateContact", err))?;
        Ok(())
    }

    /// DeleteAlternateContact; a contact that is not set is fine.
    pub async fn delete_contact(&self, account_id: &str, kind: ContactKind) -> Result<(), AwsError> {
        let _permit = self.gate.write("DeleteAlternateContact").await?;
        let request =
            self.client.delete_alternate_contact().account_id(account_id).alternate_contact_type(aws_kind(kind));
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(DeleteAlternateContactError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(AwsError::from_sdk("DeleteAlternateContact", err)),
        }
    }

    /// PutAccountName.
    pub async fn rename(&self, account_id: &str, name: &str) -> Result<(), AwsError> {
        let _permit = self.gate.write("PutAccountName").await?;
        self.client
            .put_account_name()
            .account_id(account_id)
            .account_name(name)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("PutAccountName", err))?;
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
