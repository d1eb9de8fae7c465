//! Taking over an existing organization: `silo import` adopts accounts Silo did not make,
//! without creating, moving or retagging anything but Silo's own two tags; `silo orphans`
//! and the controller's `silo_orphan_accounts` gauge find the accounts no Tenant has.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aws_sdk_organizations::types::Tag;
use futures::{StreamExt as _, TryStreamExt as _};
use kube::{
    ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use silo::{Tenant, conditions};
use silo_testenv::{TenantFixture, TestCase, metric, process::free_port, scrape, silo_binary, test_case};

const MANAGEMENT: &str = silo_testenv::awssim::MANAGEMENT_ACCOUNT;
const WITHIN: Duration = Duration::from_secs(90);

/// What a finished `silo` command printed.
struct Output {
    stdout: String,
    stderr: String,
}

/// Runs `silo <args>` to its end against the environment, and fails unless it exits 0.
async fn silo(case: &TestCase, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(silo_binary().unwrap());
    command.args(args).env("KUBECONFIG", &case.info.kubeconfig).envs(case.sim.env());
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let output = Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(out.status.success(), "silo {args:?} exited with {}: {}", out.status, output.stderr);
    output
}

/// Creates an OU under `parent` and returns its id.
async fn create_ou(case: &TestCase, parent: &str, name: &str) -> String {
    let out = case.sim.organizations().create_organizational_unit().parent_id(parent).name(name).send().await.unwrap();
    out.organizational_unit().and_then(|ou| ou.id()).unwrap().to_string()
}

async fn root_id(case: &TestCase) -> String {
    let roots = case.sim.organizations().list_roots().send().await.unwrap();
    roots.roots()[0].id().unwrap().to_string()
}

/// An account made outside Silo (through the management account's Organizations API), with
/// these tags, moved under `parent` unless that is the root.
async fn account_outside_silo(case: &TestCase, name: &str, email: &str, tags: &[(&str, &str)], parent: &str) -> String {
    let org = case.sim.organizations();
    let id = case.sim.create_account(name, email, tags).await.unwrap();
    let from = org.list_parents().child_id(&id).send().await.unwrap().parents()[0].id().unwrap().to_string();
    if from != parent {
        org.move_account().account_id(&id).source_parent_id(from).destination_parent_id(parent).send().await.unwrap();
    }
    id
}

async fn tags_of(case: &TestCase, account_id: &str) -> BTreeMap<String, String> {
    let out = case.sim.organizations().list_tags_for_resource().resource_id(account_id).send().await.unwrap();
    out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

fn without_silo_tags(tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    tags.iter().filter(|(k, _)| !k.starts_with("silo.dev/")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Applies every Tenant of a `---` separated YAML stream with server-side apply.
async fn apply_stream(case: &TestCase, yaml: &str) -> Vec<Tenant> {
    let tenants: Vec<Tenant> = serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("import prints Tenants"))
        .collect();
    let api = case.tenants();
    futures::stream::iter(tenants.clone())
        .map(|tenant| {
            let api = api.clone();
            async move {
                api.patch(&tenant.name_any(), &PatchParams::apply("kubectl").force(), &Patch::Apply(&tenant)).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("the imported Tenants are accepted by the API server");
    tenants
}

/// 300 accounts made by scripts (foreign tags, nested OUs, a closed one, one a Tenant already
/// has, one tagged by a Tenant that was deleted): import writes Tenants for exactly the right
/// ones, they all become Ready, and nothing is created, moved or retagged but Silo's own tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_300_accounts_adopts_them_all() {
    let case = test_case().await;
    // The scripts that made these accounts did not wait for each other, and they were made
    // long ago: made at once here, and listed at once. The test is about what an import
    // adopts, not about request rates: Organizations answers at the 200 requests per second
    // Silo is given below, the other services unthrottled.
    case.raise_account_quota(400).await;
    case.sim
        .configure(serde_json::json!({
            "max_concurrent_creations": null,
            "create_account_delay_seconds": 0,
            "list_accounts_lag_seconds": 0,
            "rate_limits": {"organizations:*": 200},
        }))
        .await
        .unwrap();
    let root = root_id(&case).await;
    let tenants_ou = create_ou(&case, &root, "Tenants").await;
    let prod = create_ou(&case, &tenants_ou, "Prod").await;
    let eu = create_ou(&case, &prod, "EU").await;
    let parents =
        [&root, &tenants_ou, &tenants_ou, &tenants_ou, &tenants_ou, &tenants_ou, &tenants_ou, &prod, &prod, &eu];
    let made = futures::stream::iter(0..300)
        .map(|i| {
            let case = &case;
            let parent = parents[i % 10].clone();
            async move {
                // Every 50th is an "Acme Corp": six accounts of one name.
                let name = if i % 50 == 7 { "Acme Corp".to_string() } else { format!("Customer {i:03}") };
                let team = format!("team-{}", i % 7);
                let tags: Vec<(&str, &str)> =
                    if i % 3 == 0 { vec![("team", team.as_str()), ("cost-center", "1234")] } else { vec![] };
                let id = account_outside_silo(case, &name, &format!("customer-{i}@example.com"), &tags, &parent).await;
                (i, id)
            }
        })
        .buffer_unordered(8)
        .collect::<BTreeMap<usize, String>>()
        .await;
    // One closed, one a Tenant already has, one a deleted Tenant left tagged.
    let closed = made[&11].clone();
    case.sim.organizations().close_account().account_id(&closed).send().await.unwrap();
    let claimed = made[&12].clone();
    let mut holder = TenantFixture::named("already-here").adopting(&claimed).tenant();
    holder.annotations_mut().insert("silo.dev/adopt-account".into(), claimed.clone());
    case.tenants()
        .patch("already-here", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&holder))
        .await
        .unwrap();
    let left_behind = made[&13].clone();
    let stale = [("silo.dev/tenant-uid", "0d1e7e0d-0000-4000-8000-000000000000"), ("silo.dev/tenant", "deleted")];
    let stale: Vec<Tag> = stale.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap()).collect();
    case.sim.organizations().tag_resource().resource_id(&left_behind).set_tags(Some(stale)).send().await.unwrap();

    let mut before = BTreeMap::new();
    for id in made.values() {
        before.insert(id.clone(), tags_of(&case, id).await);
    }
    let creations = case.sim.requests("organizations:CreateAccount").await.unwrap();
    let moves = case.sim.requests("organizations:MoveAccount").await.unwrap();

    let dry = silo(&case, &["import", "--dry-run"]).await;
    let skipped: Vec<&str> = dry.stdout.lines().filter(|l| l.starts_with("skip ")).collect();
    assert_eq!(skipped.len(), 3, "the management, closed and claimed accounts: {skipped:?}");
    let reasons = [
        (MANAGEMENT, "management account is never a tenant's"),
        (closed.as_str(), "not ACTIVE"),
        (claimed.as_str(), "Tenant already-here already has it"),
    ];
    for (account, reason) in reasons {
        assert!(
            skipped.iter().any(|l| l.starts_with(&format!("skip {account} ")) && l.contains(reason)),
            "{account}: {reason} in {skipped:?}"
        );
    }
    assert!(dry.stdout.contains(&format!("import {left_behind} \"Customer 013\" as Tenant customer-013 (in /Tenants")));
    assert!(dry.stdout.contains("taking over the tag of the deleted Tenant"), "{}", dry.stdout);
    assert_eq!(dry.stdout.lines().filter(|l| l.starts_with("import ")).count(), 298);
    assert_eq!(case.tenants().list(&Default::default()).await.unwrap().items.len(), 1, "a dry run writes nothing");

    let import = silo(&case, &["import"]).await;
    let started = Instant::now();
    let tenants = apply_stream(&case, &import.stdout).await;
    assert_eq!(tenants.len(), 298, "{}", import.stderr);
    let acme: Vec<String> = tenants.iter().map(|t| t.name_any()).filter(|n| n.starts_with("acme-corp")).collect();
    assert_eq!(acme.len(), 6);
    for tenant in tenants.iter().filter(|t| t.name_any().starts_with("acme-corp")) {
        let (name, id) = (tenant.name_any(), tenant.spec.account_id.clone().unwrap());
        let suffix = name.strip_prefix("acme-corp-").unwrap();
        assert!(suffix.len() >= 4 && id.ends_with(suffix), "{name} ends with the end of {id}");
    }
    let at_root = tenants.iter().find(|t| t.spec.account_id.as_ref() == Some(&made[&0])).unwrap();
    assert_eq!(at_root.spec.organizational_unit, None, "an account under the root stays there");
    let nested = tenants.iter().find(|t| t.spec.account_id.as_ref() == Some(&made[&9])).unwrap();
    assert_eq!(nested.spec.organizational_unit.as_deref(), Some("/Tenants/Prod/EU"));
    assert!(tenants.iter().all(|t| t.spec.tags.is_empty()), "foreign tags stay out of spec.tags");

    let _controller = case
        .spawn_controller(
            &[
                "--leader-election",
                "false",
                "--aws-requests-per-second",
                "200",
                "--aws-max-in-flight",
                "16",
                "--concurrency",
                "32",
            ],
            "takeover-import.log",
        )
        .unwrap();
    let mut names: Vec<String> = tenants.iter().map(|t| t.name_any()).collect();
    names.push("already-here".into());
    case.wait_for_all(&names, conditions::READY, "True", Duration::from_secs(300)).await.unwrap();
    eprintln!("takeover: {} Tenants Ready {:.1} s after the apply", names.len(), started.elapsed().as_secs_f64());

    assert_eq!(case.sim.requests("organizations:CreateAccount").await.unwrap(), creations, "no account created");
    assert_eq!(case.sim.requests("organizations:MoveAccount").await.unwrap(), moves, "no account moved");
    for (id, tags) in &before {
        let after = tags_of(&case, id).await;
        assert_eq!(without_silo_tags(&after), without_silo_tags(tags), "foreign tags of {id} unchanged");
    }
    let reclaimed = case.tenants().get("customer-013").await.unwrap();
    assert_eq!(
        tags_of(&case, &left_behind).await.get("silo.dev/tenant-uid"),
        reclaimed.uid().as_ref(),
        "tag taken over"
    );
    assert_eq!(tags_of(&case, &closed).await.get("silo.dev/tenant-uid"), None, "the closed account is left alone");
}

/// A Tenant deleted with Retain leaves its account tagged; an account made out of band lands
/// in a tenant OU. `silo orphans` and the gauge find both; importing them clears the gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_listed_and_counted() {
    let case = test_case().await;
    let root = root_id(&case).await;
    let tenants_ou = create_ou(&case, &root, "Tenants").await;
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let args = [
        "--leader-election",
        "false",
        "--tenant-ou-root",
        "/Tenants",
        "--index-refresh-seconds",
        "2",
        "--metrics-address",
        &metrics,
    ];
    let mut controller = case.spawn_controller(&args, "takeover-orphans.log").unwrap();
    for name in ["keeper", "leaver"] {
        case.create(&TenantFixture::named(name).in_ou("/Tenants")).await.unwrap();
    }
    let keeper = case.wait_for("keeper", conditions::READY, "True", WITHIN).await.unwrap();
    let leaver = case.wait_for("leaver", conditions::READY, "True", WITHIN).await.unwrap();
    let left = leaver.status.clone().unwrap().account_id.unwrap();
    case.tenants().delete("leaver", &DeleteParams::default()).await.unwrap();
    case.wait_deleted("leaver", WITHIN).await.unwrap();
    let stray = account_outside_silo(&case, "stray", "stray@example.com", &[("owner", "ops")], &tenants_ou).await;
    account_outside_silo(&case, "shared-services", "shared@example.com", &[], &root).await;

    let listed = silo(&case, &["orphans", "--tenant-ou-root", "/Tenants", "-o", "json"]).await;
    let orphans: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let kinds: BTreeMap<String, String> = orphans
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["accountId"].as_str().unwrap().to_string(), o["kind"].as_str().unwrap().to_string()))
        .collect();
    let want = BTreeMap::from([
        (left.clone(), "tagged_without_tenant".to_string()),
        (stray.clone(), "untracked_in_tenant_ou".to_string()),
    ]);
    assert_eq!(kinds, want, "keeper's account, the management account and one outside the roots are no orphans");
    assert_eq!(orphans[0]["tenantUid"].as_str(), leaver.uid().as_deref());
    let table = silo(&case, &["orphans", "--tenant-ou-root", "/Tenants"]).await;
    let row = table.stdout.lines().find(|l| l.starts_with(&stray)).unwrap_or_default();
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), [&stray, "stray", "untracked_in_tenant_ou", "/Tenants"]);

    let gauge = |kind: &str| format!("silo_orphan_accounts{{organization=\"default\",kind=\"{kind}\"}}");
    let wait_for_gauges = |tagged: f64, untracked: f64| {
        let (metrics, gauge, case) = (metrics.clone(), gauge, &case);
        async move {
            case.eventually(WITHIN, || async {
                let exposition = scrape(&metrics).await?;
                let seen = (
                    metric(&exposition, &gauge("tagged_without_tenant")),
                    metric(&exposition, &gauge("untracked_in_tenant_ou")),
                );
                anyhow::ensure!(seen == (Some(tagged), Some(untracked)), "the gauges show {seen:?}");
                Ok(())
            })
            .await
            .unwrap_or_else(|err| panic!("the gauges never showed ({tagged}, {untracked}): {err:#}"));
        }
    };
    wait_for_gauges(1.0, 1.0).await;
    controller.check_running().unwrap();

    // Taking them back: import writes Tenants for both, and the gauges go to zero.
    let import = silo(&case, &["import", "--ou", "/Tenants"]).await;
    let imported = apply_stream(&case, &import.stdout).await;
    let mut names: Vec<String> = imported.iter().map(|t| t.name_any()).collect();
    names.sort();
    assert_eq!(names, ["leaver", "stray"], "keeper's account is skipped: {}", import.stderr);
    case.wait_for_all(&names, conditions::READY, "True", WITHIN).await.unwrap();
    let leaver_again = case.tenants().get("leaver").await.unwrap();
    assert_eq!(tags_of(&case, &left).await.get("silo.dev/tenant-uid"), leaver_again.uid().as_ref());
    assert_ne!(leaver_again.uid(), leaver.uid());
    assert_eq!(
        tags_of(&case, &keeper.status.unwrap().account_id.unwrap()).await.get("silo.dev/tenant"),
        Some(&"keeper".to_string())
    );
    wait_for_gauges(0.0, 0.0).await;
    controller.kill();
}
