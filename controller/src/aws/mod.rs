//! The one client layer every AWS call goes through.
//!
//! Credentials, region and endpoints come from the standard AWS SDK chain (environment,
//! shared config, web identity for IRSA, EKS Pod Identity); `AWS_ENDPOINT_URL` points Silo at
//! a simulator. The SDK retries throttling and transient errors with jittered exponential
//! backoff; whatever still fails is classified in [`error`]. Calls to the management account
//! share one [`Budget`].

pub mod budget;
pub mod cloudformation;
pub mod error;
pub mod organizations;
pub mod tenant_access;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, sts::AssumeRoleProvider};
use aws_credential_types::Credentials;

pub use budget::{Budget, BudgetLimits};
pub use error::{AwsError, AwsErrorKind};
pub use organizations::Organizations;
pub use tenant_access::{SessionKey, TenantAccess};

/// How long ago an AWS timestamp was; `None` for a time in the future or out of range.
pub fn age(time: &aws_smithy_types::DateTime) -> Option<std::time::Duration> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    now.checked_sub(std::time::Duration::from_secs(u64::try_from(time.secs()).ok()?))
}

/// AWS Organizations is a global service served from us-east-1; used when no region is set.
const DEFAULT_REGION: &str = "us-east-1";

/// Attempts per AWS call, counting the first, before an error reaches the pipeline.
const MAX_ATTEMPTS: u32 = 4;

/// How Silo reaches AWS.
#[derive(Clone, Debug)]
pub struct AwsSettings {
    pub limits: BudgetLimits,
    /// A role in the management account to assume first (`--management-role-arn`).
    pub management_role_arn: Option<String>,
    /// Tag tenant sessions with the tenant (needs sts:TagSession in the role's trust policy).
    pub tag_sessions: bool,
}

/// Clients for the management account, and the way into tenant accounts.
#[derive(Clone)]
pub struct Aws {
    pub organizations: Organizations,
    pub tenants: TenantAccess,
    /// The management account's configuration: endpoint, region, credentials.
    pub config: SdkConfig,
}

impl Aws {
    /// Loads the standard AWS configuration from the environment, then assumes the
    /// management role when one is given.
    pub async fn from_env(settings: &AwsSettings) -> Self {
        let region =
            aws_config::meta::region::RegionProviderChain::default_provider().or_else(Region::new(DEFAULT_REGION));
        let mut config = aws_config::defaults(BehaviorVersion::latest()).region(region).load().await;
        if let Some(role) = &settings.management_role_arn {
            let provider =
                AssumeRoleProvider::builder(role).session_name("silo-controller").configure(&config).build().await;
            config = config
                .into_builder()
                .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
                .build();
        }
        Self::from_config(&config, settings)
    }

    /// Clients from a loaded configuration, with Silo's retry policy and one shared budget
    /// for the management account.
    pub fn from_config(config: &SdkConfig, settings: &AwsSettings) -> Self {
        let config = config.to_builder().retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)).build();
        let budget = Budget::new(settings.limits);
        Self {
            organizations: Organizations::new(aws_sdk_organizations::Client::new(&config), budget.clone()),
            tenants: TenantAccess::new(&config, budget, settings.tag_sessions),
            config,
        }
    }

    /// The controller's region: where a Baseline without regions runs.
    pub fn region(&self) -> String {
        self.config.region().map(|r| r.to_string()).unwrap_or_else(|| DEFAULT_REGION.to_string())
    }

    /// CloudFormation in one tenant account and region, with that tenant's session.
    pub fn stacks(&self, credentials: Credentials, region: &str) -> cloudformation::Stacks {
        cloudformation::Stacks::new(&self.config, credentials, region, MAX_ATTEMPTS)
    }
}
