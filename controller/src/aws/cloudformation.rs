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
    types::{
        Capability, ChangeSetStatus, ChangeSetType, DeploymentMode, Parameter, ResourceStatus,
        StackDriftDetectionStatus, StackDriftStatus, StackResourceDriftStatus, Tag,
    },
};
use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};

use super::{
    budget::{KeyedBudget, Permit, Priority, call},
    error::{AwsError, Failure},
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

/// Where one drift detection (DetectStackDrift) stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detection {
    InProgress,
    InSync,
    Drifted,
    /// CloudFormation could not finish it: its reason.
    Failed(String),
}

/// A resource that drifted, as DescribeStackResourceDrifts reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDrift {
    pub logical_id: String,
    pub resource_type: String,
    /// MODIFIED or DELETED.
    pub status: String,
    /// "path: expected -> actual" for each property that differs.
    pub differences: Vec<String>,
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

impl Pacing {
    /// Sends the read `operation` with a permit for this account and region (as
    /// [`super::budget::Gate::read`] does for a service-wide budget).
    async fn read<T, E, F>(&self, operation: &'static str, send: impl FnOnce() -> F) -> Result<T, Failure<E>>
    where
        F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        call("cloudformation", operation, self.permit(operation), send).await
    }

    /// Sends the write `operation` with a permit for this account and region, only while the
    /// fence allows it ([`Fence::permit_write`]). Unlike a [`super::budget::Gate`] write, it
    /// asks at the pacing's priority: at [`Priority::IfIdle`], a write that finds no permit
    /// now is not sent (`Busy`), like a read.
    async fn write<T, E, F>(&self, operation: &'static str, send: impl FnOnce() -> F) -> Result<T, Failure<E>>
    where
        F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        call("cloudformation", operation, self.fence.permit_write(operation, self.permit(operation)), send).await
    }

    /// Waits for a permit for one request on this account and region's budget.
    async fn permit(&self, operation: &'static str) -> Result<Permit, AwsError> {
        self.budget.permit(&self.key, self.priority).await.ok_or_else(|| AwsError::busy(operation))
    }
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

    /// DescribeStacks for one stack; `None` when it does not exist.
    pub async fn describe(&self, name: &str) -> Result<Option<Stack>, AwsError> {
        let request = self.client.describe_stacks().stack_name(name);
        let answer = self.pacing.read("DescribeStacks", || request.send()).await;
        let out = match answer.map_err(Failure::into_aws) {
            Ok(out) => out,
            Err(err) if err.has_code("ValidationError") && err.message.contains("does not exist") => return Ok(None),
            Err(err) => return Err(err),
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
        let input = StackInput::from(spec);
        let request = self
            .client
            .create_stack()
            .stack_name(spec.name)
            .set_template_body(input.template_body)
            .set_template_url(input.template_url)
            .set_parameters(Some(input.parameters))
            .set_capabilities(Some(input.capabilities))
            .set_tags(Some(input.tags))
            .enable_termination_protection(spec.termination_protection)
            .client_request_token(token);
        let out = self.pacing.write("CreateStack", || request.send()).await?;
        Ok(out.stack_id.unwrap_or_default())
    }

    /// UpdateStack. The token makes a retried call a no-op.
    pub async fn update(&self, spec: &StackSpec<'_>, token: &str) -> Result<Update, AwsError> {
        let input = StackInput::from(spec);
        let request = self
            .client
            .update_stack()
            .stack_name(spec.name)
            .set_template_body(input.template_body)
            .set_template_url(input.template_url)
            .set_parameters(Some(input.parameters))
            .set_capabilities(Some(input.capabilities))
            .set_tags(Some(input.tags))
            .client_request_token(token);
        let answer = self.pacing.write("UpdateStack", || request.send()).await;
        match answer.map_err(Failure::into_aws) {
            Ok(_) => Ok(Update::Started),
            Err(err) if err.has_code("ValidationError") && err.message.contains("No updates are to be performed") => {
                Ok(Update::NothingToDo)
            }
            Err(err) => Err(err),
        }
    }

    /// DeleteStack (turning termination protection off first, when it is on).
    pub async fn delete(&self, stack: &Stack, token: &str) -> Result<(), AwsError> {
        if stack.termination_protection {
            let request =
                self.client.update_termination_protection().stack_name(&stack.id).enable_termination_protection(false);
            self.pacing.write("UpdateTerminationProtection", || request.send()).await?;
        }
        let request = self.client.delete_stack().stack_name(&stack.id).client_request_token(token);
        self.pacing.write("DeleteStack", || request.send()).await?;
        Ok(())
    }

    /// What an update (or creation) to `spec` would change: a change set named `name`,
    /// described, then deleted. Nothing is executed. `region` in the changes is left empty.
    pub async fn preview(&self, spec: &StackSpec<'_>, name: &str) -> Result<Vec<ResourceChange>, AwsError> {
        let existing = self.describe(spec.name).await?;
        let creating =
            existing.as_ref().is_none_or(|s| s.status == "DELETE_COMPLETE" || s.status == "REVIEW_IN_PROGRESS");
        let kind = if creating { ChangeSetType::Create } else { ChangeSetType::Update };
        let request = self.change_set(spec, name, kind);
        let id = self.pacing.write("CreateChangeSet", || request.send()).await?.id.unwrap_or_else(|| name.to_string());
        let changes = self.settle_change_set(&id, spec.name).await?.unwrap_or_default();
        let request = self.client.delete_change_set().change_set_name(&id).stack_name(spec.name);
        self.pacing.write("DeleteChangeSet", || request.send()).await?;
        if creating {
            // A change set for a new stack leaves the stack in REVIEW_IN_PROGRESS: remove it.
            let request = self.client.delete_stack().stack_name(spec.name);
            self.pacing.write("DeleteStack", || request.send()).await?;
        }
        Ok(changes)
    }

    /// DetectStackDrift: the detection's id, or `None` when the stack cannot be checked now
    /// (an operation is in progress on it).
    pub async fn detect_drift(&self, name: &str) -> Result<Option<String>, AwsError> {
        let request = self.client.detect_stack_drift().stack_name(name);
        match self.pacing.read("DetectStackDrift", || request.send()).await.map_err(Failure::into_aws) {
            Ok(out) => Ok(out.stack_drift_detection_id),
            Err(err) if err.has_code("ValidationError") && err.message.contains("IN_PROGRESS") => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// DescribeStackDriftDetectionStatus.
    pub async fn detection(&self, id: &str) -> Result<Detection, AwsError> {
        let request = self.client.describe_stack_drift_detection_status().stack_drift_detection_id(id);
        let out = self.pacing.read("DescribeStackDriftDetectionStatus", || request.send()).await?;
        Ok(match (&out.detection_status, &out.stack_drift_status) {
            (Some(StackDriftDetectionStatus::DetectionInProgress), _) => Detection::InProgress,
            (_, Some(StackDriftStatus::Drifted)) => Detection::Drifted,
            (Some(StackDriftDetectionStatus::DetectionComplete), _) => Detection::InSync,
            _ => Detection::Failed(out.detection_status_reason.unwrap_or_else(|| "no reason given".into())),
        })
    }

    /// DescribeStackResourceDrifts: the resources the stack's last detection found MODIFIED
    /// or DELETED, every page.
    pub async fn resource_drifts(&self, name: &str) -> Result<Vec<ResourceDrift>, AwsError> {
        let mut drifts = vec![];
        let mut token: Option<String> = None;
        loop {
            let request = self
                .client
                .describe_stack_resource_drifts()
                .stack_name(name)
                .stack_resource_drift_status_filters(StackResourceDriftStatus::Modified)
                .stack_resource_drift_status_filters(StackResourceDriftStatus::Deleted)
                .set_next_token(token.clone());
            let out = self.pacing.read("DescribeStackResourceDrifts", || request.send()).await?;
            for drift in out.stack_resource_drifts() {
                let differences = drift
                    .property_differences()
                    .iter()
                    .map(|d| {
                        let (path, expected, actual) = (d.property_path(), d.expected_value(), d.actual_value());
                        format!("{}: {} -> {}", path.unwrap_or("?"), expected.unwrap_or(""), actual.unwrap_or(""))
                    })
                    .collect();
                drifts.push(ResourceDrift {
                    logical_id: drift.logical_resource_id().unwrap_or_default().to_string(),
                    resource_type: drift.resource_type().unwrap_or_default().to_string(),
                    status: drift.stack_resource_drift_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    differences,
                });
            }
            token = out.next_token;
            if token.is_none() {
                return Ok(drifts);
            }
        }
    }

    /// Puts the stack's drifted resources back to what `spec` (the revision it runs) says: a
    /// change set in the REVERT_DRIFT deployment mode named `name`, executed once ready.
    pub async fn revert_drift(&self, spec: &StackSpec<'_>, name: &str) -> Result<(), AwsError> {
        let request = self.change_set(spec, name, ChangeSetType::Update).deployment_mode(DeploymentMode::RevertDrift);
        let id = self.pacing.write("CreateChangeSet", || request.send()).await?.id.unwrap_or_else(|| name.to_string());
        if self.settle_change_set(&id, spec.name).await?.is_none() {
            return Ok(());
        }
        let request = self.client.execute_change_set().change_set_name(&id).stack_name(spec.name);
        self.pacing.write("ExecuteChangeSet", || request.send()).await?;
        Ok(())
    }

    /// A CreateChangeSet request named `name` for what `spec` deploys.
    fn change_set(
        &self,
        spec: &StackSpec<'_>,
        name: &str,
        kind: ChangeSetType,
    ) -> aws_sdk_cloudformation::operation::create_change_set::builders::CreateChangeSetFluentBuilder {
        let input = StackInput::from(spec);
        self.client
            .create_change_set()
            .stack_name(spec.name)
            .change_set_name(name)
            .change_set_type(kind)
            .set_template_body(input.template_body)
            .set_template_url(input.template_url)
            .set_parameters(Some(input.parameters))
            .set_capabilities(Some(input.capabilities))
            .set_tags(Some(input.tags))
    }

    /// Waits for a change set to be worked out: its changes, or `None` when it holds none
    /// ("didn't contain changes").
    async fn settle_change_set(&self, id: &str, stack: &str) -> Result<Option<Vec<ResourceChange>>, AwsError> {
        let started = std::time::Instant::now();
        loop {
            let request = self.client.describe_change_set().change_set_name(id).stack_name(stack);
            let out = self.pacing.read("DescribeChangeSet", || request.send()).await?;
            match out.status() {
                Some(ChangeSetStatus::CreateComplete) => {
                    return Ok(Some(
                        out.changes()
                            .iter()
                            .filter_map(|c| c.resource_change())
                            .map(|c| ResourceChange {
                                region: String::new(),
                                action: c.action().map(|a| a.as_str().to_string()).unwrap_or_default(),
                                logical_id: c.logical_resource_id().unwrap_or_default().to_string(),
                                resource_type: c.resource_type().unwrap_or_default().to_string(),
                                replacement: c.replacement().map(|r| r.as_str().to_string()),
                            })
                            .collect(),
                    ));
                }
                // "The submitted information didn't contain changes": nothing would change.
                Some(ChangeSetStatus::Failed) => {
                    let reason = out.status_reason().unwrap_or_default();
                    if reason.contains("didn't contain changes") || reason.contains("No updates") {
                        return Ok(None);
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
        }
    }

    /// ContinueUpdateRollback.
    pub async fn continue_rollback(&self, name: &str, token: &str) -> Result<(), AwsError> {
        let request = self.client.continue_update_rollback().stack_name(name).client_request_token(token);
        self.pacing.write("ContinueUpdateRollback", || request.send()).await?;
        Ok(())
    }

    /// The first resource that failed, with its reason, from the stack's events.
    pub async fn first_failure(&self, stack_id: &str) -> Result<Option<String>, AwsError> {
        let request = self.client.describe_stack_events().stack_name(stack_id);
        let out = self.pacing.read("DescribeStackEvents", || request.send()).await?;
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

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use aws_sdk_cloudformation::operation::create_stack::CreateStackError;

    use super::*;
    use crate::{
        aws::{AwsErrorKind, BudgetLimits},
        metrics::{AwsRequestLabels, METRICS},
    };

    type Answer = Result<(), SdkError<CreateStackError, HttpResponse>>;

    fn sent(operation: &'static str) -> u64 {
        let organization = crate::metrics::DEFAULT_ORGANIZATION.to_string();
        METRICS
            .aws_requests
            .get_or_create(&AwsRequestLabels { service: "cloudformation", operation, organization })
            .get()
    }

    #[tokio::test]
    async fn paced_requests_are_fenced_and_idle_ones_do_not_wait() {
        let limits = BudgetLimits { requests_per_second: NonZeroU32::new(1000).unwrap(), max_in_flight: 1 };
        let budget = KeyedBudget::new(limits);
        let key = ("111111111111".to_string(), "eu-west-1".to_string());
        let pacing = |priority, fence| Pacing { budget: budget.clone(), key: key.clone(), priority, fence };
        let (writes, reads) = (sent("TestCreateStack"), sent("TestDescribeStacks"));

        let mut sent_to_aws = false;
        let lost_lease = pacing(Priority::User, Fence::closed());
        let fenced = lost_lease.write("TestCreateStack", || {
            sent_to_aws = true;
            async { Answer::Ok(()) }
        });
        match fenced.await {
            Err(Failure::NotSent(err)) => assert!(err.has_code("LeaseNotConfirmed"), "{err}"),
            other => panic!("a write past its fence must not be sent: {other:?}"),
        }
        assert!(!sent_to_aws);

        // The account's only slot is taken: idle work finds no permit now, and sends nothing.
        let _held = budget.permit(&key, Priority::User).await;
        let verification = pacing(Priority::IfIdle, Fence::open());
        let idle = verification.read("TestDescribeStacks", || {
            sent_to_aws = true;
            async { Answer::Ok(()) }
        });
        match idle.await {
            Err(Failure::NotSent(err)) => assert_eq!(err.kind, AwsErrorKind::Busy),
            other => panic!("idle work must not wait: {other:?}"),
        }
        assert!(!sent_to_aws);
        assert_eq!((sent("TestCreateStack"), sent("TestDescribeStacks")), (writes, reads), "nothing was counted");
    }
}
