//! The AWS simulator: moto's server behind Silo's own fault and quota layer
//! (`tests/awssim/silo_awssim.py`), run with the Python from the project's venv.
//!
//! moto alone is happy-path only; the layer makes creations take time, refuses duplicate
//! emails, throttles like AWS, injects 5xx and latency, takes closures through
//! PENDING_CLOSURE and fails stacks on demand. Each test configures it through
//! [`AwsSim::configure`] after a [`AwsSim::reset`].

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_organizations::config::Credentials;
use serde_json::Value;

use crate::{
    container::Container,
    process::{Process, free_port, wait_until},
};

/// moto's management account: the organization's owner, and the identity of plain credentials.
pub const MANAGEMENT_ACCOUNT: &str = "123456789012";

/// The access key of a test looking at the simulator (`OBSERVER_ACCESS_KEY` in silo_awssim.py).
pub const OBSERVER_ACCESS_KEY: &str = "observer";

/// The Python interpreter of the project's venv (`make tools`).
pub fn python() -> PathBuf {
    match std::env::var_os("SILO_VENV") {
        Some(dir) => PathBuf::from(dir).join("bin/python"),
        None => crate::cache_dir().join("venv/bin/python"),
    }
}

/// A running simulator.
pub struct AwsSim {
    pub endpoint: String,
    _running: Running,
}

/// The simulator runs from the venv (the default) or from its image.
enum Running {
    Process(#[allow(dead_code)] Process),
    Container(#[allow(dead_code)] Container),
}

impl AwsSim {
    /// Starts the simulator on a random loopback port and waits until it answers.
    pub async fn start(dir: &Path) -> Result<Self> {
        let python = python();
        if !python.exists() {
            bail!("{} is missing: run `make tools` to create the simulator's venv", python.display());
        }
        let script = crate::repo_dir().join("tests/awssim/silo_awssim.py");
        let port = free_port()?;
        let mut command = Command::new(python);
        command.arg(&script).arg("--host").arg("127.0.0.1").arg("--port").arg(port.to_string());
        let mut process = Process::start("aws simulator", command, &dir.join("awssim.log"))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_healthy(&mut process, &endpoint).await?;
        Ok(Self { endpoint, _running: Running::Process(process) })
    }

    /// Starts the simulator from its image (`make image` builds `silo-awssim:dev`) on the
    /// host network, on a random loopback port, and waits until it answers.
    pub async fn start_image(dir: &Path, image: &str) -> Result<Self> {
        let engine = crate::container::engine()?;
        crate::container::require_image(&engine, image)?;
        let port = free_port()?;
        let name = format!("silo-testenv-{}-awssim", std::process::id());
        let run_args = vec!["--read-only".to_string()];
        // The environment resets the simulator and creates the organization itself.
        let args: Vec<String> =
            ["--host", "127.0.0.1", "--port", &port.to_string(), "--no-organization"].map(String::from).into();
        let mut container = Container::run(&engine, &name, image, &run_args, &args, &dir.join("awssim.log"))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_healthy(container.process(), &endpoint).await?;
        Ok(Self { endpoint, _running: Running::Container(container) })
    }
}

async fn wait_healthy(process: &mut Process, endpoint: &str) -> Result<()> {
    wait_until(process, "the AWS simulator did not answer", Duration::from_secs(60), || async {
        reqwest::get(format!("{endpoint}/_silo/health")).await.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await
}

/// One entry of the simulator's request log (`GET /_silo/log`).
#[derive(serde::Deserialize, Clone, Debug)]
pub struct LogEntry {
    /// Wall clock (seconds) when the request arrived.
    pub time: f64,
    /// Seconds from arrival to answer.
    pub duration: f64,
    /// `service:Operation`.
    pub key: String,
    #[serde(default)]
    pub access_key: Option<String>,
    /// The account the request acted as (a management account, for Organizations requests).
    #[serde(default)]
    pub caller_account: Option<String>,
}

#[derive(serde::Deserialize)]
struct LogPage {
    next: u64,
    entries: Vec<LogEntry>,
    more: bool,
    #[serde(default)]
    dropped: u64,
}

/// One CreateStack, UpdateStack, ExecuteChangeSet or DeleteStack, as the simulator saw it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct StackOperation {
    pub account: String,
    pub region: String,
    pub stack_name: String,
    pub operation: String,
    /// Wall-clock seconds.
    pub started: f64,
    /// `None` while in flight.
    pub finished: Option<f64>,
    pub result: Option<String>,
}

/// The most operations of the given kind in flight at one moment, from `since` on.
pub fn most_in_flight(operations: &[StackOperation], kind: &str, since: f64) -> usize {
    let mut edges: Vec<(f64, i32)> = vec![];
    for op in operations.iter().filter(|op| op.operation == kind && op.started >= since) {
        edges.push((op.started, 1));
        edges.push((op.finished.unwrap_or(f64::MAX), -1));
    }
    // Ends before starts at the same instant: back-to-back operations do not overlap.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// A trust policy that lets `principal` (an account id, `arn:aws:iam::<id>:root`, or a role
/// ARN) `sts:AssumeRole`, and only with `external_id` when one is given. Like the role
/// CreateAccount makes, it does not allow `sts:TagSession`: AssumeRole with session tags
/// (`silo run --session-tags=true`) is refused (see [`trust_policy_allowing_tags`]).
pub fn trust_policy(principal: &str, external_id: Option<&str>) -> String {
    trust_policy_for(&["sts:AssumeRole"], principal, external_id)
}

/// [`trust_policy`] that also lets `principal` tag its sessions (`sts:TagSession`), as AWS
/// (and the simulator) requires of a role Silo assumes with `--session-tags=true`.
pub fn trust_policy_allowing_tags(principal: &str, external_id: Option<&str>) -> String {
    trust_policy_for(&["sts:AssumeRole", "sts:TagSession"], principal, external_id)
}

fn trust_policy_for(actions: &[&str], principal: &str, external_id: Option<&str>) -> String {
    let action = match actions {
        [one] => serde_json::json!(one),
        _ => serde_json::json!(actions),
    };
    let mut statement = serde_json::json!({"Effect": "Allow", "Action": action, "Principal": {"AWS": principal}});
    if let Some(id) = external_id {
        statement["Condition"] = serde_json::json!({"StringEquals": {"sts:ExternalId": id}});
    }
    serde_json::json!({"Version": "2012-10-17", "Statement": [statement]}).to_string()
}

/// A handle on a simulator by its endpoint; cheap, and usable from any runtime.
#[derive(Clone, Debug)]
pub struct SimClient {
    pub endpoint: String,
}

impl SimClient {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self { endpoint: endpoint.into() }
    }

    /// Forgets every account, stack and fault, then creates the organization anew.
    pub async fn reset(&self) -> Result<()> {
        self.admin_post("reset", &serde_json::json!({})).await?;
        self.organizations()
            .create_organization()
            .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
            .send()
            .await
            .context("CreateOrganization after reset")?;
        Ok(())
    }

    /// Merges `config` into the fault layer's configuration (see silo_awssim.py for keys).
    pub async fn configure(&self, config: Value) -> Result<()> {
        self.admin_post("config", &config).await.map(drop)
    }

    /// Changes a resource of a stack out of band, as a person in the console would
    /// (`POST /_silo/drift`: account, region, stack, resource, status, differences): drift
    /// detection reports it until a REVERT_DRIFT change set is executed on the stack.
    pub async fn drift(&self, change: Value) -> Result<()> {
        self.admin_post("drift", &change).await.map(drop)
    }

    /// The fault layer's whole configuration as it stands (`GET /_silo/config`).
    pub async fn config(&self) -> Result<Value> {
        let response = reqwest::get(format!("{}/_silo/config", self.endpoint)).await?;
        Ok(response.error_for_status()?.json().await?)
    }

    /// Request counters: `requests`, `throttled`, `injected_errors`, ...
    pub async fn stats(&self) -> Result<Value> {
        let response = reqwest::get(format!("{}/_silo/stats", self.endpoint)).await?;
        Ok(response.error_for_status()?.json().await?)
    }

    async fn admin_post(&self, path: &str, body: &Value) -> Result<Value> {
        let response = reqwest::Client::new().post(format!("{}/_silo/{path}", self.endpoint)).json(body).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("simulator /_silo/{path} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// AWS configuration for the management account, pointed at the simulator: Silo's
    /// identity, metered like any AWS caller.
    pub fn sdk_config(&self) -> SdkConfig {
        self.config_signed_by("testing")
    }

    /// The management account as the test's own eyes: the simulator never throttles these
    /// requests (its `OBSERVER_ACCESS_KEY`), so a test's look does not spend Silo's quota.
    pub fn observer_config(&self) -> SdkConfig {
        self.config_signed_by(OBSERVER_ACCESS_KEY)
    }

    fn config_signed_by(&self, access_key: &str) -> SdkConfig {
        self.config_with(Credentials::new(access_key, access_key, None, None, "silo-tests"))
    }

    /// An SDK configuration for the simulator, signing with `credentials`.
    fn config_with(&self, credentials: Credentials) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .time_source(aws_smithy_async::time::SystemTimeSource::new())
            .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_organizations::config::SharedCredentialsProvider::new(credentials))
            .build()
    }

    /// Creates IAM role `name` with `trust_policy` in `account_id`: the management account
    /// (with its own credentials), or a member account, entered through its
    /// OrganizationAccountAccessRole. The simulator lets a role be assumed only as its trust
    /// policy says, and the management account's credentials are no role: a role Silo
    /// assumes there (`--management-role-arn`) must be created first. The workspace has no
    /// IAM SDK crate, so this is IAM's query protocol by hand; the simulator, like moto,
    /// reads the access key from the signature but does not check it.
    pub async fn create_role(&self, account_id: &str, name: &str, trust_policy: &str) -> Result<()> {
        let form = [("Action", "CreateRole"), ("RoleName", name), ("AssumeRolePolicyDocument", trust_policy)];
        self.iam(account_id, &form).await.with_context(|| format!("IAM CreateRole {name} in {account_id}"))
    }

    /// Replaces the trust policy of role `name` in `account_id` (IAM UpdateAssumeRolePolicy),
    /// entering the account as [`SimClient::create_role`] does. The document needs a
    /// `"Version": "2012-10-17"` ([`trust_policy`] has one).
    pub async fn update_assume_role_policy(&self, account_id: &str, name: &str, trust_policy: &str) -> Result<()> {
        let form = [("Action", "UpdateAssumeRolePolicy"), ("RoleName", name), ("PolicyDocument", trust_policy)];
        self.iam(account_id, &form).await.with_context(|| format!("IAM UpdateAssumeRolePolicy {name} in {account_id}"))
    }

    /// One IAM request (query protocol, `form` without Version) in `account_id`.
    async fn iam(&self, account_id: &str, form: &[(&str, &str)]) -> Result<()> {
        let access_key = if account_id == MANAGEMENT_ACCOUNT {
            "testing".to_string()
        } else {
            let out = aws_sdk_sts::Client::new(&self.sdk_config())
                .assume_role()
                .role_arn(format!("arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole"))
                .role_session_name("silo-tests")
                .send()
                .await
                .with_context(|| format!("AssumeRole into {account_id}"))?;
            out.credentials.context("AssumeRole answered no credentials")?.access_key_id
        };
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={access_key}/20250101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0"
        );
        let mut form = form.to_vec();
        form.push(("Version", "2010-05-08"));
        let response = reqwest::Client::new()
            .post(&self.endpoint)
            .header("Authorization", authorization)
            .form(&form)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("answered {status}: {text}");
        }
        Ok(())
    }

    /// A second organization, whose management account is `account_id`: created through role
    /// `role_name` there (the simulator's `enforce_trust_policies` must be off, so that no IAM
    /// set-up is needed in that account), and an Organizations client of it for assertions.
    pub async fn another_organization(
        &self,
        account_id: &str,
        role_name: &str,
    ) -> Result<aws_sdk_organizations::Client> {
        let out = aws_sdk_sts::Client::new(&self.observer_config())
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account_id}:role/{role_name}"))
            .role_session_name("silo-tests")
            .send()
            .await
            .with_context(|| format!("AssumeRole into {account_id}"))?;
        let credentials = out.credentials.context("AssumeRole answered no credentials")?;
        let config = self.config_with(Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            Some(credentials.session_token),
            None,
            "silo-tests",
        ));
        let organizations = aws_sdk_organizations::Client::new(&config);
        organizations
            .create_organization()
            .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
            .send()
            .await
            .with_context(|| format!("CreateOrganization in {account_id}"))?;
        Ok(organizations)
    }

    /// An Organizations client of the management account, for test assertions.
    pub fn organizations(&self) -> aws_sdk_organizations::Client {
        aws_sdk_organizations::Client::new(&self.observer_config())
    }

    /// An Account Management client of the management account, for test assertions.
    pub fn account_management(&self) -> aws_sdk_account::Client {
        aws_sdk_account::Client::new(&self.observer_config())
    }

    /// Creates an account outside Silo, as a person or an earlier controller would, with
    /// these tags, and waits until AWS has made it (creations take time): its id.
    pub async fn create_account(&self, name: &str, email: &str, tags: &[(&str, &str)]) -> Result<String> {
        Self::create_account_in(&self.organizations(), name, email, tags).await
    }

    /// [`SimClient::create_account`] in the organization `org` manages (one of
    /// [`SimClient::another_organization`], say).
    pub async fn create_account_in(
        org: &aws_sdk_organizations::Client,
        name: &str,
        email: &str,
        tags: &[(&str, &str)],
    ) -> Result<String> {
        use aws_sdk_organizations::types::{CreateAccountState, Tag};
        let tags = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect::<Result<Vec<_>, _>>()?;
        let created = org.create_account().account_name(name).email(email).set_tags(Some(tags)).send().await?;
        let id = created.create_account_status().and_then(|s| s.id()).context("CreateAccount gave no request id")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = org.describe_create_account_status().create_account_request_id(id).send().await?;
            let status = out.create_account_status().context("no CreateAccountStatus")?;
            match status.state() {
                Some(CreateAccountState::Succeeded) => {
                    return Ok(status.account_id().context("SUCCEEDED without AccountId")?.to_string());
                }
                Some(CreateAccountState::Failed) => bail!("creating {email} failed: {:?}", status.failure_reason()),
                _ if tokio::time::Instant::now() > deadline => bail!("creating {email} took over 60 s"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// How many accounts of the organization have each email (every page of ListAccounts).
    pub async fn accounts_by_email(&self) -> Result<std::collections::BTreeMap<String, usize>> {
        let org = self.organizations();
        let mut counts = std::collections::BTreeMap::new();
        let mut token = None;
        loop {
            let page = org.list_accounts().set_next_token(token).send().await.context("ListAccounts")?;
            for account in page.accounts() {
                *counts.entry(account.email().unwrap_or_default().to_string()).or_default() += 1;
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(counts);
            }
        }
    }

    /// Requests about one account or stack (everything but the organization-wide reads
    /// every controller makes of its organization at start and on refresh, and the identity
    /// check of its start).
    pub async fn per_account_requests(&self) -> Result<u64> {
        const ORGANIZATION_WIDE: [&str; 7] = [
            "sts:GetCallerIdentity",
            "organizations:CreateOrganization",
            "organizations:DescribeOrganization",
            "organizations:ListRoots",
            "organizations:ListOrganizationalUnitsForParent",
            "organizations:ListAccountsForParent",
            "organizations:ListCreateAccountStatus",
        ];
        let stats = self.stats().await?;
        let requests = stats["requests"].as_object().context("stats carry requests")?;
        Ok(requests
            .iter()
            .filter(|(k, _)| !ORGANIZATION_WIDE.contains(&k.as_str()))
            .filter_map(|(_, v)| v.as_u64())
            .sum())
    }

    /// Every stack operation the simulator accepted (`GET /_silo/stack_operations`).
    pub async fn stack_operations(&self) -> Result<Vec<StackOperation>> {
        let response = reqwest::get(format!("{}/_silo/stack_operations", self.endpoint)).await?;
        Ok(response.error_for_status()?.json().await?)
    }

    /// Where the request log ends now: pass it to [`SimClient::read_log`] later to read what
    /// came since.
    pub async fn log_position(&self) -> Result<u64> {
        Ok(self.log_page(u64::from(u32::MAX), 0).await?.next)
    }

    /// Every request the simulator answered since `since` (a [`SimClient::log_position`]),
    /// oldest first, an observer's own requests left out. Fails when the log dropped some.
    pub async fn read_log(&self, since: u64) -> Result<Vec<LogEntry>> {
        let mut entries = vec![];
        let mut at = since;
        loop {
            let page = self.log_page(at, 10_000).await?;
            if page.dropped > 0 {
                bail!("the simulator's request log dropped {} entries after {since}", page.dropped);
            }
            entries.extend(page.entries.into_iter().filter(|e| e.access_key.as_deref() != Some(OBSERVER_ACCESS_KEY)));
            at = page.next;
            if !page.more {
                return Ok(entries);
            }
        }
    }

    async fn log_page(&self, since: u64, limit: u64) -> Result<LogPage> {
        let url = format!("{}/_silo/log?since={since}&limit={limit}", self.endpoint);
        let response = reqwest::get(url).await.context("GET /_silo/log")?;
        Ok(response.error_for_status()?.json().await?)
    }

    /// How many requests of `service:Operation` the simulator has seen.
    pub async fn requests(&self, operation: &str) -> Result<u64> {
        Ok(self.stats().await?["requests"][operation].as_u64().unwrap_or(0))
    }

    /// The environment a separate `silo run` process needs to reach the simulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}
