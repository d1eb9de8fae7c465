//! The production install, as far as it can run here:
//!
//! - the controller image runs against the test environment as in-cluster, the way the
//!   Deployment runs it (its args, env, user, read-only root, no capabilities, the
//!   ServiceAccount's token and the API server's CA where in-cluster config looks), and the
//!   examples become Ready; the simulator is its image too;
//! - least privilege, judged from the API server's audit log: no forbidden answer for the
//!   ServiceAccount, and every rule of the RBAC manifest used or named in docs/install.md;
//! - what is in the controller image: the binary, the libraries it links, CA certificates;
//! - every kustomize overlay renders with kubectl's kustomize and passes a server-side dry run;
//! - the alerts pass `promtool test rules`; the dashboard queries only what `/metrics` has;
//! - first-run errors: one line each, saying what to run.
//!
//! This binary's environment has an audit log and runs the simulator from `silo-awssim:dev`:
//! `make image` first (make test does). Without podman (or docker), the images, promtool or
//! the prometheus-operator CRDs, the tests fail with what to run.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::{Value, json};
use silo::conditions;
use silo_testenv::{
    ControlPlane, ControlPlaneOptions, EnvInfo, EnvOptions, RBAC_MANIFEST, TestCase, cache_dir,
    container::{self, Container},
    control_plane::kube_bin_dir,
    process::{Process, free_port, tail},
    repo_dir, test_case_with,
};

const IMAGE: &str = "silo:dev";
const SIM_IMAGE: &str = "silo-awssim:dev";
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:silo-system:silo";
const READY_WITHIN: Duration = Duration::from_secs(180);

fn options() -> EnvOptions {
    EnvOptions { control_plane: ControlPlaneOptions { audit_log: true }, simulator_image: Some(SIM_IMAGE.into()) }
}

async fn case() -> TestCase {
    test_case_with(&options()).await
}

// --- helpers ------------------------------------------------------------------------------

fn kubectl(info: &EnvInfo) -> Command {
    let mut command = Command::new(kube_bin_dir().join("kubectl"));
    command.env("KUBECONFIG", &info.kubeconfig);
    command
}

fn run(mut command: Command, stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write as _;
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `kubectl kustomize DIR` (kubectl's built-in kustomize), as objects.
fn render(dir: &str) -> (String, Vec<Value>) {
    let mut command = Command::new(kube_bin_dir().join("kubectl"));
    command.arg("kustomize").arg(repo_dir().join(dir));
    let (ok, out, err) = run(command, None);
    assert!(ok, "kubectl kustomize {dir} failed:\n{err}");
    let objects = serde_yaml::Deserializer::from_str(&out)
        .map(|doc| serde_yaml::from_value::<Value>(serde::Deserialize::deserialize(doc).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    (out, objects)
}

fn find<'v>(objects: &'v [Value], kind: &str, name: &str) -> &'v Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn git_head() -> String {
    let out = Command::new("git").arg("-C").arg(repo_dir()).args(["rev-parse", "HEAD"]).output().expect("run git");
    assert!(out.status.success(), "git rev-parse HEAD failed in {}", repo_dir().display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The engine, with the image present and built from this commit: fails with what to run.
fn image_engine(image: &str) -> String {
    let engine = container::engine().unwrap();
    container::require_image(&engine, image).unwrap();
    let revision = container::image_label(&engine, image, "org.opencontainers.image.revision").unwrap();
    let head = git_head();
    assert_eq!(revision, head, "{image} was built from commit {revision:?}, not HEAD {head}: run `make image`");
    engine
}

/// The names of the Tenants in examples/.
fn example_tenants() -> Vec<String> {
    let mut names = vec![];
    for entry in std::fs::read_dir(repo_dir().join("examples")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let value: Value = serde_yaml::from_str(&text).unwrap();
        if value["kind"] == "Tenant" {
            names.push(value["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    names.sort();
    names
}

fn apply_examples(info: &EnvInfo) {
    let mut command = kubectl(info);
    command.args(["apply", "--server-side", "-f"]).arg(repo_dir().join("examples"));
    let (ok, out, err) = run(command, None);
    assert!(ok, "kubectl apply -f examples/ failed:\n{out}{err}");
}

async fn scrape(address: &str) -> String {
    reqwest::get(format!("http://{address}/metrics")).await.unwrap().error_for_status().unwrap().text().await.unwrap()
}

// --- the controller image, in-cluster -----------------------------------------------------

/// How the Deployment in manifests/base runs the container, as `podman run` arguments.
struct DeploymentRun {
    args: Vec<String>,
    env: Vec<(String, String)>,
    run_args: Vec<String>,
}

fn deployment_run(pod_name: &str) -> DeploymentRun {
    let (_, objects) = render("manifests/base");
    let deployment = find(&objects, "Deployment", "silo");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    let args = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    let mut env = vec![];
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_string();
        let value = match (&var["value"], var["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Value::String(value), _) => value.clone(),
            (_, Some("metadata.namespace")) => namespace.to_string(),
            (_, Some("metadata.name")) => pod_name.to_string(),
            // No Pod object exists here (no kubelet, and no garbage collector to delete the
            // presence Lease it would own): a UID of the right shape.
            (_, Some("metadata.uid")) => "5f0c6a3e-1d2b-4c8e-9f7a-0b1c2d3e4f50".to_string(),
            other => panic!("the test cannot provide env {name} from {other:?}: teach it"),
        };
        env.push((name, value));
    }
    let security = &pod["securityContext"];
    let user = security["runAsUser"].as_i64().expect("the Deployment sets runAsUser");
    let group = security["runAsGroup"].as_i64().unwrap_or(user);
    let mut run_args = vec![format!("--user={user}:{group}")];
    let container_security = &container["securityContext"];
    if container_security["readOnlyRootFilesystem"] == true {
        run_args.push("--read-only".into());
    }
    if container_security["allowPrivilegeEscalation"] == false {
        run_args.push("--security-opt=no-new-privileges".into());
    }
    for cap in container_security["capabilities"]["drop"].as_array().into_iter().flatten() {
        run_args.push(format!("--cap-drop={}", cap.as_str().unwrap()));
    }
    assert_eq!(container["image"], IMAGE, "the base Deployment runs what make image builds");
    DeploymentRun { args, env, run_args }
}

/// The image runs as the Deployment would, in-cluster, and the examples become Ready; then
/// the audit log shows it used only what its RBAC grants, and all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_image_runs_in_cluster_as_the_deployment_would() {
    let case = case().await;
    let engine = image_engine(IMAGE);
    let info = case.info;
    let audit_log = info.audit_log.clone().expect("this environment writes an audit log");

    // What a kubelet mounts: a token of the ServiceAccount, the cluster's CA, the namespace.
    let token = case.service_account_token().await.unwrap();
    let mount = info.dir.join("serviceaccount");
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::write(mount.join("token"), token).unwrap();
    std::fs::write(mount.join("ca.crt"), &info.ca_pem).unwrap();
    std::fs::write(mount.join("namespace"), silo_testenv::CONTROLLER_NAMESPACE).unwrap();
    for file in ["token", "ca.crt", "namespace"] {
        set_mode(&mount.join(file), 0o644);
    }
    set_mode(&mount, 0o755);

    let deployment = deployment_run("silo-install-test");
    let api_port = info.server.rsplit(':').next().unwrap().to_string();
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let mut run_args = deployment.run_args.clone();
    run_args.push(format!("--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro", mount.display()));
    let mut env = deployment.env.clone();
    env.extend(
        [
            // What the kubelet sets for every pod.
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()),
            ("KUBERNETES_SERVICE_PORT", api_port),
            // Stand-ins for what EKS gives: the simulator and its credentials instead of IRSA.
            ("AWS_ENDPOINT_URL", info.aws_endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            // Port 8080 of the host may be taken: the probes are checked on this one.
            ("SILO_METRICS_ADDRESS", metrics.clone()),
            // As in the kind overlay: the examples name OUs the fresh organization lacks.
            ("SILO_CREATE_MISSING_OUS", "true".into()),
            // So the closure ledger's RBAC runs too (a Close Tenant is deleted below).
            ("SILO_ALLOW_ACCOUNT_CLOSURE", "true".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    for (name, value) in &env {
        run_args.push(format!("--env={name}={value}"));
    }
    let name = format!("silo-testenv-{}-silo", std::process::id());
    let log = info.dir.join("silo-image.log");
    let mut silo = Container::run(&engine, &name, IMAGE, &run_args, &deployment.args, &log).unwrap();

    apply_examples(info);
    // Beyond the examples, so every rule of the RBAC runs: a Baseline whose role takes an
    // external id from a Secret of silo-system, and a Close Tenant that uses it and is deleted.
    let mut command = kubectl(info);
    command.args(["apply", "--server-side", "-f", "-"]);
    let (ok, out, err) = run(command, Some(AUDITED_BASELINE));
    assert!(ok, "{out}{err}");
    case.apply(
        "apiVersion: silo.dev/v1alpha1
kind: Tenant
metadata: {name: short-lived}
spec: {deletionPolicy: Close, baseline: {name: audited}}",
    )
    .await
    .unwrap();
    case.apply(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: shorter-lived}\nspec: {deletionPolicy: Close}",
    )
    .await
    .unwrap();
    let mut names = example_tenants();
    names.extend(["short-lived".into(), "shorter-lived".into()]);
    for name in &names {
        if let Err(err) = case.wait_for(name, conditions::READY, "True", READY_WITHIN).await {
            panic!("{err:#}\nlast lines of the image's log ({}):\n{}", log.display(), tail(&log, 40));
        }
    }
    // Two closures: the first creates the closure ledger, the second updates it.
    for name in ["short-lived", "shorter-lived"] {
        case.tenants().delete(name, &Default::default()).await.unwrap();
        case.wait_deleted(name, Duration::from_secs(90)).await.unwrap();
    }

    for probe in ["healthz", "readyz"] {
        let answer = reqwest::get(format!("http://{metrics}/{probe}")).await.unwrap();
        assert!(answer.status().is_success(), "/{probe} answered {}", answer.status());
    }
    let scraped = scrape(&metrics).await;
    std::fs::write(info.dir.join("image-metrics.txt"), &scraped).unwrap();
    assert!(scraped.contains("silo_reconciles_total{controller=\"tenant\",result=\"ok\"}"), "{scraped}");
    silo.process().check_running().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.lines().any(|l| l.starts_with('{') && l.contains("became the leader")), "JSON logs: {logged}");
    drop(silo);

    let events = audit_events(&audit_log, SERVICE_ACCOUNT_USER);
    assert!(events.len() > 20, "the audit log has {} requests of {SERVICE_ACCOUNT_USER}", events.len());
    let forbidden: Vec<String> = events.iter().filter(|e| e.code == 403).map(|e| e.to_string()).collect();
    assert!(forbidden.is_empty(), "forbidden answers for Silo's ServiceAccount:\n{}", forbidden.join("\n"));

    let rules = rbac_rules();
    let unused: Vec<&RbacUse> = rules.iter().filter(|rule| !events.iter().any(|e| rule.allows(e))).collect();
    let readme = std::fs::read_to_string(repo_dir().join("docs/install.md")).unwrap();
    let unexplained: Vec<String> =
        unused.iter().filter(|rule| !readme.contains(&rule.readme_line())).map(|r| r.readme_line()).collect();
    let used: Vec<String> =
        rules.iter().filter(|rule| events.iter().any(|e| rule.allows(e))).map(|r| r.readme_line()).collect();
    eprintln!("RBAC used in this run:\n{}", used.join("\n"));
    eprintln!(
        "RBAC not used in this run (explained in docs/install.md):\n{}",
        unused.iter().map(|r| r.readme_line()).collect::<Vec<_>>().join("\n")
    );
    assert!(
        unexplained.is_empty(),
        "these RBAC grants were not used in the run and docs/install.md does not say why (add a line starting \
         with the grant under \"RBAC rules the install test does not use\", or remove the grant):\n{}",
        unexplained.join("\n")
    );
}

const AUDITED_BASELINE: &str = "apiVersion: v1
kind: Secret
metadata: {name: silo-external-ids, namespace: silo-external-ids}
stringData: {audited: ext-5678}
---
apiVersion: silo.dev/v1alpha1
kind: Baseline
metadata: {name: audited}
spec:
  externalId: {name: silo-external-ids, key: audited}
  template: |
    Parameters: {TenantName: {Type: String}}
    Resources: {Topic: {Type: AWS::SNS::Topic, Properties: {TopicName: !Sub '${TenantName}-audit'}}}
";

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// One request of the audit log.
#[derive(Debug)]
struct AuditEvent {
    verb: String,
    group: String,
    resource: String,
    name: String,
    namespace: String,
    code: i64,
}

impl std::fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{} {}/{} -> {}", self.verb, self.group, self.resource, self.namespace, self.name, self.code)
    }
}

fn audit_events(log: &Path, user: &str) -> Vec<AuditEvent> {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("read {}: {e}", log.display()));
    let mut events = vec![];
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if event["user"]["username"] != user || event["objectRef"].is_null() {
            continue;
        }
        let object = &event["objectRef"];
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", object["resource"].as_str().unwrap_or_default()),
            None => object["resource"].as_str().unwrap_or_default().to_string(),
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        events.push(AuditEvent {
            verb: text(&event["verb"]),
            group: text(&object["apiGroup"]),
            resource,
            name: text(&object["name"]),
            namespace: text(&object["namespace"]),
            code: event["responseStatus"]["code"].as_i64().unwrap_or(0),
        });
    }
    events
}

/// One verb of one rule of the RBAC manifest.
#[derive(Debug)]
struct RbacUse {
    /// The Role's namespace; `None` for a ClusterRole.
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    names: Vec<String>,
    verb: String,
}

impl RbacUse {
    fn allows(&self, event: &AuditEvent) -> bool {
        (event.code / 100 == 2 || event.code == 404 || event.code == 409)
            && self.verb == event.verb
            && self.groups.contains(&event.group)
            && self.resources.contains(&event.resource)
            && (self.names.is_empty() || self.names.contains(&event.name))
            && self.namespace.as_ref().is_none_or(|ns| *ns == event.namespace)
    }

    /// How docs/install.md names this grant: "- `group/resource` `verb`" (core group: "core").
    fn readme_line(&self) -> String {
        let group = if self.groups == [""] { "core".to_string() } else { self.groups.join(",") };
        let names = if self.names.is_empty() { String::new() } else { format!(" ({})", self.names.join(",")) };
        format!("- `{group}/{}`{names} `{}`", self.resources.join(","), self.verb)
    }
}

fn rbac_rules() -> Vec<RbacUse> {
    let text = std::fs::read_to_string(repo_dir().join(RBAC_MANIFEST)).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    let mut uses = vec![];
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc).unwrap();
        let namespace = match value["kind"].as_str() {
            Some("ClusterRole") => None,
            Some("Role") => Some(value["metadata"]["namespace"].as_str().unwrap().to_string()),
            _ => continue,
        };
        for rule in value["rules"].as_array().unwrap() {
            for verb in strings(&rule["verbs"]) {
                uses.push(RbacUse {
                    namespace: namespace.clone(),
                    groups: strings(&rule["apiGroups"]),
                    resources: strings(&rule["resources"]),
                    names: strings(&rule["resourceNames"]),
                    verb,
                });
            }
        }
    }
    uses
}

/// The controller image holds the binary, exactly the libraries it links, Debian's CA
/// certificates (none of the build machine's own) and the user it runs as; `--version`
/// names the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_image_holds_only_silo_its_libraries_and_ca_certificates() {
    let engine = image_engine(IMAGE);
    let user =
        Command::new(&engine).args(["image", "inspect", "--format", "{{.Config.User}}", IMAGE]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");

    let version = Command::new(&engine)
        .arg("run")
        .args(container::runtime_args(&engine))
        .args(["--rm", "--read-only", IMAGE, "--version"])
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let head = git_head();
    assert_eq!(version, format!("silo {} (commit {})", env!("CARGO_PKG_VERSION"), &head[..12]));

    // The files of the image, from `export` of a container never started.
    let name = format!("silo-testenv-{}-export", std::process::id());
    let _ = Command::new(&engine).args(["rm", "-f", &name]).output();
    let created = Command::new(&engine).args(["create", "--name", &name, IMAGE]).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let tar = std::env::temp_dir().join(format!("{name}.tar"));
    let exported = Command::new(&engine).args(["export", "-o"]).arg(&tar).arg(&name).output().unwrap();
    let _ = Command::new(&engine).args(["rm", "-f", &name]).output();
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let files: BTreeSet<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| format!("/{}", l.trim_start_matches("./")))
        .filter(|l| !l.ends_with('/'))
        .collect();

    // What ldd says the binary needs, on this machine (where the image was built).
    let binary = cache_dir().join("images/controller/rootfs/silo");
    let ldd = Command::new("ldd").arg(&binary).output().unwrap();
    assert!(ldd.status.success(), "ldd {}: {}", binary.display(), String::from_utf8_lossy(&ldd.stderr));
    let mut expected: BTreeSet<String> =
        ["/silo", "/etc/passwd", "/etc/group", "/etc/ssl/certs/ca-certificates.crt"].map(String::from).into();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "=>", path, ..] if path.starts_with('/') => drop(expected.insert(path.to_string())),
            [path, ..] if path.starts_with('/') => drop(expected.insert(path.to_string())),
            _ => {}
        }
    }
    // Container engines may add their own empty mount points and resolver files.
    let engine_files = ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run/.containerenv", "/.dockerenv"];
    let files: BTreeSet<String> = files.into_iter().filter(|f| !engine_files.contains(&f.as_str())).collect();
    assert_eq!(files, expected, "the image holds exactly the binary, its libraries, CA certificates and the user");

    // Debian's bundle, and not one certificate of this machine's own CAs.
    let unpack = std::env::temp_dir().join(format!("{name}-ca"));
    std::fs::create_dir_all(&unpack).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&unpack)
        .arg("etc/ssl/certs/ca-certificates.crt")
        .status()
        .unwrap();
    assert!(status.success());
    let bundle = std::fs::read_to_string(unpack.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    let _ = std::fs::remove_file(&tar);
    let _ = std::fs::remove_dir_all(&unpack);
    assert!(bundle.matches("BEGIN CERTIFICATE").count() > 100, "a full CA bundle");
    for local in std::fs::read_dir("/usr/local/share/ca-certificates").into_iter().flatten() {
        let pem = std::fs::read_to_string(local.unwrap().path()).unwrap_or_default();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        if !body.is_empty() {
            let bundle_body: String = bundle.lines().filter(|l| !l.starts_with("-----")).collect();
            assert!(!bundle_body.contains(&body), "the image trusts a CA of the build machine's own");
        }
    }
}

// --- kustomize ------------------------------------------------------------------------------

/// Every overlay (and so the base and the monitoring component) renders with kubectl's
/// kustomize and is accepted by the API server in a server-side dry run, without warnings
/// (PodSecurity "restricted" included: the namespace is applied for real first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_overlay_renders_and_passes_a_server_side_dry_run() {
    let case = case().await;
    let info = case.info;

    // The prometheus-operator CRDs, for the monitoring component (tests/monitoring/build.sh).
    let crds = cache_dir().join("crds/prometheus-operator");
    let version = std::fs::read_to_string(crds.join(".version"))
        .unwrap_or_else(|_| panic!("{} is missing: run `make tools` (tests/monitoring/build.sh)", crds.display()));
    for crd in ["monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml"] {
        let mut command = kubectl(info);
        command.args(["apply", "--server-side", "-f"]).arg(crds.join(crd));
        let (ok, out, err) = run(command, None);
        assert!(ok, "install {crd} (prometheus-operator {version}): {out}{err}");
    }
    let mut command = kubectl(info);
    command.args(["wait", "--for=condition=Established", "--timeout=60s"]);
    command.args(["crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com"]);
    let (ok, out, err) = run(command, None);
    assert!(ok, "{out}{err}");

    let (_, base) = render("manifests/base");
    let namespace = serde_yaml::to_string(find(&base, "Namespace", "silo-system")).unwrap();
    let mut command = kubectl(info);
    command.args(["apply", "--server-side", "--force-conflicts", "-f", "-"]);
    let (ok, out, err) = run(command, Some(&namespace));
    assert!(ok, "apply the namespace: {out}{err}");

    for dir in ["manifests/base", "manifests/overlays/eks", "manifests/overlays/kind"] {
        let (yaml, objects) = render(dir);
        let mut command = kubectl(info);
        command.args(["apply", "--server-side", "--dry-run=server", "-f", "-"]);
        let (ok, out, err) = run(command, Some(&yaml));
        assert!(ok, "{dir}: the server-side dry run failed:\n{out}{err}");
        assert!(!err.contains("Warning"), "{dir}: the API server warned:\n{err}");
        let applied = out.lines().filter(|l| l.contains("(server dry run)")).count();
        assert_eq!(applied, objects.len(), "{dir}: every object is accepted:\n{out}");
        eprintln!("{dir}: {applied} objects accepted in a server-side dry run");
    }

    // What each overlay is for.
    let (_, eks) = render("manifests/overlays/eks");
    let account = find(&eks, "ServiceAccount", "silo");
    assert!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str().unwrap().starts_with("arn:aws:iam::")
    );
    let container = &find(&eks, "Deployment", "silo")["spec"]["template"]["spec"]["containers"][0];
    assert_ne!(container["image"], IMAGE, "the eks overlay pins an image");
    assert!(container["env"].as_array().unwrap().iter().any(|e| e["name"] == "SILO_MANAGEMENT_ROLE_ARN"));
    for (kind, name) in [("ServiceMonitor", "silo"), ("PrometheusRule", "silo"), ("ConfigMap", "silo-dashboard")] {
        find(&eks, kind, name);
    }
    let (_, kind_overlay) = render("manifests/overlays/kind");
    let container = &find(&kind_overlay, "Deployment", "silo")["spec"]["template"]["spec"]["containers"][0];
    let endpoint = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "AWS_ENDPOINT_URL").unwrap();
    let service = find(&kind_overlay, "Service", "silo-awssim");
    let port = service["spec"]["ports"][0]["port"].as_i64().unwrap();
    assert_eq!(endpoint["value"], format!("http://silo-awssim.silo-system.svc:{port}"));
    let sim = &find(&kind_overlay, "Deployment", "silo-awssim")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(sim["image"], SIM_IMAGE);

    // Nothing that is not a Kubernetes object sits in the apply path.
    for entry in walk(&repo_dir().join("manifests")) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.ends_with(".yaml") || name == "dashboard.json",
            "{} is not a manifest: keep it out of manifests/",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

// --- alerts and dashboard -----------------------------------------------------------------

fn promtool() -> PathBuf {
    let bin = cache_dir().join("bin/promtool");
    assert!(bin.exists(), "{} is missing: run `make tools` (tests/monitoring/build.sh)", bin.display());
    bin
}

/// The PrometheusRule's rules pass `promtool check rules`, and tests/monitoring/alerts.test.yaml
/// (a firing and a quiet case for every alert) passes `promtool test rules`.
#[test]
fn the_alerts_pass_promtool_check_and_test_rules() {
    let rule: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_dir().join("manifests/components/monitoring/prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("silo-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.yaml"), serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
    std::fs::copy(repo_dir().join("tests/monitoring/alerts.test.yaml"), dir.join("alerts.test.yaml")).unwrap();

    let check = Command::new(promtool()).args(["check", "rules", "rules.yaml"]).current_dir(&dir).output().unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new(promtool()).args(["test", "rules", "alerts.test.yaml"]).current_dir(&dir).output().unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );

    // Every alert is tested, and each has a runbook (a heading of its own) in docs/runbooks.md.
    let tests = std::fs::read_to_string(dir.join("alerts.test.yaml")).unwrap();
    let runbooks = std::fs::read_to_string(repo_dir().join("docs/runbooks.md")).unwrap();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            let name = alert["alert"].as_str().unwrap();
            assert!(tests.contains(&format!("alertname: {name}")), "{name} has no promtool test");
            assert!(runbooks.lines().any(|l| l == format!("## {name}")), "{name} has no runbook in docs/runbooks.md");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Labels Prometheus adds from the scrape target (they are not in /metrics).
const TARGET_LABELS: [&str; 7] = ["job", "instance", "pod", "namespace", "service", "container", "endpoint"];

/// Every metric the dashboard queries, and every label it selects, groups by or shows, is in
/// `/metrics` of a controller that ran the examples and the rarer events (an account that is
/// not in the organization, throttling and 5xx answers beyond the SDK's retries, a closure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_metrics_and_labels_silo_exports() {
    let case = case().await;
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let mut controller = case
        .spawn_controller(
            &["--metrics-address", &metrics, "--create-missing-ous", "--allow-account-closure"],
            "dashboard-controller.log",
        )
        .unwrap();
    apply_examples(case.info);
    for name in example_tenants() {
        case.wait_for(&name, conditions::READY, "True", READY_WITHIN).await.unwrap();
    }
    // An account that is not in the organization: a terminal AWS error.
    case.apply(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: ghost}\nspec: {accountId: '000000000000'}",
    )
    .await
    .unwrap();
    case.wait_for("ghost", conditions::STALLED, "True", READY_WITHIN).await.unwrap();
    // The fleet gauges are published from the cache every 10 s.
    wait_for_metric(&case, &metrics, "silo_tenants_stalled{", "reason=").await;
    // Throttling, then 5xx, beyond the SDK's retries, for a new tenant's creation.
    case.sim
        .configure(json!({"throttle_rate": 1.0, "throttle_operations": ["organizations:CreateAccount"]}))
        .await
        .unwrap();
    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: weather}\nspec: {deletionPolicy: Close}")
        .await
        .unwrap();
    wait_for_metric(&case, &metrics, "silo_aws_errors_total{", "kind=\"throttled\"").await;
    case.sim
        .configure(
            json!({"throttle_rate": 0.0, "error_rate": 1.0, "error_operations": ["organizations:CreateAccount"]}),
        )
        .await
        .unwrap();
    wait_for_metric(&case, &metrics, "silo_aws_errors_total{", "kind=\"transient\"").await;
    case.sim.configure(json!({"error_rate": 0.0})).await.unwrap();
    case.wait_for("weather", conditions::READY, "True", READY_WITHIN).await.unwrap();
    case.tenants().delete("weather", &Default::default()).await.unwrap();
    case.wait_deleted("weather", Duration::from_secs(90)).await.unwrap();

    let scraped = scrape(&metrics).await;
    controller.kill();
    std::fs::write(case.info.dir.join("dashboard-metrics.txt"), &scraped).unwrap();
    let exported = exported_series(&scraped);

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_dir().join("manifests/components/monitoring/dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut missing = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let query = Query::parse(expr);
            let mut labels_of_expr = BTreeSet::new();
            for (metric, labels) in &query.selectors {
                queried.insert(metric.clone());
                match exported.get(metric) {
                    None => drop(missing.insert(format!("metric {metric} (panel {:?})", panel["title"]))),
                    Some(have) => {
                        labels_of_expr.extend(have.iter().cloned());
                        for label in labels.iter().filter(|l| !have.contains(*l)) {
                            missing.insert(format!("label {label} of {metric} (panel {:?})", panel["title"]));
                        }
                    }
                }
            }
            let shown = target["legendFormat"].as_str().map(legend_labels).unwrap_or_default();
            for label in query.grouping.iter().chain(shown.iter()) {
                let known = labels_of_expr.contains(label) || TARGET_LABELS.contains(&label.as_str());
                let metrics_known = query.selectors.iter().all(|(m, _)| exported.contains_key(m));
                if !known && metrics_known {
                    missing.insert(format!("label {label} in {expr:?} (panel {:?})", panel["title"]));
                }
            }
        }
    }
    eprintln!("the dashboard queries: {}", queried.iter().cloned().collect::<Vec<_>>().join(", "));
    assert!(
        missing.is_empty(),
        "the dashboard queries what /metrics does not have (see {}):\n{}",
        case.info.dir.join("dashboard-metrics.txt").display(),
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}

async fn wait_for_metric(case: &TestCase, address: &str, metric: &str, needle: &str) {
    let counted = |line: &str| {
        line.starts_with(metric)
            && line.contains(needle)
            && line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
    };
    case.eventually(Duration::from_secs(60), || async { scrape(address).await.lines().any(counted) })
        .await
        .unwrap_or_else(|err| panic!("no {metric}{{{needle}}} above 0: {err:#}"));
}

/// Sample names in the text format, with the label names seen on their series.
fn exported_series(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = series.entry(line[..name_end].to_string()).or_default();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..line.rfind('}').unwrap()];
            for pair in split_labels(body) {
                labels.insert(pair.split('=').next().unwrap().trim().to_string());
            }
        }
    }
    series
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(body: &str) -> Vec<String> {
    let (mut parts, mut current, mut quoted, mut escaped) = (vec![], String::new(), false, false);
    for c in body.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current);
    }
    parts
}

/// `{{phase}}` in a legend names the label phase.
fn legend_labels(legend: &str) -> Vec<String> {
    legend.split("{{").skip(1).filter_map(|part| part.split("}}").next()).map(|l| l.trim().to_string()).collect()
}

/// The parts of a PromQL expression the dashboard check needs: the metrics selected (with
/// the label names of their matchers) and the labels of `by (...)`/`without (...)` clauses.
#[derive(Debug, Default, PartialEq)]
struct Query {
    selectors: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
}

impl Query {
    fn parse(expr: &str) -> Self {
        let chars: Vec<char> = expr.chars().collect();
        let mut query = Query::default();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '"' || c == '\'' {
                i = skip_string(&chars, i);
                continue;
            }
            if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
                if (word == "by" || word == "without") && chars.get(j) == Some(&'(') {
                    let close = j + chars[j..].iter().position(|&c| c == ')').unwrap();
                    let inside: String = chars[j + 1..close].iter().collect();
                    query.grouping.extend(inside.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
                    i = close + 1;
                } else if word.starts_with("silo_") {
                    let mut labels = vec![];
                    if chars.get(j) == Some(&'{') {
                        let mut k = j + 1;
                        while k < chars.len() && chars[k] != '}' {
                            if chars[k] == '"' {
                                k = skip_string(&chars, k);
                                continue;
                            }
                            if chars[k].is_ascii_alphabetic() || chars[k] == '_' {
                                let s = k;
                                while chars[k].is_ascii_alphanumeric() || chars[k] == '_' {
                                    k += 1;
                                }
                                labels.push(chars[s..k].iter().collect());
                                continue;
                            }
                            k += 1;
                        }
                        i = k + 1;
                    }
                    query.selectors.push((word, labels));
                }
                continue;
            }
            i += 1;
        }
        query
    }
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

#[test]
fn promql_selectors_and_groupings_are_found() {
    let query = Query::parse(
        r#"histogram_quantile(0.99, sum by (controller, le) (rate(silo_reconcile_duration_seconds_bucket{controller="tenant", result!~"a,b"}[5m]))) / sum without(pod) (silo_x)"#,
    );
    assert_eq!(
        query,
        Query {
            selectors: vec![
                ("silo_reconcile_duration_seconds_bucket".into(), vec!["controller".into(), "result".into()]),
                ("silo_x".into(), vec![]),
            ],
            grouping: vec!["controller".into(), "le".into(), "pod".into()],
        }
    );
    assert_eq!(legend_labels("p99 {{controller}} {{ le }}"), ["controller", "le"]);
    let series = exported_series("# HELP x\nsilo_a_total{k=\"v,w\",l=\"\\\"\"} 1\nsilo_b 2\n");
    assert_eq!(series["silo_a_total"], ["k", "l"].map(String::from).into());
    assert!(series["silo_b"].is_empty());
}

// --- first-run errors ---------------------------------------------------------------------

/// Runs `silo run` with exactly `env` (and nothing of this process's environment), and
/// returns its output once it exits; it must exit, and fail, within 60 s.
async fn first_run(case: &TestCase, args: &[&str], env: &[(&str, String)], log_name: &str) -> String {
    let empty_home = case.info.dir.join("empty-home");
    std::fs::create_dir_all(&empty_home).unwrap();
    let mut command = Command::new(silo_testenv::silo_binary().unwrap());
    command.arg("run").args(["--metrics-address", "127.0.0.1:0"]).args(args).env_clear();
    // Never ask the EC2 instance metadata service: nothing of this machine's may answer.
    command.env("HOME", &empty_home).env("AWS_EC2_METADATA_DISABLED", "true").env("RUST_LOG", "info");
    for (name, value) in env {
        command.env(name, value);
    }
    let log = case.info.dir.join(log_name);
    let _ = std::fs::remove_file(&log);
    let mut process = Process::start("silo run (first run)", command, &log).unwrap();
    let status = process.wait_exit(Duration::from_secs(60)).await.unwrap();
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "silo run should have stopped with an error:\n{output}");
    output
}

/// The lines of the error `silo run` exits with ("Error: " and one line per problem).
fn error_lines(output: &str) -> Vec<String> {
    let start = output.find("Error: ").unwrap_or_else(|| panic!("no error printed:\n{output}"));
    output[start + "Error: ".len()..].lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

fn sim_env(case: &TestCase) -> Vec<(&'static str, String)> {
    let mut env = case.sim.env();
    env.push(("KUBECONFIG", case.info.kubeconfig.display().to_string()));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_without_the_namespace_says_how_to_create_it() {
    let case = case().await;
    let output = first_run(&case, &["--namespace", "silo-elsewhere"], &sim_env(&case), "first-run-namespace.log").await;
    let lines = error_lines(&output);
    assert_eq!(lines.len(), 1, "{output}");
    assert!(
        lines[0].starts_with(
            "namespace silo-elsewhere does not exist: run `kubectl create namespace silo-elsewhere` (or install with \
             `kubectl apply --server-side -k manifests/base`, which creates it)"
        ),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_on_a_bare_cluster_lists_every_missing_piece() {
    let case = case().await;
    // A second control plane with nothing installed: no namespace, no CRDs.
    let bare = ControlPlane::start(&case.info.dir.join("bare-kube")).await.unwrap();
    let mut env = case.sim.env();
    env.push(("KUBECONFIG", bare.kubeconfig.display().to_string()));
    let output = first_run(&case, &[], &env, "first-run-bare.log").await;
    let lines = error_lines(&output);
    assert_eq!(lines.len(), 2, "{output}");
    assert!(lines[0].starts_with("namespace silo-system does not exist: run `kubectl create namespace silo-system`"));
    assert_eq!(
        lines[1],
        "Silo's CRDs are not installed (tenants.silo.dev, baselines.silo.dev missing): run `kubectl apply --server-side \
         -k manifests/base` (or `silo crd | kubectl apply --server-side -f -`)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_without_aws_credentials_says_where_they_come_from() {
    let case = case().await;
    let env = [("KUBECONFIG", case.info.kubeconfig.display().to_string())];
    let output = first_run(&case, &[], &env, "first-run-credentials.log").await;
    let lines = error_lines(&output);
    assert_eq!(lines.len(), 1, "{output}");
    assert!(
        lines[0].starts_with(
            "no AWS credentials (none found): give the silo ServiceAccount an IAM role (the IRSA annotation"
        ),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_with_a_wrong_region_names_it() {
    let case = case().await;
    let mut env = sim_env(&case);
    env.retain(|(k, _)| *k != "AWS_REGION");
    env.push(("AWS_REGION", "us-east".into()));
    let output = first_run(&case, &[], &env, "first-run-region.log").await;
    let lines = error_lines(&output);
    assert_eq!(lines.len(), 1, "{output}");
    assert!(
        lines[0].starts_with("AWS region \"us-east\" is not a region name like us-east-1: set AWS_REGION"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_with_a_management_role_it_cannot_assume_says_what_the_trust_policy_needs() {
    let case = case().await;
    // A role in an account whose roles the simulator refuses to let anyone assume.
    let account = case.sim.create_account("mgmt", "mgmt@example.com", &[]).await.unwrap();
    case.sim.configure(json!({"unassumable_roles_seconds": 3600})).await.unwrap();
    let role = format!("arn:aws:iam::{account}:role/silo-management");
    let output = first_run(&case, &["--management-role-arn", &role], &sim_env(&case), "first-run-role.log").await;
    let lines = error_lines(&output);
    assert_eq!(lines.len(), 1, "{output}");
    assert!(
        lines[0].starts_with(&format!(
            "cannot assume the management role {role} (--management-role-arn, SILO_MANAGEMENT_ROLE_ARN) as arn:aws:"
        )),
        "{output}"
    );
    assert!(lines[0].contains("Its trust policy must allow"), "{output}");
}
