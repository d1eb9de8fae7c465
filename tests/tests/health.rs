//! Argo CD health checks (integrations/argocd/argocd-cm-patch.yaml), run in an embedded
//! Lua 5.1, the language Argo CD runs them in (gopher-lua), with only the libraries Argo CD
//! opens for them (base, table, string, math): no os, no io.
//!
//! - Against the fixtures in tests/fixtures/health/: Tenants and Baselines captured from a
//!   live run of this suite (no environment needed).
//! - Against the same objects in a live run: the controller drives Tenants and Baselines into
//!   every state, and each object is judged as Argo CD would judge it.
//! - kstatus, what Flux's healthChecks use, on the same objects (tests/kstatus, built by
//!   `make tools`): docs/operating.md's Flux notes say what it makes of each state.
//!
//! The fixtures are what the live test captures: run it with SILO_CAPTURE_FIXTURES=1
//! (`SILO_CAPTURE_FIXTURES=1 cargo test -p silo-testenv --test health`) to write them anew,
//! for instance after the controller's status changes shape.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};
use mlua::{Lua, LuaOptions, LuaSerdeExt, StdLib, serde::SerializeOptions};
use serde_json::{Value, json};
use silo::{Baseline, Tenant, conditions};
use silo_testenv::{TestCase, repo_dir, test_case};

const WITHIN: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Tenant,
    Baseline,
}

/// Each captured state: the fixture, its kind, Argo CD's verdict, words its message has, and
/// what kstatus (Flux) makes of it.
const CASES: &[(&str, Kind, &str, &str, &str)] = &[
    // kstatus calls an object without any status Current: Flux may pass a brand-new Tenant
    // before Silo wrote its first status (see docs/operating.md, Flux).
    ("tenant-new", Kind::Tenant, "Progressing", "Waiting for Silo to report status", "Current"),
    ("tenant-reconciling", Kind::Tenant, "Progressing", "CreatingAccount", "InProgress"),
    ("tenant-stalled", Kind::Tenant, "Degraded", "OrganizationalUnitNotFound: ", "Failed"),
    ("tenant-stalled-undeclared-parameter", Kind::Tenant, "Degraded", "UndeclaredParameter: ", "Failed"),
    ("tenant-paused", Kind::Tenant, "Suspended", "spec.paused is true", "InProgress"),
    ("tenant-ready", Kind::Tenant, "Healthy", " is ready", "Current"),
    ("baseline-new", Kind::Baseline, "Progressing", "Waiting for Silo to report status", "Current"),
    ("baseline-rolling-out", Kind::Baseline, "Progressing", "RollingOut: ", "InProgress"),
    // The Baseline sets no Stalled condition when a tenant of it failed: kstatus waits.
    ("baseline-tenants-failed", Kind::Baseline, "Degraded", "TenantsFailed: ", "InProgress"),
    ("baseline-ready", Kind::Baseline, "Healthy", "AllCurrent: ", "Current"),
];

/// The Lua of one kind, as users put it in argocd-cm.
fn script(kind: Kind) -> String {
    let path = repo_dir().join("integrations/argocd/argocd-cm-patch.yaml");
    let patch: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let key = match kind {
        Kind::Tenant => "resource.customizations.health.silo.dev_Tenant",
        Kind::Baseline => "resource.customizations.health.silo.dev_Baseline",
    };
    patch["data"][key].as_str().unwrap_or_else(|| panic!("{} has no {key}", path.display())).to_string()
}

/// Argo CD's verdict on `object`: (status, message).
fn health(kind: Kind, object: &Value) -> (String, String) {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::default()).unwrap();
    // As gopher-lua sees a Kubernetes object: JSON null is nil, arrays are 1-based tables.
    let options = SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    lua.globals().set("obj", lua.to_value_with(object, options).unwrap()).unwrap();
    let verdict: mlua::Table =
        lua.load(script(kind)).eval().unwrap_or_else(|e| panic!("the {kind:?} health check failed: {e}"));
    (verdict.get("status").unwrap(), verdict.get::<Option<String>>("message").unwrap().unwrap_or_default())
}

fn fixture_path(name: &str) -> PathBuf {
    repo_dir().join("tests/fixtures/health").join(format!("{name}.json"))
}

/// What kstatus (sigs.k8s.io/cli-utils, as Flux runs it) makes of objects in JSON files:
/// (status, message) each, from `silo-kstatus` (tests/kstatus, built by `make tools`).
fn kstatus(files: &[PathBuf]) -> Vec<(String, String)> {
    let bin = silo_testenv::cache_dir().join("bin/silo-kstatus");
    assert!(bin.exists(), "{} is missing: run `make tools` (tests/kstatus/build.sh)", bin.display());
    let out = std::process::Command::new(&bin).args(files).output().unwrap();
    assert!(out.status.success(), "silo-kstatus: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(3, '\t').collect();
            (fields[1].to_string(), fields.get(2).unwrap_or(&"").to_string())
        })
        .collect()
}

fn judge(name: &str, object: &Value) {
    let (_, kind, status, words, _) = CASES.iter().find(|c| c.0 == name).unwrap_or_else(|| panic!("no case {name}"));
    let (got, message) = health(*kind, object);
    assert_eq!(got, *status, "{name}: {message}\n{}", serde_json::to_string_pretty(object).unwrap());
    assert!(message.contains(words), "{name}: the message {message:?} lacks {words:?}");
}

fn judge_kstatus(name: &str, file: &Path) {
    let (.., expected) = CASES.iter().find(|c| c.0 == name).unwrap();
    let (status, message) = kstatus(&[file.to_path_buf()]).remove(0);
    assert_eq!(status, *expected, "kstatus on {name}: {message}");
}

#[test]
fn the_health_checks_judge_every_captured_state() {
    for (name, ..) in CASES {
        let path = fixture_path(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; capture the fixtures: see this file's header", path.display()));
        judge(name, &serde_json::from_str(&text).unwrap());
    }
}

#[test]
fn kstatus_judges_every_captured_state_as_the_readme_says() {
    for (name, ..) in CASES {
        judge_kstatus(name, &fixture_path(name));
    }
}

#[test]
fn a_generation_silo_has_not_seen_yet_is_progressing() {
    for (name, kind) in [("tenant-ready", Kind::Tenant), ("baseline-ready", Kind::Baseline)] {
        let mut object: Value = serde_json::from_str(&std::fs::read_to_string(fixture_path(name)).unwrap()).unwrap();
        let generation = object["metadata"]["generation"].as_i64().unwrap();
        object["metadata"]["generation"] = json!(generation + 1);
        let (status, message) = health(kind, &object);
        assert_eq!(status, "Progressing", "{name}: {message}");
        assert_eq!(message, format!("Waiting for Silo to observe generation {}", generation + 1));
    }
}

#[test]
fn a_stalled_condition_wins_over_ready_and_reconciling() {
    let object = json!({
        "metadata": {"name": "t", "generation": 1},
        "spec": {},
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready", "message": ""},
            {"type": "Reconciling", "status": "True", "reason": "UpdatingStack", "message": "x"},
            {"type": "Stalled", "status": "True", "reason": "StackUpdateRolledBack", "message": "fix the Baseline"},
        ]},
    });
    assert_eq!(health(Kind::Tenant, &object), ("Degraded".into(), "StackUpdateRolledBack: fix the Baseline".into()));
    assert_eq!(health(Kind::Baseline, &object).0, "Degraded");
}

// --- the live run ------------------------------------------------------------------------

/// The object as the API server serves it (what Argo CD sees), without managedFields.
async fn live<K: kube::Resource<DynamicType = ()>>(case: &TestCase, name: &str) -> Value {
    let api = Api::<DynamicObject>::all_with(case.client.clone(), &ApiResource::erase::<K>(&()));
    let mut value = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
    value["metadata"].as_object_mut().unwrap().remove("managedFields");
    value
}

/// Judges the object, and writes it as the fixture when SILO_CAPTURE_FIXTURES is set.
fn capture(name: &str, object: Value) {
    judge(name, &object);
    let file = std::env::temp_dir().join(format!("silo-health-{}-{name}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_string(&object).unwrap()).unwrap();
    judge_kstatus(name, &file);
    let _ = std::fs::remove_file(&file);
    if std::env::var_os("SILO_CAPTURE_FIXTURES").is_some() {
        let path = fixture_path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&object).unwrap() + "\n").unwrap();
        eprintln!("captured {}", path.display());
    }
}

async fn apply_baseline(case: &TestCase, yaml: &str) {
    let baseline: Value = serde_yaml::from_str(yaml).unwrap();
    let name = baseline["metadata"]["name"].as_str().unwrap().to_string();
    Api::<Baseline>::all(case.client.clone())
        .patch(&name, &PatchParams::apply("silo-tests").force(), &Patch::Apply(&baseline))
        .await
        .unwrap();
}

/// Waits until the Baseline's Ready condition has `reason`, and returns it as served.
async fn baseline_with_reason(case: &TestCase, name: &str, reason: &str) -> Value {
    let api = Api::<Baseline>::all(case.client.clone());
    case.eventually(WITHIN, || async {
        let baseline = api.get(name).await?;
        let status = baseline.status.clone().unwrap_or_default();
        anyhow::ensure!(
            conditions::find(&status.conditions, conditions::READY).is_some_and(|c| c.reason == reason)
                && status.observed_generation == baseline.metadata.generation,
            "status: {status:?}"
        );
        Ok(())
    })
    .await
    .unwrap_or_else(|err| panic!("Baseline {name} never had Ready reason {reason}: {err:#}"));
    live::<Baseline>(case, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_checks_judge_objects_of_a_live_run() {
    let mut case = test_case().await;
    case.sim.configure(json!({"create_account_delays": {"^aws\\+slow@": 20}})).await.unwrap();
    apply_baseline(&case, &std::fs::read_to_string(repo_dir().join("examples/baseline-standard.yaml")).unwrap()).await;
    apply_baseline(
        &case,
        "apiVersion: silo.dev/v1alpha1
kind: Baseline
metadata: {name: strict}
spec:
  template: |
    Parameters: {TenantName: {Type: String}}
    Resources: {Topic: {Type: AWS::SNS::Topic}}",
    )
    .await;

    // Before any controller runs: no status at all.
    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: fresh}\nspec: {}").await.unwrap();
    capture("tenant-new", live::<Tenant>(&case, "fresh").await);
    capture("baseline-new", live::<Baseline>(&case, "standard").await);

    case.start_controller(TestCase::config());
    for yaml in [
        "metadata: {name: slow}\nspec: {baseline: {name: standard}}",
        "metadata: {name: nowhere}\nspec: {organizationalUnit: /Does/Not/Exist}",
        "metadata: {name: sleepy}\nspec: {paused: true}",
        "metadata: {name: plain}\nspec: {}",
        "metadata: {name: typo}\nspec: {baseline: {name: strict, parameters: {Evn: production}}}",
    ] {
        case.apply(&format!("apiVersion: silo.dev/v1alpha1\nkind: Tenant\n{yaml}")).await.unwrap();
    }

    case.wait_for_reason("slow", conditions::READY, "CreatingAccount", WITHIN).await.unwrap();
    capture("tenant-reconciling", live::<Tenant>(&case, "slow").await);
    capture("baseline-rolling-out", baseline_with_reason(&case, "standard", "RollingOut").await);

    case.wait_for("nowhere", conditions::STALLED, "True", WITHIN).await.unwrap();
    capture("tenant-stalled", live::<Tenant>(&case, "nowhere").await);

    let sleepy = case.wait_for("sleepy", conditions::READY, "False", WITHIN).await.unwrap();
    assert_eq!(sleepy.status.as_ref().map(|s| s.phase.clone()), Some(Some("Paused".to_string())));
    capture("tenant-paused", live::<Tenant>(&case, "sleepy").await);

    case.wait_for("plain", conditions::READY, "True", WITHIN).await.unwrap();
    capture("tenant-ready", live::<Tenant>(&case, "plain").await);

    case.wait_for("typo", conditions::STALLED, "True", WITHIN).await.unwrap();
    capture("tenant-stalled-undeclared-parameter", live::<Tenant>(&case, "typo").await);
    capture("baseline-tenants-failed", baseline_with_reason(&case, "strict", "TenantsFailed").await);

    case.wait_for("slow", conditions::READY, "True", WITHIN).await.unwrap();
    capture("baseline-ready", baseline_with_reason(&case, "standard", "AllCurrent").await);

    // Every captured name was judged live.
    let fresh = case.tenants().get("fresh").await.unwrap();
    assert!(fresh.status.is_some(), "the controller reached the first Tenant too: {}", fresh.name_any());
}
