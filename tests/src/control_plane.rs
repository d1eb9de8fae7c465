//! A real Kubernetes control plane: etcd (from the `etcd-bin-vendored` crate) and
//! kube-apiserver (built from the pinned `k8s.io/kubernetes` module by `tests/kube/build.sh`),
//! on loopback with random ports — the same pair envtest gives Go operators.
//!
//! The API server runs with token authentication, RBAC authorization, serving certificates
//! generated into `--cert-dir`, and service-account keys generated at start.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use kube::{Client, Config, config::Kubeconfig};

use crate::process::{Process, free_port, wait_until};

/// Where the built kube-apiserver and kubectl are, set by the Makefile; the default is the
/// cache directory `tests/kube/build.sh` fills.
pub fn kube_bin_dir() -> PathBuf {
    match std::env::var_os("SILO_KUBE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => crate::cache_dir().join("bin"),
    }
}

/// How to start a control plane; the default is what every suite but the install suite uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlPlaneOptions {
    /// Write an audit log (`audit.log` beside the kubeconfig, JSON lines, every request at
    /// the Metadata level): who did what, and what the API server answered.
    pub audit_log: bool,
}

/// A running etcd plus kube-apiserver.
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub server: String,
    pub version: String,
    /// The audit log, when [`ControlPlaneOptions::audit_log`] asked for one.
    pub audit_log: Option<PathBuf>,
    /// The API server's serving certificate (what in-cluster clients mount as `ca.crt`).
    pub ca_pem: String,
    // Dropped in reverse order: the API server before etcd.
    _apiserver: Process,
    _etcd: Process,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver under `dir`, and waits until the API server is ready.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, &ControlPlaneOptions::default()).await
    }

    /// [`ControlPlane::start`], configured by `options`.
    pub async fn start_with(dir: &Path, options: &ControlPlaneOptions) -> Result<Self> {
        let apiserver_bin = kube_bin_dir().join("kube-apiserver");
        if !apiserver_bin.exists() {
            bail!("{} is missing: run `make tools` (tests/kube/build.sh) to build it", apiserver_bin.display());
        }
        std::fs::create_dir_all(dir)?;
        let (mut etcd, etcd_url) = start_etcd(dir)?;
        etcd_wait(&mut etcd, &etcd_url).await?;

        let port = free_port()?;
        let token = random_token();
        std::fs::write(dir.join("tokens.csv"), format!("{token},silo-admin,silo-admin,system:masters\n"))?;
        let key = rcgen::KeyPair::generate().context("generate the service-account key")?;
        std::fs::write(dir.join("sa.key"), key.serialize_pem())?;
        std::fs::write(dir.join("sa.pub"), key.public_key_pem())?;
        let certs = dir.join("certs");

        let mut command = Command::new(&apiserver_bin);
        command
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            // A loopback address cannot back the kubernetes Service endpoints; nothing here needs them.
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", certs.display()))
            .arg(format!("--token-auth-file={}", dir.join("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", dir.join("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", dir.join("sa.key").display()))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--enable-priority-and-fairness=false")
            .arg("--profiling=false");
        let audit_log = if options.audit_log {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY)?;
            let log = dir.join("audit.log");
            command
                .arg(format!("--audit-policy-file={}", policy.display()))
                .arg(format!("--audit-log-path={}", log.display()))
                .arg("--audit-log-format=json")
                // Written as each request completes, so a test reads every event it caused.
                .arg("--audit-log-mode=blocking");
            Some(log)
        } else {
            None
        };
        let mut apiserver = Process::start("kube-apiserver", command, &dir.join("kube-apiserver.log"))?;

        let server = format!("https://127.0.0.1:{port}");
        let ca = wait_for_certificate(&certs.join("apiserver.crt"), &mut apiserver).await?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&server, &ca, &token))?;
        let client = client_from(&kubeconfig).await?;
        let version = wait_ready(&client, &mut apiserver).await?;
        Ok(Self { kubeconfig, server, version, audit_log, ca_pem: ca, _apiserver: apiserver, _etcd: etcd })
    }
}

/// Every request at the Metadata level (user, verb, resource, answer; no bodies), without
/// the RequestReceived stage (each request is logged once it is answered; a watch also when
/// its answer starts).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
";

/// A client for the kubeconfig the control plane wrote.
pub async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Starts etcd; returns it with its client URL.
fn start_etcd(dir: &Path) -> Result<(Process, String)> {
    let bin = etcd_bin_vendored::etcd_bin_path().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (client, peer) = (free_port()?, free_port()?);
    let mut command = Command::new(bin);
    command
        .arg("--name=silo-test")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=silo-test=http://127.0.0.1:{peer}"))
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    Ok((Process::start("etcd", command, &dir.join("etcd.log"))?, format!("http://127.0.0.1:{client}")))
}

/// Waits until etcd answers its /health endpoint.
async fn etcd_wait(etcd: &mut Process, url: &str) -> Result<()> {
    wait_until(etcd, "etcd did not become healthy", Duration::from_secs(60), || async {
        reqwest::get(format!("{url}/health")).await.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await
}

/// Waits until the API server has written its serving certificate, and returns it.
async fn wait_for_certificate(path: &Path, apiserver: &mut Process) -> Result<String> {
    wait_until(apiserver, "kube-apiserver wrote no serving certificate", Duration::from_secs(60), || async {
        std::fs::read_to_string(path).ok().filter(|text| text.contains("END CERTIFICATE"))
    })
    .await
}

/// Waits until `/readyz` answers ok, and returns the server's version.
async fn wait_ready(client: &Client, apiserver: &mut Process) -> Result<String> {
    wait_until(apiserver, "kube-apiserver was not ready", Duration::from_secs(120), || async {
        let request = http::Request::get("/readyz").body(Vec::new()).ok()?;
        let ready = client.request_text(request).await.ok()?;
        if ready.trim() != "ok" {
            return None;
        }
        client.apiserver_version().await.ok().map(|v| v.git_version)
    })
    .await
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: silo-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: silo-admin
  user:
    token: {token}
contexts:
- name: silo-test
  context:
    cluster: silo-test
    user: silo-admin
current-context: silo-test
"
    )
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
