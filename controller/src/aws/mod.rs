//! The one client layer every AWS call goes through.
//!
//! Credentials, region and endpoints come from the standard AWS SDK chain (environment,
//! shared config, web identity for IRSA, EKS Pod Identity); `AWS_ENDPOINT_URL` points Silo at
//! a simulator. The SDK retries throttling and transient errors with jittered exponential
//! backoff; whatever still fails is classified in [`error`]. Each service has its own
//! [`Budget`]: Organizations one for the organization (owned by [`crate::org`]), STS one for
//! the controller's identity, CloudFormation one rate per tenant account and region, the
//! Account API ([`account_management`]) its own.
//! Every request is counted in `silo_aws_requests_total{service,operation}`.
//!
//! A call site names its operation once: [`budget::Gate`] (or CloudFormation's
//! [`cloudformation::Pacing`]) takes the permit, checks the [`fence`] for a write, counts the
//! request and keeps the operation for the error, which the caller may inspect as the
//! service's own before [`error`] classifies it.

pub mod account_management;
pub mod budget;
pub mod cloudformation;
pub mod error;
pub mod fence;
pub mod organizations;
pub mod stack_answers;
pub mod templates;
pub mod tenant_access;

use std::num::NonZeroU32;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, sts::AssumeRoleProvider};
use aws_credential_types::Credentials;

pub use account_management::AccountManagement;
pub use budget::{Budget, BudgetLimits, KeyedBudget, Priority};
pub use error::{AwsError, AwsErrorKind};
pub use fence::Fence;
pub use organizations::Organizations;
pub use tenant_access::{SessionKey, TenantAccess};

use crate::metrics::{AwsRequestLabels, METRICS, OrganizationLabels};

/// How long ago an AWS timestamp was; `None` for a time in the future or out of range.
pub fn age(time: &aws_smithy_types::DateTime) -> Option<std::time::Duration> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    now.checked_sub(std::time::Duration::from_secs(u64::try_from(time.secs()).ok()?))
}

/// Counts one request sent to AWS for `organization` (its metrics label).
pub(crate) fn count_request(service: &'static str, operation: &'static str, organization: &str) {
    let organization = organization.to_string();
    METRICS.aws_requests.get_or_create(&AwsRequestLabels { service, operation, organization }).inc();
    METRICS.aws_operation_seen(operation);
}

/// AWS Organizations is a global service served from us-east-1; used when no region is set.
const DEFAULT_REGION: &str = "us-east-1";

/// Attempts per AWS call, counting the first, before an error reaches the pipeline.
const MAX_ATTEMPTS: u32 = 4;

/// How Silo reaches AWS.
#[derive(Clone, Debug)]
pub struct AwsConfig {
    /// Organizations requests, for the whole organization.
    pub limits: BudgetLimits,
    /// STS requests (AssumeRole into tenant accounts), for the controller's identity.
    pub sts_limits: BudgetLimits,
    /// CloudFormation requests: the rate is per tenant account and region, the in-flight
    /// cap for all of them together.
    pub cloudformation_limits: BudgetLimits,
    /// AWS Account Management requests (account names and alternate contacts).
    pub account_limits: BudgetLimits,
    /// A role in the management account to assume first (`--management-role-arn`).
    pub management_role_arn: Option<String>,
    /// The external id the management role's trust policy requires, if any.
    pub management_external_id: Option<String>,
    /// The Region of the management clients; `None`: the environment's, else us-east-1.
    pub region: Option<String>,
    /// The organization these clients act for (`None`: the default one), for the
    /// `organization` label of their requests.
    pub organization: Option<String>,
    /// The session name of the management role's sessions: the replica's, so that AWS
    /// (CloudTrail) says which replica made each request.
    pub session_name: String,
    /// Tag tenant sessions with the tenant (needs sts:TagSession in the role's trust policy,
    /// which OrganizationAccountAccessRole does not allow: off by default).
    pub tag_sessions: bool,
}

impl AwsConfig {
    /// Silo's defaults (those of `silo run`).
    pub fn defaults() -> Self {
        let limits = |rps: u32, in_flight| BudgetLimits {
            requests_per_second: NonZeroU32::new(rps).expect("a positive rate"),
            max_in_flight: in_flight,
        };
        Self {
            limits: limits(10, 8),
            sts_limits: limits(20, 8),
            cloudformation_limits: limits(5, 32),
            account_limits: limits(5, 4),
            management_role_arn: None,
            management_external_id: None,
            region: None,
            organization: None,
            session_name: "silo-controller".into(),
            tag_sessions: false,
        }
    }
}

/// Clients for the management account, and the way into tenant accounts.
#[derive(Clone)]
pub struct Aws {
    /// Organizations, for [`crate::org::Organization`] only.
    pub organizations: Organizations,
    /// The Account API: member accounts' names and alternate contacts.
    pub accounts: AccountManagement,
    pub tenants: TenantAccess,
    stacks_budget: KeyedBudget,
    /// Every AWS write checks it first (see [`fence`]).
    fence: Fence,
    /// The management account's configuration: endpoint, region, credentials.
    pub config: SdkConfig,
}

impl Aws {
    /// Loads the standard AWS configuration from the environment, then assumes the
    /// management role when one is given.
    pub async fn from_env(aws: &AwsConfig) -> Self {
        Self::from_base(&Self::env_config().await, aws).await
    }

    /// The standard AWS configuration of the environment (the controller's own identity),
    /// in the environment's Region, else us-east-1.
    pub async fn env_config() -> SdkConfig {
        let region =
            aws_config::meta::region::RegionProviderChain::default_provider().or_else(Region::new(DEFAULT_REGION));
        aws_config::defaults(BehaviorVersion::latest()).region(region).load().await
    }

    /// Clients for the organization `aws` describes, from the controller's own configuration
    /// `base`: in `aws.region` when it names one, as the management role when it names one
    /// (with its external id), else as `base`'s identity.
    pub async fn from_base(base: &SdkConfig, aws: &AwsConfig) -> Self {
        let mut config = base.clone();
        if let Some(region) = &aws.region {
            config = config.into_builder().region(Region::new(region.clone())).build();
        }
        if let Some(role) = &aws.management_role_arn {
            let mut builder =
                AssumeRoleProvider::builder(role).session_name(tenant_access::role_session_name(&aws.session_name));
            if let Some(external_id) = &aws.management_external_id {
                builder = builder.external_id(external_id);
            }
            let provider = builder.configure(&config).build().await;
            config = config
                .into_builder()
                .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
                .build();
        }
        Self::from_config(&config, aws)
    }

    /// Clients from a loaded configuration, with Silo's retry policy and one budget per service.
    pub fn from_config(config: &SdkConfig, aws: &AwsConfig) -> Self {
        let config = config.to_builder().retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)).build();
        // Each budget counts its requests for the organization (silo_aws_requests_total).
        let label = OrganizationLabels::of(aws.organization.as_deref()).organization;
        let budget = |limits| Budget::new(limits).for_organization(&label);
        Self {
            organizations: Organizations::new(aws_sdk_organizations::Client::new(&config), budget(aws.limits)),
            accounts: AccountManagement::new(aws_sdk_account::Client::new(&config), budget(aws.account_limits)),
            tenants: TenantAccess::new(&config, budget(aws.sts_limits), aws.tag_sessions),
            stacks_budget: KeyedBudget::new(aws.cloudformation_limits).for_organization(&label),
            fence: Fence::open(),
            config,
        }
    }

    /// The same clients, whose writes first check the leader's fence.
    pub fn fenced(self, fence: Fence) -> Self {
        Self {
            organizations: self.organizations.fenced(fence.clone()),
            accounts: self.accounts.fenced(fence.clone()),
            fence,
            ..self
        }
    }

    /// The controller's region: where a Baseline without regions runs.
    pub fn region(&self) -> String {
        self.config.region().map(|r| r.to_string()).unwrap_or_else(|| DEFAULT_REGION.to_string())
    }

    /// CloudFormation in one tenant account and region, with that tenant's session, at
    /// `priority` on that account and region's budget.
    pub fn stacks(
        &self,
        account_id: &str,
        credentials: Credentials,
        region: &str,
        priority: Priority,
    ) -> cloudformation::Stacks {
        let pacing = cloudformation::Pacing {
            budget: self.stacks_budget.clone(),
            key: (account_id.to_string(), region.to_string()),
            priority,
            fence: self.fence.clone(),
        };
        cloudformation::Stacks::new(&self.config, credentials, region, MAX_ATTEMPTS, pacing)
    }
}
