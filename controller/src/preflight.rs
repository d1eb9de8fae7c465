//! First-run checks: what a new install gets wrong, said in the user's terms.
//!
//! `silo run` calls [`check`] before it starts anything that acts. Each problem becomes one
//! line that says what is wrong and what to run; all of them are reported at once, and
//! `silo run` exits so the pod's restart shows them (`kubectl logs`):
//!
//! - the namespace Silo runs in (`--namespace`) does not exist;
//! - Silo may not use its Lease there (the RBAC is not applied);
//! - the Tenant and Baseline CRDs are not installed;
//! - the AWS region is not a region name;
//! - no AWS credentials can be found, or AWS refuses them;
//! - the management role (`--management-role-arn`) cannot be assumed.
//!
//! ## Guarantees
//! - Preflight writes nothing: the Lease check is a server-side dry run of its creation,
//!   and the AWS checks are `sts:GetCallerIdentity` (which needs no IAM permission) and the
//!   `sts:AssumeRole` of the management role that Silo makes anyway.
//! - Weather is not a problem: throttling, 5xx answers and timeouts from AWS are logged and
//!   Silo starts; its controllers retry such errors as they always do.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, meta::region::RegionProviderChain, timeout::TimeoutConfig};
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, PostParams},
};
use tracing::{info, warn};

use crate::{
    Baseline, Tenant,
    aws::{AwsErrorKind, error::classify},
};

/// The problems preflight found, one line each.
#[derive(Debug)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

impl std::error::Error for Problems {}

/// The Kubernetes client `silo run` uses (in-cluster, `KUBECONFIG` or `~/.kube/config`), or
/// one line saying how to give Silo access.
pub async fn kube_client() -> Result<Client, Problems> {
    Client::try_default().await.map_err(|err| {
        Problems(vec![format!(
            "no Kubernetes configuration ({}): run Silo in a pod (in-cluster), or set KUBECONFIG",
            error_chain(&err)
        )])
    })
}

/// Checks the cluster and AWS for what `silo run` was asked to do: its namespace and Lease
/// (`--namespace`, `--lease-name`), the CRDs, AWS credentials and region, and the management
/// role (`--management-role-arn`). `Err` lists every problem found, one line each.
pub async fn check(
    client: &Client,
    namespace: &str,
    lease_name: &str,
    management_role_arn: Option<&str>,
) -> Result<(), Problems> {
    let mut problems = vec![];
    problems.extend(check_namespace_and_lease(client, namespace, lease_name).await);
    problems.extend(check_crds(client).await);
    problems.extend(check_aws(management_role_arn).await);
    if problems.is_empty() {
        info!("preflight: the namespace, the CRDs and AWS are in order");
        Ok(())
    } else {
        // `silo run` exits printing these, one line each: no log line repeats them.
        Err(Problems(problems))
    }
}

/// A dry-run creation of the Lease: 404 when the namespace is missing, 403 without RBAC.
async fn check_namespace_and_lease(client: &Client, ns: &str, lease_name: &str) -> Option<String> {
    let leases = Api::<Lease>::namespaced(client.clone(), ns);
    let lease = Lease { metadata: ObjectMeta { name: Some(lease_name.to_string()), ..Default::default() }, spec: None };
    let params = PostParams { dry_run: true, field_manager: Some("silo-preflight".into()) };
    match leases.create(&params, &lease).await {
        // Replicas also list the Leases, to share the organizations.
        Ok(_) => check_lease_listing(&leases, ns).await,
        Err(kube::Error::Api(status)) if status.code == 409 => check_lease_listing(&leases, ns).await, // it exists: fine
        Err(kube::Error::Api(status)) if status.code == 404 => Some(format!(
            "namespace {ns} does not exist: run `kubectl create namespace {ns}` (or install with \
             `kubectl apply --server-side -k manifests/base`, which creates it), or pass --namespace \
             (POD_NAMESPACE) naming the namespace Silo runs in"
        )),
        Err(kube::Error::Api(status)) if status.code == 403 => Some(format!(
            "Silo may not use its Lease {}/{} ({}): apply its RBAC with \
             `kubectl apply --server-side -k manifests/base`, and run Silo as the silo ServiceAccount",
            ns, lease_name, status.message
        )),
        Err(kube::Error::Api(status)) if status.code == 401 => Some(format!(
            "the Kubernetes API server refused Silo's credentials ({}): check KUBECONFIG, or the \
             ServiceAccount token mounted in the pod",
            status.message
        )),
        Err(err) => Some(format!(
            "cannot talk to the Kubernetes API server ({err}): check KUBECONFIG, or that the pod can \
             reach the API server"
        )),
    }
}

/// Lists one Lease: replicas list them to share the organizations.
async fn check_lease_listing(leases: &Api<Lease>, ns: &str) -> Option<String> {
    match leases.list_metadata(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(status)) if status.code == 403 => Some(format!(
            "Silo may not list the Leases of {ns} ({}): apply its RBAC with \
             `kubectl apply --server-side -k manifests/base`, and run Silo as the silo ServiceAccount",
            status.message
        )),
        _ => None,
    }
}

/// Lists one Tenant and one Baseline: a 404 means the CRD is not installed.
async fn check_crds(client: &Client) -> Option<String> {
    let one = ListParams::default().limit(1);
    let mut missing = vec![];
    let mut other = vec![];
    match Api::<Tenant>::all(client.clone()).list_metadata(&one).await {
        Err(kube::Error::Api(status)) if status.code == 404 => missing.push("tenants.silo.dev"),
        Err(kube::Error::Api(status)) if status.code == 403 => other.push(format!("list Tenants: {}", status.message)),
        _ => {}
    }
    match Api::<Baseline>::all(client.clone()).list_metadata(&one).await {
        Err(kube::Error::Api(status)) if status.code == 404 => missing.push("baselines.silo.dev"),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            other.push(format!("list Baselines: {}", status.message))
        }
        _ => {}
    }
    if !missing.is_empty() {
        return Some(format!(
            "Silo's CRDs are not installed ({} missing): run `kubectl apply --server-side -k manifests/base` \
             (or `silo crd | kubectl apply --server-side -f -`)",
            missing.join(", ")
        ));
    }
    if !other.is_empty() {
        return Some(format!(
            "Silo may not read its resources ({}): apply its RBAC with `kubectl apply --server-side -k manifests/base`",
            other.join("; ")
        ));
    }
    None
}

/// Region, credentials, and the management role.
async fn check_aws(management_role_arn: Option<&str>) -> Vec<String> {
    // The same default as the controller's AWS layer: Organizations is served from us-east-1.
    let region = RegionProviderChain::default_provider().or_else(Region::new("us-east-1"));
    let timeouts = TimeoutConfig::builder().operation_timeout(Duration::from_secs(30)).build();
    let config = aws_config::defaults(BehaviorVersion::latest()).region(region).timeout_config(timeouts).load().await;
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    if !is_region_name(&region) {
        return vec![format!(
            "AWS region {region:?} is not a region name like us-east-1: set AWS_REGION (the Deployment's env) \
             to the region Silo should use; Organizations itself is global"
        )];
    }
    let Some(provider) = config.credentials_provider() else {
        return vec![no_credentials("no credentials provider is configured")];
    };
    match provider.provide_credentials().await {
        Ok(_) => {}
        Err(CredentialsError::CredentialsNotLoaded(_)) => return vec![no_credentials("none found")],
        Err(CredentialsError::ProviderTimedOut(_)) => {
            warn!("preflight: AWS credentials timed out; starting anyway, the controllers retry");
            return vec![];
        }
        Err(err) => {
            return vec![format!(
                "AWS credentials could not be loaded ({}): check the ServiceAccount's IAM role \
                 (IRSA annotation or EKS Pod Identity association) or the AWS_* environment",
                error_chain(&err)
            )];
        }
    }

    let sts = aws_sdk_sts::Client::new(&config);
    let identity = match sts.get_caller_identity().send().await {
        Ok(identity) => identity.arn().unwrap_or_default().to_string(),
        Err(err) => return aws_problem(&err, &config, "sts:GetCallerIdentity").into_iter().collect(),
    };
    info!(identity, region, "preflight: AWS credentials work");

    let Some(role) = management_role_arn else { return vec![] };
    match sts.assume_role().role_arn(role).role_session_name("silo-preflight").send().await {
        Ok(_) => vec![],
        Err(SdkError::ServiceError(ctx))
            if matches!(ctx.err().code(), Some("AccessDenied" | "AccessDeniedException")) =>
        {
            vec![format!(
                "cannot assume the management role {role} (--management-role-arn, SILO_MANAGEMENT_ROLE_ARN) \
                 as {identity}: AWS said {}. Its trust policy must allow {identity} to sts:AssumeRole \
                 (see docs/iam-policy.json and docs/install.md, \"Least privilege\")",
                ctx.err().message().unwrap_or("AccessDenied")
            )]
        }
        Err(err) => aws_problem(&err, &config, "sts:AssumeRole of the management role").into_iter().collect(),
    }
}

fn no_credentials(detail: &str) -> String {
    format!(
        "no AWS credentials ({detail}): give the silo ServiceAccount an IAM role (the IRSA annotation \
         eks.amazonaws.com/role-arn, see manifests/overlays/eks, or an EKS Pod Identity association), \
         or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    )
}

/// A failed STS call in the user's terms; `None` for weather (throttling, 5xx, timeouts).
/// An AWS answer is weather when the controllers' own classifier ([`classify`]) would retry it.
fn aws_problem<E>(err: &SdkError<E>, config: &SdkConfig, call: &str) -> Option<String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    match err {
        SdkError::ServiceError(ctx) => {
            let message = ctx.err().message().unwrap_or_default();
            let kind = classify(ctx.err().code(), Some(ctx.raw().status().as_u16()));
            let code = ctx.err().code().unwrap_or("Unknown");
            if matches!(kind, AwsErrorKind::Throttled | AwsErrorKind::Transient) {
                warn!(code, message, "preflight: {call} was refused for now; starting anyway, the controllers retry");
                return None;
            }
            let hint = match code {
                "InvalidClientTokenId" | "UnrecognizedClientException" => {
                    "the access key is unknown to AWS, or the region is not enabled for the account"
                }
                "SignatureDoesNotMatch" => "the secret access key is wrong",
                "ExpiredToken" | "ExpiredTokenException" => "the session token has expired",
                _ => "check the credentials Silo runs with",
            };
            Some(format!(
                "AWS refused Silo's credentials in region {region} ({call}: {code}: {message}): {hint}; \
                 check the ServiceAccount's IAM role or the AWS_* environment, and AWS_REGION"
            ))
        }
        SdkError::DispatchFailure(_) => Some(format!(
            "cannot reach AWS STS in region {region} ({call}: {}): check AWS_REGION, AWS_ENDPOINT_URL \
             and that the pod may reach AWS",
            error_chain(err)
        )),
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            warn!(call, "preflight: no answer from AWS in time; starting anyway, the controllers retry");
            None
        }
        _ => Some(format!("{call} failed in region {region}: {}", error_chain(err))),
    }
}

/// `us-east-1`, `us-gov-west-1`, `ap-southeast-5`, `eusc-de-east-1`: letters, dash-separated
/// words, and a number at the end.
pub fn is_region_name(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && (2..=4).contains(&parts[0].len())
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_recognised() {
        for good in ["us-east-1", "eu-west-3", "us-gov-west-1", "ap-southeast-5", "cn-north-1", "eusc-de-east-1"] {
            assert!(is_region_name(good), "{good}");
        }
        for bad in ["", "us-east", "useast1", "US-EAST-1", "us-east-1a", "us_east_1", "eu--1", "europe-west-1"] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn aws_weather_is_what_the_controllers_retry() {
        use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError;
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::{body::SdkBody, error::ErrorMetadata};
        let refused = |code: &str, status: u16| {
            let error = GetCallerIdentityError::generic(ErrorMetadata::builder().code(code).message("no").build());
            SdkError::service_error(error, Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty()))
        };
        let config = SdkConfig::builder().region(Region::new("eu-west-1")).build();
        let problem = |code, status| aws_problem(&refused(code, status), &config, "sts:GetCallerIdentity");
        for (code, status) in
            [("Throttling", 400), ("ThrottledException", 400), ("RequestThrottledException", 400), ("BadGateway", 502)]
        {
            assert_eq!(problem(code, status), None, "{code} ({status}) is weather: Silo starts");
        }
        let refused = problem("InvalidClientTokenId", 403).expect("a problem");
        assert!(refused.contains("the access key is unknown to AWS"), "{refused}");
        assert!(refused.contains("region eu-west-1"), "{refused}");
    }

    #[test]
    fn problems_print_one_line_each() {
        let problems = Problems(vec!["namespace x does not exist: run y".into(), "no AWS credentials: z".into()]);
        assert_eq!(problems.to_string(), "namespace x does not exist: run y\nno AWS credentials: z");
    }
}
