//! The one client layer every AWS call goes through.
//!
//! Credentials, region and endpoints come from the standard AWS SDK chain (environment,
//! shared config, web identity for IRSA, EKS Pod Identity); `AWS_ENDPOINT_URL` points Silo at
//! a simulator. The SDK retries throttling and transient errors with jittered exponential
//! backoff; whatever still fails is classified in [`error`].

pub mod budget;
pub mod error;
pub mod organizations;

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};

pub use budget::{Budget, BudgetLimits};
pub use error::{AwsError, AwsErrorKind};
pub use organizations::Organizations;

/// AWS Organizations is a global service served from us-east-1; used when no region is set.
const DEFAULT_REGION: &str = "us-east-1";

/// Attempts per AWS call, counting the first, before an error reaches the pipeline.
const MAX_ATTEMPTS: u32 = 4;

/// Clients for the management account.
#[derive(Clone)]
pub struct Aws {
    pub organizations: Organizations,
}

impl Aws {
    /// Loads the standard AWS configuration from the environment.
    pub async fn from_env(limits: BudgetLimits) -> Self {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(
                aws_config::meta::region::RegionProviderChain::default_provider().or_else(Region::new(DEFAULT_REGION)),
            )
            .load()
            .await;
        Self::from_config(&config, limits)
    }

    /// Clients from a loaded configuration, with Silo's retry policy and one shared budget
    /// for the organization.
    pub fn from_config(config: &aws_config::SdkConfig, limits: BudgetLimits) -> Self {
        let config = config.to_builder().retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)).build();
        let client = aws_sdk_organizations::Client::new(&config);
        Self { organizations: Organizations::new(client, Budget::new(limits)) }
    }
}
