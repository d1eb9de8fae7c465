//! Silo's test environment, shared by the end-to-end suites and `make demo`.
//!
//! [`Env::start`] brings up, on loopback addresses with random ports:
//! - a real Kubernetes API server with etcd ([`control_plane`]), with Silo's CRDs installed;
//! - the AWS simulator: moto behind Silo's fault and quota layer ([`awssim`]).
//!
//! Everything it starts is stopped by process id when the [`Env`] is dropped, or when the
//! process that started it dies ([`process`]). Nothing is skipped when a piece is missing:
//! starting fails loudly with what to run.
//!
//! End-to-end tests call [`test_case`]: one environment per test binary, started on first use,
//! with tests serialised and the simulator reset between them. A binary that needs a
//! differently configured environment (the install suite: an audit log, the simulator from
//! its image) calls [`test_case_with`] instead, with its [`EnvOptions`].

pub mod awssim;
pub mod checks;
pub mod container;
pub mod control_plane;
pub mod process;
pub mod proxy;

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::wait::{await_condition, conditions},
};
use silo::{Tenant, aws::AwsConfig, config::Config};

pub use awssim::{AwsSim, SimClient};
pub use control_plane::{ControlPlane, ControlPlaneOptions};

/// Where built binaries, the venv and scratch directories live: `$SILO_CACHE`, else
/// `~/.cache/silo`. Outside the clone, so repeated runs are fast; never required to exist.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("SILO_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/silo"),
    }
}

/// The repository root.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A running control plane and AWS simulator.
pub struct Env {
    pub dir: PathBuf,
    pub aws: AwsSim,
    pub kube: ControlPlane,
}

/// Deletes the etcd data (about 125 MB each: `<control plane>/etcd`, the environment's own
/// `kube` and any other a test started beside it) of the environments under `run` whose
/// process is gone, and keeps their logs: a suite's environment lives as long as its process
/// and is never dropped, so without this every `make test` would leave over a gigabyte behind.
fn free_dead_envs(run: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(run) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.strip_prefix("env-")) else { continue };
        if std::path::Path::new("/proc").join(pid).exists() {
            continue;
        }
        for part in std::fs::read_dir(entry.path()).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir_all(part.path().join("etcd"));
        }
    }
}

/// How to start an [`Env`]; the default is what every suite but the install suite uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvOptions {
    pub control_plane: ControlPlaneOptions,
    /// Run the AWS simulator from this image (`make image`) instead of the venv.
    pub simulator_image: Option<String>,
}

impl Env {
    /// Starts both halves under a fresh scratch directory and installs Silo's CRDs.
    pub async fn start() -> Result<Self> {
        Self::start_with(&EnvOptions::default()).await
    }

    /// [`Env::start`], configured by `options`.
    pub async fn start_with(options: &EnvOptions) -> Result<Self> {
        install_crypto_provider();
        let run = cache_dir().join("run");
        free_dead_envs(&run);
        let dir = run.join(format!("env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let kube_dir = dir.join("kube");
        let aws = async {
            match &options.simulator_image {
                Some(image) => AwsSim::start_image(&dir, image).await,
                None => AwsSim::start(&dir).await,
            }
        };
        let (kube, aws) = tokio::try_join!(ControlPlane::start_with(&kube_dir, &options.control_plane), aws)?;
        let env = Self { dir, aws, kube };
        let client = env.client().await?;
        install_crds(&client).await?;
        create_namespace(&client, CONTROLLER_NAMESPACE).await?;
        create_namespace(&client, EXTERNAL_ID_NAMESPACE).await?;
        env.sim().reset().await?;
        Ok(env)
    }

    pub async fn client(&self) -> Result<Client> {
        control_plane::client_from(&self.kube.kubeconfig).await
    }

    pub fn sim(&self) -> SimClient {
        SimClient::new(&self.aws.endpoint)
    }

    pub fn info(&self) -> EnvInfo {
        EnvInfo {
            kubeconfig: self.kube.kubeconfig.clone(),
            kube_version: self.kube.version.clone(),
            aws_endpoint: self.aws.endpoint.clone(),
            dir: self.dir.clone(),
            server: self.kube.server.clone(),
            ca_pem: self.kube.ca_pem.clone(),
            audit_log: self.kube.audit_log.clone(),
        }
    }
}

/// Picks rustls's crypto provider for the process: the test crates link both aws-lc-rs (kube,
/// the AWS SDK) and ring (reqwest, rcgen), and rustls refuses to guess between them.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Applies every CRD in `crds/` (what users install) and waits until each is established.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let text = std::fs::read_to_string(repo_dir().join("crds/silo.dev.yaml"))?;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc)?;
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("silo-testenv").force(), &Patch::Apply(&crd))
            .await
            .with_context(|| format!("install CRD {name}"))?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} was not established within 30 s"))??;
    }
    Ok(())
}

/// The namespace the controller runs in (as in `manifests/base`), for its closure ledger.
pub const CONTROLLER_NAMESPACE: &str = "silo-system";
/// The leader Lease `silo run` takes by default (`--lease-name`).
pub const LEASE_NAME: &str = "silo-controller";
/// The namespace of Baselines' external-id Secrets (as in `manifests/base`).
pub const EXTERNAL_ID_NAMESPACE: &str = "silo-external-ids";

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    api.patch(name, &PatchParams::apply("silo-testenv").force(), &Patch::Apply(&ns)).await?;
    Ok(())
}

/// Addresses of a running environment; plain data, usable from any tokio runtime.
#[derive(Clone, Debug)]
pub struct EnvInfo {
    pub kubeconfig: PathBuf,
    pub kube_version: String,
    pub aws_endpoint: String,
    pub dir: PathBuf,
    /// The API server's URL and serving certificate.
    pub server: String,
    pub ca_pem: String,
    /// The API server's audit log, when the environment was started with one.
    pub audit_log: Option<PathBuf>,
}

/// A small Baseline template for the suites: an SNS topic named after the tenant, and
/// outputs that echo its parameters.
pub const BASELINE_TEMPLATE: &str = r#"
Parameters:
  TenantName: {Type: String}
  AccountId: {Type: String}
  Env: {Type: String, Default: dev}
Resources:
  Events:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub "${TenantName}-events"
Outputs:
  TopicArn:
    Value: !Ref Events
  Env:
    Value: !Ref Env
  Account:
    Value: !Ref AccountId
"#;

/// The environment of this test binary, started on first use on a thread of its own that
/// keeps it alive until the process exits. Panics with the reason if it cannot start.
pub fn shared() -> &'static EnvInfo {
    shared_with(&EnvOptions::default())
}

/// [`shared`], started with `options`. One test binary has one environment: asking for it
/// with other options than it was started with panics.
pub fn shared_with(options: &EnvOptions) -> &'static EnvInfo {
    static SHARED: OnceLock<(EnvOptions, Result<EnvInfo, String>)> = OnceLock::new();
    let (started_with, started) = SHARED.get_or_init(|| {
        let started_with = options.clone();
        let options = options.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("testenv".into())
            .spawn(move || {
                let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
                runtime.block_on(async move {
                    let started = Instant::now();
                    match Env::start_with(&options).await {
                        Ok(env) => {
                            eprintln!(
                                "testenv: kube-apiserver {} at {} and the AWS simulator at {} ready in {:.1} s (logs in {})",
                                env.kube.version,
                                env.kube.server,
                                env.aws.endpoint,
                                started.elapsed().as_secs_f64(),
                                env.dir.display()
                            );
                            let _ = tx.send(Ok(env.info()));
                            std::future::pending::<()>().await;
                        }
                        Err(err) => {
                            let _ = tx.send(Err(format!("{err:#}")));
                        }
                    }
                });
            })
            .expect("spawn the testenv thread");
        (started_with, rx.recv().unwrap_or_else(|_| Err("the testenv thread died".into())))
    });
    assert_eq!(started_with, options, "this test binary's environment was started with other options");
    match started {
        Ok(info) => info,
        Err(err) => panic!("the test environment could not start: {err}"),
    }
}

/// One end-to-end test's hold on the shared environment: exclusive, with the simulator reset
/// and no Tenants left from earlier tests. Controllers it started stop when it is dropped.
///
/// Every wait of a test case ([`TestCase::eventually`], [`TestCase::consistently`],
/// [`TestCase::wait_for`] and the other `wait_*`) fails, naming the cause, once a controller
/// it started (in process, or a `silo run` process it spawned and the test did not kill) has
/// ended; so does the end of the test, when the test case is dropped.
pub struct TestCase {
    pub client: Client,
    pub sim: SimClient,
    pub info: &'static EnvInfo,
    watchdog: checks::Watchdog,
    _exclusive: tokio::sync::MutexGuard<'static, ()>,
}

/// Takes the shared environment for one test.
pub async fn test_case() -> TestCase {
    test_case_with(&EnvOptions::default()).await
}

/// [`test_case`] in an environment started with `options` (see [`shared_with`]).
pub async fn test_case_with(options: &EnvOptions) -> TestCase {
    static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let exclusive = EXCLUSIVE.lock().await;
    install_crypto_provider();
    let info = shared_with(options);
    log_to(&info.dir.join("controller.log"));
    let client = control_plane::client_from(&info.kubeconfig).await.expect("client for the test API server");
    let sim = SimClient::new(&info.aws_endpoint);
    remove_all_tenants(&client).await.expect("remove Tenants left by an earlier test");
    remove_all_baselines(&client).await.expect("remove Baselines left by an earlier test");
    Api::<silo::api::AccountPool>::all(client.clone())
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await
        .expect("remove AccountPools left by an earlier test");
    Api::<silo::api::Organization>::all(client.clone())
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await
        .expect("remove Organizations left by an earlier test");
    // The closure ledgers and the Leases (every organization's and replica's): each test's
    // controllers create them, as a first install would.
    let ledgers = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    for (kind, deleted) in [
        ("ConfigMaps", ledgers.delete_collection(&DeleteParams::default(), &Default::default()).await.map(|_| ())),
        ("Leases", leases.delete_collection(&DeleteParams::default(), &Default::default()).await.map(|_| ())),
    ] {
        deleted
            .unwrap_or_else(|err| panic!("remove the {kind} left by an earlier test in {CONTROLLER_NAMESPACE}: {err}"));
    }
    sim.reset().await.expect("reset the AWS simulator");
    TestCase { client, sim, info, watchdog: checks::Watchdog::default(), _exclusive: exclusive }
}

impl TestCase {
    /// The configuration of an in-process controller, as `silo run` would default it.
    pub fn config() -> Config {
        Config {
            email_template: "aws+{tenant}@example.com".into(),
            create_missing_ous: false,
            tenant_ou_roots: vec![],
            resync_period: Duration::from_secs(3600),
            index_refresh_period: Duration::from_secs(3600),
            creation_slots: 5,
            account_limit: None,
            pool_account_headroom: 10,
            concurrency: 8,
            allow_account_closure: false,
            max_account_closures_per_day: 10,
            max_stalled_retry: None,
            role_patience: Duration::from_secs(15 * 60),
            namespace: CONTROLLER_NAMESPACE.into(),
            external_id_namespace: EXTERNAL_ID_NAMESPACE.into(),
            default_contacts: Default::default(),
            organization: None,
        }
    }

    /// How an in-process controller reaches AWS: Silo's defaults.
    pub fn aws_config() -> AwsConfig {
        AwsConfig::defaults()
    }

    /// Runs the Tenant controller in this process against the environment.
    pub fn start_controller(&mut self, settings: Config) {
        self.start_controller_with_aws(settings, Self::aws_config());
    }

    /// [`TestCase::start_controller`], reaching AWS as `aws` says (its budgets, say).
    pub fn start_controller_with_aws(&mut self, settings: Config, aws: AwsConfig) {
        let client = self.client.clone();
        self.run_controller(client, settings, aws);
    }

    fn run_controller(&mut self, client: Client, settings: Config, aws: AwsConfig) {
        let source = silo::run::AwsSource { base: self.sim.sdk_config() };
        self.watchdog.spawn("controller", async move {
            if let Err(err) = silo::run::controllers(client, source, aws, settings, None, std::future::pending()).await
            {
                panic!("controller failed: {err:#}");
            }
        });
    }

    /// Fails, naming the cause, if a controller this test case started has ended: an
    /// in-process one (its panic message), or a `silo run` process that exited without the
    /// test killing it (the end of its log).
    pub fn check_controllers(&self) -> Result<()> {
        self.watchdog.check()
    }

    /// [`checks::eventually`], failing as soon as a controller of this test case has ended.
    pub async fn eventually<V, Fut>(&self, timeout: Duration, probe: impl FnMut() -> Fut) -> Result<V::Value>
    where
        V: checks::Verdict,
        Fut: Future<Output = V>,
    {
        checks::eventually(timeout, || self.check_controllers(), probe).await
    }

    /// [`checks::eventually_every`], failing as soon as a controller of this test case has ended.
    pub async fn eventually_every<V, Fut>(
        &self,
        timeout: Duration,
        every: Duration,
        probe: impl FnMut() -> Fut,
    ) -> Result<V::Value>
    where
        V: checks::Verdict,
        Fut: Future<Output = V>,
    {
        checks::eventually_every(timeout, every, || self.check_controllers(), probe).await
    }

    /// [`checks::consistently`], failing as soon as a controller of this test case has ended.
    pub async fn consistently<V, Fut>(&self, duration: Duration, probe: impl FnMut() -> Fut) -> Result<()>
    where
        V: checks::Verdict,
        Fut: Future<Output = V>,
    {
        checks::consistently(duration, || self.check_controllers(), probe).await
    }

    /// Runs the Tenant controller in this process as the `silo` ServiceAccount of
    /// [`RBAC_MANIFEST`], with a token the API server issued for it: only what that RBAC
    /// grants is allowed.
    pub async fn start_controller_as_service_account(&mut self, settings: Config) -> Result<()> {
        let client = self.service_account_client().await?;
        self.run_controller(client, settings, Self::aws_config());
        Ok(())
    }

    /// A client acting as the `silo` ServiceAccount of [`RBAC_MANIFEST`] (applied first),
    /// with a token the API server issued for it: only what that RBAC grants is allowed.
    pub async fn service_account_client(&self) -> Result<Client> {
        let token = self.service_account_token().await?;
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.info.kubeconfig)?;
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        config.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
        Ok(Client::try_from(config)?)
    }

    /// Applies [`RBAC_MANIFEST`] and returns a token the API server issued for its `silo`
    /// ServiceAccount (a TokenRequest, valid for an hour), as a kubelet would mount it.
    pub async fn service_account_token(&self) -> Result<String> {
        apply_manifest(&self.client, &repo_dir().join(RBAC_MANIFEST)).await?;
        let accounts =
            Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(self.client.clone(), CONTROLLER_NAMESPACE);
        let request =
            serde_json::from_value(serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))?;
        let token = accounts.create_token_request("silo", &Default::default(), &request).await?;
        token.status.and_then(|s| s.token).filter(|t| !t.is_empty()).context("the TokenRequest returned no token")
    }

    /// Starts `silo run` as a separate process against the environment, with extra flags.
    /// The binary is the one built next to this test binary (`cargo build -p silo`). It is
    /// expected to keep running until the test kills or drops it: every wait of this test
    /// case fails once it exits by itself.
    /// How many accounts the simulator has made so far.
    pub async fn accounts_created(&self) -> u64 {
        self.sim.stats().await.unwrap()["accounts_created"].as_u64().unwrap_or(0)
    }

    /// For the kill-after-CreateAccount tests: waits, looking every 20 ms for at most 30 s,
    /// until the simulator has made an account beyond `before` while `controller` runs (its
    /// answer is still held back, so the controller cannot have recorded the request id).
    /// True when it did; false when nothing was left to create in that time. Panics when the
    /// controller died.
    pub async fn an_account_beyond(&self, before: u64, controller: &process::Process) -> bool {
        let created = checks::eventually_every(
            Duration::from_secs(30),
            Duration::from_millis(20),
            || controller.check_running(),
            || async { self.accounts_created().await > before },
        )
        .await;
        controller.check_running().unwrap();
        created.is_ok()
    }

    pub fn spawn_controller(&self, args: &[&str], log_name: &str) -> Result<process::Process> {
        self.spawn_controller_with(args, log_name, Spawn::default())
    }

    /// A copy of the environment's kubeconfig that reaches the API server through `address`
    /// (a [`proxy::Proxy`], say).
    pub fn kubeconfig_via(&self, address: std::net::SocketAddr, name: &str) -> Result<PathBuf> {
        let text = std::fs::read_to_string(&self.info.kubeconfig)?;
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .context("the kubeconfig names no server")?
            .to_string();
        let path = self.info.dir.join(name);
        std::fs::write(&path, text.replace(&server, &format!("https://{address}")))?;
        Ok(path)
    }

    /// [`TestCase::spawn_controller`], with another kubeconfig or AWS access key.
    pub fn spawn_controller_with(&self, args: &[&str], log_name: &str, spawn: Spawn<'_>) -> Result<process::Process> {
        let bin = silo_binary()?;
        let mut command = std::process::Command::new(bin);
        command.arg("run").args(args);
        if !args.contains(&"--metrics-address") {
            command.args(["--metrics-address", "127.0.0.1:0"]);
        }
        if !args.contains(&"--lease-seconds") {
            // A killed leader's Lease must expire before a new process may act: keep it short.
            command.args(["--lease-seconds", "3"]);
        }
        command
            .env("KUBECONFIG", spawn.kubeconfig.unwrap_or(&self.info.kubeconfig))
            .env("POD_NAMESPACE", CONTROLLER_NAMESPACE)
            .env("RUST_LOG", "info,silo=debug")
            .envs(self.sim.env());
        if let Some(key) = spawn.access_key {
            command.env("AWS_ACCESS_KEY_ID", key);
        }
        if let Some(identity) = spawn.identity {
            command.env("POD_NAME", identity);
        }
        let process = process::Process::start("silo run", command, &self.info.dir.join(log_name))?;
        self.watchdog.watch(&process);
        Ok(process)
    }

    pub fn tenants(&self) -> Api<Tenant> {
        Api::all(self.client.clone())
    }

    /// Creates or updates a Tenant described by a [`TenantFixture`].
    pub async fn create(&self, fixture: &TenantFixture) -> Result<Tenant, kube::Error> {
        let tenant = fixture.tenant();
        self.tenants()
            .patch(&tenant.name_any(), &PatchParams::apply("silo-tests").force(), &Patch::Apply(&tenant))
            .await
    }

    /// Waits until every listed Tenant has the condition with the given status.
    /// Each look lists every Tenant, so it looks every 500 ms rather than every 250 ms.
    pub async fn wait_for_all(&self, names: &[String], condition: &str, status: &str, timeout: Duration) -> Result<()> {
        self.eventually_every(timeout, Duration::from_millis(500), || async {
            let tenants = self.tenants().list(&Default::default()).await?.items;
            let missing: Vec<&String> = names
                .iter()
                .filter(|name| {
                    !tenants.iter().any(|t| {
                        &t.name_any() == *name
                            && t.status.as_ref().is_some_and(|s| {
                                silo::conditions::find(&s.conditions, condition).is_some_and(|c| c.status == status)
                            })
                    })
                })
                .collect();
            if !missing.is_empty() {
                bail!("{} Tenants are not {condition}={status}: {missing:?}", missing.len());
            }
            Ok(())
        })
        .await
    }

    /// Creates or updates a Tenant from YAML with server-side apply.
    pub async fn apply(&self, yaml: &str) -> Result<Tenant, kube::Error> {
        let tenant: Tenant = serde_yaml::from_str(yaml).expect("test Tenant YAML parses");
        self.tenants()
            .patch(&tenant.name_any(), &PatchParams::apply("silo-tests").force(), &Patch::Apply(&tenant))
            .await
    }

    /// Waits until the Tenant's condition has the given status, and returns the Tenant.
    pub async fn wait_for(&self, name: &str, condition: &str, status: &str, timeout: Duration) -> Result<Tenant> {
        self.wait_for_condition(name, condition, &format!("status {status}"), timeout, |c| c.status == status).await
    }

    /// Waits until the Tenant's condition has the given reason, and returns the Tenant.
    pub async fn wait_for_reason(
        &self,
        name: &str,
        condition: &str,
        reason: &str,
        timeout: Duration,
    ) -> Result<Tenant> {
        self.wait_for_condition(name, condition, &format!("reason {reason}"), timeout, |c| c.reason == reason).await
    }

    /// Waits on a watch of the Tenant (every status the API server stores is seen, with no
    /// polling delay) until `check` holds for its condition. Fails with the Tenant's last
    /// status when `timeout` passes, and at once when a controller of this test case ended.
    async fn wait_for_condition(
        &self,
        name: &str,
        condition: &str,
        wanted: &str,
        timeout: Duration,
        check: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool,
    ) -> Result<Tenant> {
        let holds = |tenant: Option<&Tenant>| {
            tenant
                .and_then(|t| t.status.as_ref())
                .and_then(|s| silo::conditions::find(&s.conditions, condition))
                .is_some_and(&check)
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut watch = Box::pin(kube::runtime::wait::await_condition(self.tenants(), name, &holds));
        loop {
            tokio::select! {
                found = &mut watch => match found {
                    Ok(Some(tenant)) => return Ok(tenant),
                    Ok(None) => bail!("Tenant {name} was deleted while waiting for {condition} with {wanted}"),
                    // A watch that broke (the API server restarted, say) is started again.
                    Err(_) => watch = Box::pin(kube::runtime::wait::await_condition(self.tenants(), name, &holds)),
                },
                () = tokio::time::sleep(checks::POLL) => {
                    self.check_controllers()?;
                    if tokio::time::Instant::now() >= deadline {
                        let status = self.tenants().get_opt(name).await?.and_then(|t| t.status);
                        bail!(
                            "Tenant {name}: {condition} has no {wanted} within {timeout:?}; status: {}",
                            serde_json::to_string_pretty(&status).unwrap_or_default()
                        );
                    }
                }
            }
        }
    }

    /// Waits until the Tenant is gone.
    pub async fn wait_deleted(&self, name: &str, timeout: Duration) -> Result<()> {
        self.eventually(timeout, || async {
            if self.tenants().get_opt(name).await?.is_some() {
                bail!("Tenant {name} still exists");
            }
            Ok(())
        })
        .await
    }

    /// Starts watching the listed Tenants for Stalled=True (see [`StalledWatch`]); returns
    /// once the watch is established, so every later change is seen.
    /// Raises the organization's account quota (AWS's default, and the simulator's, is 10
    /// accounts, the management account included) to `accounts`, as an organization's owner
    /// does through Service Quotas before onboarding a fleet.
    pub async fn raise_account_quota(&self, accounts: u32) {
        self.sim.configure(serde_json::json!({"account_limit": accounts})).await.expect("raise the account quota");
    }

    pub async fn watch_stalled(&self, names: &[impl AsRef<str>]) -> Result<StalledWatch> {
        StalledWatch::start(self.tenants(), names).await
    }
}

impl Drop for TestCase {
    /// Stops the in-process controllers; a test that otherwise passed fails here if one of
    /// its controllers ended before the end of the test.
    fn drop(&mut self) {
        let ended = self.watchdog.check();
        self.watchdog.abort_all();
        if let Err(err) = ended
            && !std::thread::panicking()
        {
            panic!("at the end of the test: {err:#}");
        }
    }
}

/// Every time a watched Tenant turned Stalled=True, seen on a watch of the Tenants: each
/// status the API server stored is delivered, so a Stalled that lasted one write is seen too
/// (polling every few hundred milliseconds misses it).
pub struct StalledWatch {
    api: Api<Tenant>,
    names: Vec<String>,
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`StalledWatch`] has seen so far.
#[derive(Default)]
struct Seen {
    /// Each transition to Stalled=True (and each watch error, which could hide one).
    transitions: Vec<String>,
    /// The resourceVersion of the last change seen, per Tenant.
    latest: std::collections::BTreeMap<String, String>,
}

impl StalledWatch {
    async fn start(api: Api<Tenant>, names: &[impl AsRef<str>]) -> Result<Self> {
        use futures::StreamExt as _;
        use kube::runtime::{WatchStreamExt as _, watcher};
        let names: Vec<String> = names.iter().map(|n| n.as_ref().to_string()).collect();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
        let (ready, established) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready);
        let (record, watched) = (seen.clone(), names.clone());
        let mut stream = watcher(api.clone(), watcher::Config::default()).default_backoff().boxed();
        let task = tokio::spawn(async move {
            let mut stalled_now = std::collections::BTreeSet::new();
            while let Some(event) = stream.next().await {
                let tenant = match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t)) => t,
                    Ok(_) => continue,
                    Err(err) => {
                        let mut seen = record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        seen.transitions.push(format!("watch error (a transition may be missed): {err}"));
                        continue;
                    }
                };
                let name = tenant.name_any();
                if !watched.contains(&name) {
                    continue;
                }
                let stalled = tenant
                    .status
                    .as_ref()
                    .and_then(|s| silo::conditions::find(&s.conditions, silo::conditions::STALLED))
                    .filter(|c| c.status == "True");
                let version = tenant.resource_version().unwrap_or_default();
                let mut seen = record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match stalled {
                    Some(c) if stalled_now.insert(name.clone()) => {
                        seen.transitions
                            .push(format!("{name} Stalled ({}): {} at resourceVersion {version}", c.reason, c.message));
                    }
                    Some(_) => {}
                    None => {
                        stalled_now.remove(&name);
                    }
                }
                seen.latest.insert(name, version);
            }
        });
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .context("the watch of Tenants was not established within 30 s")?
            .context("the watch of Tenants ended before it was established")?;
        Ok(Self { api, names, seen, task })
    }

    /// The transitions to Stalled=True seen up to now (and watch errors, which could hide
    /// one). Waits first until the watch has delivered each watched Tenant's current version,
    /// so a Stalled written just before the caller's last look is not still on its way.
    pub async fn transitions(&self) -> Result<Vec<String>> {
        checks::eventually(
            Duration::from_secs(30),
            || {
                anyhow::ensure!(!self.task.is_finished(), "the watch of Tenants ended");
                Ok(())
            },
            || async {
                for name in &self.names {
                    let Some(tenant) = self.api.get_opt(name).await? else { continue };
                    let current = tenant.resource_version().unwrap_or_default();
                    let seen = self.lock().latest.get(name).cloned();
                    anyhow::ensure!(
                        seen.as_deref() == Some(current.as_str()),
                        "the watch has {name} at {seen:?}, the API server at {current}"
                    );
                }
                Ok(())
            },
        )
        .await
        .context("the watch of Tenants did not catch up")?;
        Ok(self.lock().transitions.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for StalledWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a spawned controller differs from the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spawn<'a> {
    pub kubeconfig: Option<&'a Path>,
    /// The AWS access key it signs with (the simulator counts requests per key).
    pub access_key: Option<&'a str>,
    /// Its identity in leader election (POD_NAME).
    pub identity: Option<&'a str>,
}

/// A Tenant for a test, built to read like a sentence:
/// `TenantFixture::named("a").in_ou("/Tenants").close()`.
#[derive(Clone, Debug)]
pub struct TenantFixture {
    name: String,
    spec: serde_json::Map<String, serde_json::Value>,
}

impl TenantFixture {
    pub fn named(name: &str) -> Self {
        Self { name: name.into(), spec: serde_json::Map::new() }
    }

    fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.spec.insert(key.into(), value);
        self
    }

    pub fn in_ou(self, ou: &str) -> Self {
        self.with("organizationalUnit", ou.into())
    }

    pub fn email(self, email: &str) -> Self {
        self.with("email", email.into())
    }

    pub fn adopting(self, account_id: &str) -> Self {
        self.with("accountId", account_id.into())
    }

    pub fn close(self) -> Self {
        self.with("deletionPolicy", "Close".into())
    }

    pub fn paused(self) -> Self {
        self.with("paused", true.into())
    }

    pub fn tag(mut self, key: &str, value: &str) -> Self {
        let tags = self.spec.entry("tags").or_insert_with(|| serde_json::json!({}));
        tags[key] = value.into();
        self
    }

    pub fn baseline(self, name: &str) -> Self {
        self.with("baseline", serde_json::json!({"name": name}))
    }

    pub fn from_pool(self, pool: &str) -> Self {
        self.with("pool", pool.into())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tenant(&self) -> Tenant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "silo.dev/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": self.name},
            "spec": self.spec,
        }))
        .expect("a fixture is a valid Tenant")
    }
}

/// All Silo may do in a cluster: its ServiceAccount, roles and bindings.
pub const RBAC_MANIFEST: &str = "manifests/base/rbac.yaml";

/// Applies the RBAC objects of a manifest file (ServiceAccount, ClusterRole, Role and their
/// bindings) with server-side apply.
pub async fn apply_manifest(client: &Client, path: &Path) -> Result<()> {
    use k8s_openapi::api::{
        core::v1::ServiceAccount,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let params = PatchParams::apply("silo-testenv").force();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        let name = value["metadata"]["name"].as_str().context("manifest object without a name")?.to_string();
        let ns = value["metadata"]["namespace"].as_str().unwrap_or(CONTROLLER_NAMESPACE).to_string();
        let patch = Patch::Apply(&value);
        match value["kind"].as_str() {
            Some("ServiceAccount") => {
                drop(Api::<ServiceAccount>::namespaced(client.clone(), &ns).patch(&name, &params, &patch).await?)
            }
            Some("ClusterRole") => drop(Api::<ClusterRole>::all(client.clone()).patch(&name, &params, &patch).await?),
            Some("ClusterRoleBinding") => {
                drop(Api::<ClusterRoleBinding>::all(client.clone()).patch(&name, &params, &patch).await?)
            }
            Some("Role") => drop(Api::<Role>::namespaced(client.clone(), &ns).patch(&name, &params, &patch).await?),
            Some("RoleBinding") => {
                drop(Api::<RoleBinding>::namespaced(client.clone(), &ns).patch(&name, &params, &patch).await?)
            }
            other => bail!("{}: cannot apply kind {other:?}", path.display()),
        }
    }
    Ok(())
}

/// The value of a sample in a Prometheus text exposition (`name` with its labels, as
/// printed, e.g. `silo_index_complete` or `silo_tenants{phase="Ready"}`).
pub fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Reads `/metrics` of a controller serving on `address`.
pub async fn scrape(address: &str) -> Result<String> {
    Ok(reqwest::get(format!("http://{address}/metrics")).await?.error_for_status()?.text().await?)
}

/// The `silo` binary of the same build as the running test binary (target/debug/silo).
pub fn silo_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).context("test binary has no target dir")?;
    let bin = dir.join("silo");
    if !bin.exists() {
        bail!("{} is missing: build it first (`cargo build -p silo`, or `make e2e`)", bin.display());
    }
    Ok(bin)
}

/// Sends the logs of in-process controllers to a file of the environment (once per process).
fn log_to(path: &Path) {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        if let Ok(file) = std::fs::File::options().create(true).append(true).open(path) {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("info,silo=debug"))
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .try_init();
        }
    });
}

/// Deletes every Baseline and its revisions (no garbage collector runs here).
async fn remove_all_baselines(client: &Client) -> Result<()> {
    let baselines = Api::<silo::Baseline>::all(client.clone());
    baselines.delete_collection(&DeleteParams::default(), &Default::default()).await?;
    let revisions =
        Api::<k8s_openapi::api::apps::v1::ControllerRevision>::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    revisions.delete_collection(&DeleteParams::default(), &Default::default()).await?;
    Ok(())
}

/// Deletes every Tenant, removing finalizers first so nothing waits on a stopped controller.
async fn remove_all_tenants(client: &Client) -> Result<()> {
    let api = Api::<Tenant>::all(client.clone());
    for tenant in api.list(&Default::default()).await? {
        let name = tenant.name_any();
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let _ = api.delete(&name, &DeleteParams::default()).await;
    }
    checks::eventually(
        Duration::from_secs(30),
        || Ok(()),
        || async {
            let left = api.list(&Default::default()).await?.items;
            anyhow::ensure!(
                left.is_empty(),
                "Tenants not deleted yet: {:?}",
                left.iter().map(|t| t.name_any()).collect::<Vec<_>>()
            );
            Ok(())
        },
    )
    .await
}
