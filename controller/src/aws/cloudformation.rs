//! CloudFormation in one tenant account and region, as the baseline step uses it.
//!
//! A [`Stacks`] is built from a tenant session's credentials (see [`super::tenant_access`])
//! and can only ever act in that account: there is no way to switch it to another. Every
//! request takes a permit from the CloudFormation budget of that account and region.

use std::{collections::BTreeMap, time::Duration};

use aws_config::{Region, SdkConfig, retry::RetryConfig};
use aws_credential_types::Credentials;
use aws_sdk_cloudformation::{
    Client,
    types::{Capability, ChangeSetStatus, ChangeSetType, Parameter, ResourceStatus, Tag},
};

use super::{
    budget::{KeyedBudget, Permit, Priority},
    count_request,
    error::AwsError,
    fence::Fence,
};
use crate::api::ResourceChange;

/// How long a preview waits for CloudFormation to work out a change set.
const CHANGE_SET_PATIENCE: Duration = Duration::from_secs(60);

/// What the stack operations need to know of the template and its settings.
#[derive(Clone, Debug)]
pub struct StackSpec<'a> {
    pub name: &'a str,
    pub template_body: Option<&'a str>,
    pub template_url: Option<&'a str>,
    pub parameters: &'a BTreeMap<String, String>,
    pub capabilities: Vec<&'static str>,
    pub tags: BTreeMap<String, String>,
    pub termination_protection: bool,
}

/// A stack as DescribeStacks sees it.
#[derive(Clone, Debug)]
pub struct Stack {
    pub id: String,
    /// CloudFormation's stack status, like CREATE_COMPLETE.
    pub status: String,
    pub reason: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Time since the stack last changed state (from CreationTime / LastUpdatedTime).
    pub since: Duration,
    /// When the stack last changed state (seconds since the epoch): part of request tokens,
    /// so a retried call repeats its token and the next operation gets a new one.
    pub changed_at: i64,
    pub outputs: BTreeMap<String, String>,
    pub termination_protection: bool,
}

/// Whether UpdateStack started an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    Started,
    /// "No updates are to be performed": the stack already matches. Success.
    NothingToDo,
}

/// How a [`Stacks`] paces its requests: the CloudFormation budget, the key (account,
/// region) it takes permits for, at which priority, and the fence its writes check.
#[derive(Clone)]
pub struct Pacing {
    pub budget: KeyedBudget,
    pub key: (String, String),
    pub priority: Priority,
    pub fence: Fence,
}

/// The stacks of one account in one region.
pub struct Stacks {
    client: Client,
    pacing: Pacing,
}

impl Stacks {
    /// A client acting with `credentials` in `region`, with the endpoint and retry policy of
    /// the base configuration, paced by `pacing`.
    pub fn new(base: &SdkConfig, credentials: Credentials, region: &str, max_attempts: u32, pacing: Pacing) -> Self {
        let config = aws_sdk_cloudformation::config::Builder::from(base)
            .region(Region::new(region.to_string()))
            .credentials_provider(credentials)
            .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
            .build();
        Self { client: Client::from_conf(config), pacing }
    }

    /// A permit for a write, and only while the fence allows it; counted.
    async fn write_permit(&self, operation: &'static str) -> Result<Permit, AwsError> {
        let permit = self.pacing.fence.permit_write(operation, self.take(operation)).await?;
        count_request("cloudformation", operation);
        Ok(permit)
    }

    /// A permit for a read; counted.
    async fn permit(&self, operation: &'static str) -> Result<Permit, AwsError> {
        let permit = self.take(operation).await?;
        count_request("cloudformation", operation);
        Ok(permit)
    }

    /// Waits for a permit for one request on this account and region's budget.
    async fn take(&self, operation: &'static str) -> Result<Permit, AwsError> {
        let Pacing { budget, key, priority, .. } = &self.pacing;
        budget.permit(key, *priority).await.ok_or_else(|| AwsError::busy(operation))
    }

    /// DescribeStacks for one stack; `None` when it does not exist.
    pub async fn describe(&self, name: &str) -> Result<Option<Stack>, AwsError> {
        let _permit = self.permit("DescribeStacks").await?;
        let out = match self.client.describe_stacks().stack_name(name).send().await {
            Ok(out) => out,
            Err(err) => {
                let err = AwsError::from_sdk("DescribeStacks", err);
                return if err.has_code("ValidationError") && err.message.contains("does not exist") {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        let Some(stack) = out.stacks.unwrap_or_default().into_iter().next() else { return Ok(None) };
        let changed = stack.last_updated_time.or(stack.creation_time);
        let changed_at = changed.map(|t| t.secs()).unwrap_or_default();
        let since = changed.as_ref().and_then(super::age).unwrap_or_default();
        let tags = stack.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect();
        let outputs = stack
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
            .collect();
        Ok(Some(Stack {
            id: stack.stack_id.clone().unwrap_or_default(),
            status: stack.stack_status.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default(),
            reason: stack.stack_status_reason.clone(),
            tags,
            since,
            changed_at,
            outputs,
            termination_protection: stack.enable_termination_protection.unwrap_or(false),
        }))
    }

    /// CreateStack. The token makes a retried call a no-op.
    pub async fn create(&self, spec: &StackSpec<'_>, token: &str) -> Result<String, AwsError> {
        let _permit = self.write_permit("CreateStack").await?;
        let input = StackInput::from(spec);
        let out = self
            .client
            .create_stack()
            .stack_name(spec.name)
            .set_template_body(input.template_body)
            .set_template_url(input.template_url)
            .set_parameters(Some(input.parameters))
            .set_capabilities(Some(input.capabilities))
            .set_tags(Some(input.tags))
            .enable_termination_protection(spec.termination_protection)
            .client_request_token(token)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("CreateStack", err))?;
        Ok(out.stack_id.unwrap_or_default())
    }

    /// UpdateStack. The token makes a retried call a no-op.
    pub async fn update(&self, spec: &StackSpec<'_>, token: &str) -> Result<Update, AwsError> {
        let _permit = self.write_permit("UpdateStack").await?;
        let input = StackInput::from(spec);
        let result = self
            .client
            .update_stack()
            .stack_name(spec.name)
            .set_template_body(input.template_body)
            .set_template_url(input.template_url)
            .set_parameters(Some(input.parameters))
            .set_capabilities(Some(input.capabilities))
            .set_tags(Some(input.tags))
            .client_request_token(token)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Update::Started),
            Err(err) => {
                let err = AwsError::from_sdk("UpdateStack", err);
                if err.has_code("ValidationError") && err.message.contains("No updates are to be performed") {
                    Ok(Update::NothingToDo)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// DeleteStack (turning termination protection off first, when it is on).
    pub async fn delete(&self, stack: &Stack, token: &str) -> Result<(), AwsError> {
        if stack.termination_protection {
            let _permit = self.write_permit("UpdateTerminationProtection").await?;
            self.client
                .update_termination_protection()
                .stack_name(&stack.id)
                .enable_termination_protection(false)
                .send()
                .await
                .map_err(|err| AwsError::from_sdk("UpdateTerminationProtection", err))?;
        }
        let _permit = self.write_permit("DeleteStack").await?;
        self.client
            .delete_stack()
            .stack_name(&stack.id)
            .client_request_token(token)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("DeleteStack", err))?;
        Ok(())
    }

    /// What an update (or creation) to `spec` would change: a change set named `name`,
    /// described, then deleted. Nothing is executed. `region` in the changes is left empty.
    pub async fn preview(&self, spec: &StackSpec<'_>, name: &str) -> Result<Vec<ResourceChange>, AwsError> {
        let existing = self.describe(spec.name).await?;
        let creating =
            existing.as_ref().is_none_or(|s| s.status == "DELETE_COMPLETE" || s.status == "REVIEW_IN_PROGRESS");
        let input = StackInput::from(spec);
        let id = {
            let _permit = self.write_permit("CreateChangeSet").await?;
            self.client
                .create_change_set()
                .stack_name(spec.name)
                .change_set_name(name)
                .change_set_type(if creating { ChangeSetType::Create } else { ChangeSetType::Update })
                .set_template_body(input.template_body)
                .set_template_url(input.template_url)
                .set_parameters(Some(input.parameters))
                .set_capabilities(Some(input.capabilities))
                .set_tags(Some(input.tags))
                .send()
                .await
                .map_err(|err| AwsError::from_sdk("CreateChangeSet", err))?
                .id
                .unwrap_or_else(|| name.to_string())
        };
        let started = std::time::Instant::now();
        let changes = loop {
            let out = {
                let _permit = self.permit("DescribeChangeSet").await?;
                self.client
                    .describe_change_set()
                    .change_set_name(&id)
                    .stack_name(spec.name)
                    .send()
                    .await
                    .map_err(|err| AwsError::from_sdk("DescribeChangeSet", err))?
            };
            match out.status() {
                Some(ChangeSetStatus::CreateComplete) => {
                    break out
                        .changes()
                        .iter()
                        .filter_map(|c| c.resource_change())
                        .map(|c| ResourceChange {
                            region: String::new(),
                            action: c.action().map(|a| a.as_str().to_string()).unwrap_or_default(),
                            logical_id: c.logical_resource_id().unwrap_or_default().to_string(),
                            resource_type: c.resource_type().unwrap_or_default().to_string(),
                            replacement: c.replacement().map(|r| r.as_str().to_string()),
                        })
                        .collect();
                }
                // "The submitted information didn't contain changes": nothing would change.
                Some(ChangeSetStatus::Failed) => {
                    let reason = out.status_reason().unwrap_or_default();
                    if reason.contains("didn't contain changes") || reason.contains("No updates") {
                        break vec![];
                    }
                    return Err(AwsError {
                        operation: "CreateChangeSet",
                        kind: super::AwsErrorKind::Terminal,
                        code: Some("ChangeSetFailed".into()),
                        message: reason.to_string(),
                    });
                }
                _ if started.elapsed() > CHANGE_SET_PATIENCE => {
                    return Err(AwsError::unexpected_answer("DescribeChangeSet", "the change set took too long"));
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        {
            let _permit = self.write_permit("DeleteChangeSet").await?;
            self.client
                .delete_change_set()
                .change_set_name(&id)
                .stack_name(spec.name)
                .send()
                .await
                .map_err(|err| AwsError::from_sdk("DeleteChangeSet", err))?;
        }
        if creating {
            // A change set for a new stack leaves the stack in REVIEW_IN_PROGRESS: remove it.
            let _permit = self.write_permit("DeleteStack").await?;
            self.client
                .delete_stack()
                .stack_name(spec.name)
                .send()
                .await
                .map_err(|err| AwsError::from_sdk("DeleteStack", err))?;
        }
        Ok(changes)
    }

    /// ContinueUpdateRollback.
    pub async fn continue_rollback(&self, name: &str, token: &str) -> Result<(), AwsError> {
        let _permit = self.write_permit("ContinueUpdateRollback").await?;
        self.client
            .continue_update_rollback()
            .stack_name(name)
            .client_request_token(token)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("ContinueUpdateRollback", err))?;
        Ok(())
    }

    /// The first resource that failed, with its reason, from the stack's events.
    pub async fn first_failure(&self, stack_id: &str) -> Result<Option<String>, AwsError> {
        let _permit = self.permit("DescribeStackEvents").await?;
        let out = self
            .client
            .describe_stack_events()
            .stack_name(stack_id)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("DescribeStackEvents", err))?;
        // Events come newest first; the first failure is the last failed one listed.
        let failed = out.stack_events().iter().rev().find(|e| {
            matches!(e.resource_status(), Some(ResourceStatus::CreateFailed | ResourceStatus::UpdateFailed))
                && e.resource_type() != Some("AWS::CloudFormation::Stack")
        });
        Ok(failed.map(|e| {
            format!(
                "{} ({}): {}",
                e.logical_resource_id().unwrap_or("?"),
                e.resource_type().unwrap_or("?"),
                e.resource_status_reason().unwrap_or("no reason given")
            )
        }))
    }
}

/// What CreateStack and UpdateStack both send, in the SDK's types.
struct StackInput {
    template_body: Option<String>,
    template_url: Option<String>,
    parameters: Vec<Parameter>,
    capabilities: Vec<Capability>,
    tags: Vec<Tag>,
}

impl From<&StackSpec<'_>> for StackInput {
    fn from(spec: &StackSpec<'_>) -> Self {
        Self {
            template_body: spec.template_body.map(str::to_string),
            template_url: spec.template_url.map(str::to_string),
            parameters: spec
                .parameters
                .iter()
                .map(|(k, v)| Parameter::builder().parameter_key(k).parameter_value(v).build())
                .collect(),
            capabilities: spec.capabilities.iter().map(|c| Capability::from(*c)).collect(),
            tags: spec.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect(),
        }
    }
}
