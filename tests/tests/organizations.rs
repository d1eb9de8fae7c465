//! Several AWS organizations from one controller: every Organization object gets controllers
//! of its own, with its own management role and quotas, and each Tenant's account is made in
//! the organization it names. A real kube-apiserver, the controller in this process as Silo's
//! ServiceAccount, and the AWS simulator serving two organizations.

use std::{collections::BTreeMap, time::Duration};

use aws_sdk_organizations::Client as Organizations;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use silo::{
    api::{Baseline, Organization, OrganizationBudgets, OrganizationSpec, Tenant},
    conditions,
};
use silo_testenv::{
    BASELINE_TEMPLATE, CONTROLLER_NAMESPACE, LEASE_NAME, SimClient, Spawn, TestCase, silo_binary, test_case,
};

const READY_WITHIN: Duration = Duration::from_secs(90);
/// The second organization's management account, and the role Silo assumes there.
const SECOND: &str = "222222222222";
const ROLE: &str = "silo-management";

async fn emails(org: &Organizations) -> Vec<String> {
    let listed = org.list_accounts().send().await.expect("ListAccounts").accounts.unwrap_or_default();
    let mut emails: Vec<String> = listed.iter().filter_map(|a| a.email().map(str::to_string)).collect();
    emails.sort();
    emails
}

/// The default organization's only creation slot stays taken (`org-held`'s CreateAccount
/// never finishes during the test), and still a Tenant of the second organization gets its
/// account, in the second organization: each has its own slots. `org-waits`, of the default
/// organization, waits for a slot all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_organization_makes_its_own_tenants_accounts_with_its_own_creation_slots() {
    let mut case = test_case().await;
    // Trust policies off: the second management account's role needs no IAM set-up there.
    let knobs = json!({"enforce_trust_policies": false, "create_account_delay_seconds": 1,
                       "create_account_delays": {"^aws\\+org-held@": 3600}});
    case.sim.configure(knobs).await.unwrap();
    let second = case.sim.another_organization(SECOND, ROLE).await.unwrap();
    // As the `silo` ServiceAccount: what it reads and writes of Organizations and Tenants
    // must be granted by Silo's RBAC.
    let mut config = TestCase::config();
    config.creation_slots = 1;
    case.start_controller_as_service_account(config).await.unwrap();
    let organizations = Api::<Organization>::all(case.client.clone());
    let spec = OrganizationSpec {
        management_role_arn: format!("arn:aws:iam::{SECOND}:role/{ROLE}"),
        budgets: OrganizationBudgets { creation_slots: Some(1), ..Default::default() },
        ..Default::default()
    };
    organizations.create(&PostParams::default(), &Organization::new("second", spec)).await.unwrap();

    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: org-held}\nspec: {}").await.unwrap();
    case.wait_for("org-held", conditions::ACCOUNT_READY, "False", READY_WITHIN).await.unwrap();
    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: org-waits}\nspec: {}").await.unwrap();
    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: org-away}\nspec: {organization: second}")
        .await
        .unwrap();

    let away = case.wait_for("org-away", conditions::READY, "True", READY_WITHIN).await.unwrap();
    let account_id = away.status.as_ref().and_then(|s| s.account_id.clone()).expect("status.accountId");
    let waits = case.tenants().get("org-waits").await.unwrap();
    let waits_status = waits.status.unwrap_or_default();
    let account = conditions::find(&waits_status.conditions, conditions::ACCOUNT_READY).expect("AccountReady");
    assert_eq!(account.reason, "WaitingForCreationSlot", "the default organization's slot is still taken");
    assert!(waits_status.create_account_request_id.is_none(), "no CreateAccount for org-waits");

    let in_second = emails(&second).await;
    assert!(in_second.contains(&"aws+org-away@example.com".to_string()), "made in the second: {in_second:?}");
    let in_default = emails(&case.sim.organizations()).await;
    assert!(!in_default.contains(&"aws+org-away@example.com".to_string()), "not in the default: {in_default:?}");
    let described = second.describe_account().account_id(&account_id).send().await.expect("DescribeAccount");
    assert_eq!(described.account.and_then(|a| a.email), Some("aws+org-away@example.com".into()));

    // The second Organization's status: what its controllers know of it.
    let published = case
        .eventually(READY_WITHIN, || async {
            let org = organizations.get("second").await.ok()?;
            let status = org.status?;
            let ready = conditions::is_true(&status.conditions, conditions::READY);
            (ready && status.members.is_some() && status.creations.in_flight == 0).then_some(status)
        })
        .await
        .unwrap();
    assert!(published.members >= Some(1), "at least org-away's account: {published:?}");
    assert!(published.leader.is_some() && published.index_refreshed_time.is_some(), "{published:?}");

    // A default-organization Tenant naming org-away's account: Stalled with a reason that
    // says which organization has it, and the account keeps its tags.
    let tags_before = second.list_tags_for_resource().resource_id(&account_id).send().await.unwrap().tags;
    let misplaced = format!(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: org-misplaced}}\nspec: {{accountId: \"{account_id}\"}}"
    );
    case.apply(&misplaced).await.unwrap();
    let misplaced = case.wait_for("org-misplaced", conditions::STALLED, "True", READY_WITHIN).await.unwrap();
    let stalled = conditions::find(&misplaced.status.unwrap().conditions, conditions::STALLED).cloned().unwrap();
    assert_eq!(stalled.reason, "AccountInAnotherOrganization", "{}", stalled.message);
    assert!(stalled.message.contains("Organization second"), "{}", stalled.message);
    let tags_after = second.list_tags_for_resource().resource_id(&account_id).send().await.unwrap().tags;
    assert_eq!(tags_after, tags_before, "the other organization's account is untouched");

    // A Tenant naming an Organization that does not exist: Stalled, and nothing in AWS.
    let before = case.sim.requests("organizations:CreateAccount").await.unwrap();
    case.apply(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: org-nowhere}\nspec: {organization: nowhere}",
    )
    .await
    .unwrap();
    let nowhere = case.wait_for("org-nowhere", conditions::STALLED, "True", READY_WITHIN).await.unwrap();
    let stalled = conditions::find(&nowhere.status.unwrap().conditions, conditions::STALLED).cloned().unwrap();
    assert_eq!(stalled.reason, "OrganizationNotFound");
    assert!(stalled.message.contains("Organization nowhere, which does not exist"), "{}", stalled.message);
    assert_eq!(case.sim.requests("organizations:CreateAccount").await.unwrap(), before, "no CreateAccount for it");
}

/// What a replica wrote to AWS through its management sessions (the second organization's:
/// the default one's are signed with its own key), by the session name it runs as.
async fn management_writes(case: &TestCase, replica: &str) -> u64 {
    let stats = case.sim.stats().await.unwrap();
    stats["writes_by_session"][replica].as_object().map_or(0, |ops| ops.values().filter_map(|n| n.as_u64()).sum())
}

/// Applies the Baseline `shared` with this template.
async fn apply_baseline(case: &TestCase, template: &str) {
    let baseline: Baseline = serde_json::from_value(json!({
        "apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "metadata": {"name": "shared"},
        "spec": {"template": template},
    }))
    .unwrap();
    Api::<Baseline>::all(case.client.clone())
        .patch("shared", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&baseline))
        .await
        .unwrap();
}

/// The holder of a Lease in Silo's namespace.
async fn holder(case: &TestCase, lease: &str) -> Option<String> {
    let leases = Api::<Lease>::namespaced(case.client.clone(), CONTROLLER_NAMESPACE);
    leases.get_opt(lease).await.ok().flatten()?.spec?.holder_identity
}

/// Two replicas share the two organizations (the default one and `second`), one each, under
/// their own Leases, and a Baseline's change reaches the Tenants of both. The one leading `second` is killed (SIGKILL) with a CreateAccount of
/// `second` in flight: the other takes `second` over once its Lease expires, finishes that
/// creation without making the account again, and makes the next. A third replica joins: the
/// survivor, now above its fair share, hands `second` over to it. From the simulator's
/// record of writes by role session (each replica's sessions carry its name), `second` had
/// one writer at a time: nobody but its leader wrote to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_organization_has_one_leader_as_replicas_die_and_join() {
    let case = test_case().await;
    // Duplicate emails are accepted, so an account made twice would be counted below.
    let knobs = json!({"enforce_trust_policies": false, "create_account_delay_seconds": 4, "unique_emails": false});
    case.sim.configure(knobs).await.unwrap();
    let second = case.sim.another_organization(SECOND, ROLE).await.unwrap();
    let spec =
        OrganizationSpec { management_role_arn: format!("arn:aws:iam::{SECOND}:role/{ROLE}"), ..Default::default() };
    Api::<Organization>::all(case.client.clone())
        .create(&PostParams::default(), &Organization::new("second", spec))
        .await
        .unwrap();
    let metrics: BTreeMap<&str, String> = ["replica-a", "replica-b", "replica-c"]
        .into_iter()
        .map(|name| (name, format!("127.0.0.1:{}", silo_testenv::process::free_port().unwrap())))
        .collect();
    let replica = |name: &'static str| {
        let spawn = Spawn { access_key: Some(name), identity: Some(name), ..Spawn::default() };
        case.spawn_controller_with(&["--metrics-address", &metrics[name]], &format!("{name}.log"), spawn).unwrap()
    };
    let scrape = |name: &str| {
        let url = format!("http://{}/metrics", metrics[name]);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let mut replicas = BTreeMap::from([("replica-a", replica("replica-a")), ("replica-b", replica("replica-b"))]);

    // One organization each.
    let (main, away) = case
        .eventually(READY_WITHIN, || async {
            let main = holder(&case, LEASE_NAME).await?;
            let away = holder(&case, "silo-org-second").await?;
            (main != away).then_some((main, away))
        })
        .await
        .expect("each replica leads one organization");
    let tenant = |name: &str, organization: &str| {
        format!("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec: {{{organization}}}")
    };
    // Both run one Baseline, whose rollout the main Lease's holder leads.
    apply_baseline(&case, BASELINE_TEMPLATE).await;
    case.apply(&tenant("shared-home", "baseline: {name: shared}")).await.unwrap();
    case.apply(&tenant("shared-away", "organization: second, baseline: {name: shared}")).await.unwrap();
    for name in ["shared-home", "shared-away"] {
        case.wait_for(name, conditions::READY, "True", READY_WITHIN).await.unwrap();
    }
    // A change to the Baseline reaches the Tenant of second too (the canary: the first by
    // name), whose replica learns of it from the Baseline's status, not from the main
    // replica's own wakes.
    apply_baseline(&case, &format!("{BASELINE_TEMPLATE}  Version:\n    Value: v2\n")).await;
    for name in ["shared-away", "shared-home"] {
        case.eventually(READY_WITHIN, || async {
            let tenant = case.tenants().get(name).await.ok()?;
            let stacks = tenant.status?.baseline?.stacks;
            stacks.iter().any(|s| s.outputs.get("Version").map(String::as_str) == Some("v2")).then_some(())
        })
        .await
        .unwrap_or_else(|err| panic!("{name} runs the Baseline's new revision: {err:#}"));
    }
    assert!(management_writes(&case, &away).await > 0, "{away} made shared-away's account");
    assert_eq!(management_writes(&case, &main).await, 0, "{main} never wrote to the organization it does not lead");

    // Kill the leader of `second` as soon as it has sent a CreateAccount there.
    case.apply(&tenant("shared-orphaned", "organization: second")).await.unwrap();
    case.eventually_every(READY_WITHIN, Duration::from_millis(50), || async {
        let stats = case.sim.stats().await.unwrap();
        stats["writes_by_session"][&away]["organizations:CreateAccount"].as_u64().unwrap_or(0) >= 2
    })
    .await
    .expect("the leader of second sends shared-orphaned's CreateAccount");
    replicas.get_mut(away.as_str()).unwrap().kill();
    let killed_wrote = management_writes(&case, &away).await;
    case.eventually(READY_WITHIN, || async { holder(&case, "silo-org-second").await.filter(|h| *h == main) })
        .await
        .expect("the survivor takes second over once its Lease expires");
    case.apply(&tenant("shared-after", "organization: second")).await.unwrap();
    for name in ["shared-orphaned", "shared-after"] {
        case.wait_for(name, conditions::READY, "True", READY_WITHIN).await.unwrap();
    }
    assert!(management_writes(&case, &main).await > 0, "{main} acts for second now");
    assert_eq!(management_writes(&case, &away).await, killed_wrote, "the killed replica wrote nothing more");

    // A third replica joins: second is handed over to it.
    replicas.insert("replica-c", replica("replica-c"));
    case.eventually(READY_WITHIN, || async { holder(&case, "silo-org-second").await.filter(|h| h == "replica-c") })
        .await
        .expect("the new replica takes second over");
    let main_wrote = management_writes(&case, &main).await;
    case.apply(&tenant("shared-joined", "organization: second")).await.unwrap();
    case.wait_for("shared-joined", conditions::READY, "True", READY_WITHIN).await.unwrap();
    assert!(management_writes(&case, "replica-c").await > 0, "replica-c acts for second");
    assert_eq!(
        management_writes(&case, &main).await,
        main_wrote,
        "{main} handed second over and stopped writing to it"
    );
    assert_eq!(holder(&case, LEASE_NAME).await.as_deref(), Some(main.as_str()), "the main Lease stayed");
    // The metrics of second: its leader's only, so dashboards and alerts never read a former
    // leader's last values.
    let (before, now) = (scrape(&main).await, scrape("replica-c").await);
    assert!(before.contains("silo_organization_leader{organization=\"second\"} 0"), "{before}");
    assert!(!before.contains("silo_creation_queue_length{organization=\"second\"}"), "{before}");
    assert!(now.contains("silo_organization_leader{organization=\"second\"} 1"), "{now}");
    assert!(now.contains("silo_creation_queue_length{organization=\"second\"}"), "{now}");
    let created_for_second = "operation=\"CreateAccount\",organization=\"second\"";
    assert!(now.contains(created_for_second), "replica-c counts its requests for second: {now}");
    for (_, mut process) in replicas {
        process.kill();
    }

    // One account per Tenant, in its organization (once listings show them all).
    let away = ["shared-away", "shared-orphaned", "shared-after", "shared-joined"];
    let in_second = case
        .eventually(READY_WITHIN, || async {
            let in_second = emails(&second).await;
            away.iter().all(|name| in_second.contains(&format!("aws+{name}@example.com"))).then_some(in_second)
        })
        .await
        .expect("the second organization lists every account made there");
    for name in away {
        let email = format!("aws+{name}@example.com");
        assert_eq!(in_second.iter().filter(|e| **e == email).count(), 1, "one account for {name}: {in_second:?}");
    }
    let counts = case.sim.accounts_by_email().await.unwrap();
    assert_eq!(counts.get("aws+shared-home@example.com"), Some(&1));
    assert_eq!(case.accounts_created().await, 5, "one CreateAccount answered per Tenant");
}

/// Runs `silo <args>` to its end against the environment, and fails unless it exits 0: its
/// standard output.
async fn silo(case: &TestCase, args: &[&str]) -> String {
    let mut command = std::process::Command::new(silo_binary().unwrap());
    command.args(args).env("KUBECONFIG", &case.info.kubeconfig).envs(case.sim.env());
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "silo {args:?} exited with {}: {stderr}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Tenants of a `---` separated YAML stream.
fn tenants_of(yaml: &str) -> Vec<Tenant> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect::<Vec<Option<Tenant>>>()
        .into_iter()
        .flatten()
        .collect()
}

/// `silo orphans` and `silo import` with `--organization second` read the second
/// organization, through the management role its Organization names, and nothing else: an
/// account made outside Silo in the second organization's tenant OU root is listed and
/// imported (the Tenant names `spec.organization: second`); one made outside Silo in the
/// default organization is not, and the default organization's import does not see the
/// second's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_orphans_read_one_organization() {
    let case = test_case().await;
    // Listings show new accounts at once: the commands read one listing, and this test is
    // about which organization they read, not about when AWS lists an account.
    let knobs = json!({"enforce_trust_policies": false, "list_accounts_lag_seconds": 0});
    case.sim.configure(knobs).await.unwrap();
    let second = case.sim.another_organization(SECOND, ROLE).await.unwrap();
    let root = second.list_roots().send().await.unwrap().roots()[0].id().unwrap().to_string();
    let ou = second.create_organizational_unit().parent_id(&root).name("Tenants").send().await.unwrap();
    let ou = ou.organizational_unit().and_then(|ou| ou.id()).unwrap().to_string();
    let away = SimClient::create_account_in(&second, "legacy-away", "legacy-away@example.com", &[]).await.unwrap();
    second.move_account().account_id(&away).source_parent_id(&root).destination_parent_id(&ou).send().await.unwrap();
    let home = case.sim.create_account("legacy-home", "legacy-home@example.com", &[]).await.unwrap();
    let spec = OrganizationSpec {
        management_role_arn: format!("arn:aws:iam::{SECOND}:role/{ROLE}"),
        tenant_ou_roots: vec!["/Tenants".into()],
        ..Default::default()
    };
    Api::<Organization>::all(case.client.clone())
        .create(&PostParams::default(), &Organization::new("second", spec))
        .await
        .unwrap();

    let orphans: Vec<serde_json::Value> =
        serde_json::from_str(&silo(&case, &["orphans", "--organization", "second", "-o", "json"]).await).unwrap();
    let listed: Vec<(&str, &str)> =
        orphans.iter().map(|o| (o["accountId"].as_str().unwrap(), o["kind"].as_str().unwrap())).collect();
    assert_eq!(listed, vec![(away.as_str(), "untracked_in_tenant_ou")], "only the second organization's orphan");

    let imported = tenants_of(&silo(&case, &["import", "--organization", "second"]).await);
    let adopted: Vec<(Option<&str>, Option<&str>)> =
        imported.iter().map(|t| (t.spec.account_id.as_deref(), t.spec.organization.as_deref())).collect();
    assert_eq!(adopted, vec![(Some(away.as_str()), Some("second"))], "the second organization's account only");

    let imported = tenants_of(&silo(&case, &["import"]).await);
    let adopted: Vec<&str> = imported.iter().filter_map(|t| t.spec.account_id.as_deref()).collect();
    assert!(adopted.contains(&home.as_str()), "the default organization's import sees its account: {adopted:?}");
    assert!(!adopted.contains(&away.as_str()), "and not the second's: {adopted:?}");
    assert!(imported.iter().all(|t| t.spec.organization.is_none()), "default organization Tenants name none");
}
