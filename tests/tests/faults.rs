//! Silo under AWS weather and hard crashes: slow creations, heavy throttling, and a
//! controller process killed with SIGKILL over and over during a rollout.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use rand::Rng;
use serde_json::{Value, json};
use silo::{Tenant, conditions};
use silo_testenv::{CONTROLLER_NAMESPACE, LEASE_NAME, SimClient, Spawn, TenantFixture, TestCase, test_case};

fn tenant_yaml(name: &str) -> String {
    format!("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec: {{}}")
}

/// How many accounts of the organization have each email.
async fn accounts_by_email(sim: &SimClient) -> BTreeMap<String, usize> {
    let org = sim.organizations();
    let mut counts = BTreeMap::new();
    let mut token = None;
    loop {
        let page = org.list_accounts().set_next_token(token).send().await.expect("ListAccounts");
        for account in page.accounts() {
            *counts.entry(account.email().unwrap_or_default().to_string()).or_default() += 1;
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return counts;
        }
    }
}

fn ready(tenant: &Tenant) -> bool {
    tenant.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_creation_does_not_delay_another_tenant() {
    let mut case = test_case().await;
    case.sim.configure(json!({"create_account_delays": {"^aws\\+slow@": 30}})).await.unwrap();
    case.start_controller(TestCase::config());
    case.apply(&tenant_yaml("slow")).await.unwrap();
    case.wait_for("slow", conditions::RECONCILING, "True", Duration::from_secs(60)).await.unwrap();
    let started = Instant::now();
    case.apply(&tenant_yaml("fast")).await.unwrap();

    case.wait_for("fast", conditions::READY, "True", Duration::from_secs(60)).await.unwrap();
    let slow = case.tenants().get("slow").await.unwrap();
    assert!(
        !ready(&slow),
        "fast was Ready after {:?} while slow, asked first, is still being created",
        started.elapsed()
    );
    assert_eq!(
        conditions::find(&slow.status.unwrap().conditions, conditions::READY).unwrap().reason,
        "CreatingAccount"
    );
    case.wait_for("slow", conditions::READY, "True", Duration::from_secs(120)).await.unwrap();
}

/// Every tenant becomes Ready under throttling and none is ever Stalled: a watch of the
/// Tenants sees every status written, so even a Stalled that lasted one write fails the test.
/// The simulator accepts duplicate emails, so a second account made for a tenant would be
/// counted below rather than refused by the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_throttling_is_weather_not_failure() {
    let mut case = test_case().await;
    case.sim
        .configure(json!({"throttle_rate": 0.3, "create_account_delay_seconds": 2, "unique_emails": false}))
        .await
        .unwrap();
    case.raise_account_quota(100).await;
    case.start_controller(TestCase::config());
    let names: Vec<String> = (0..10).map(|i| format!("storm-{i:02}")).collect();
    let stalled = case.watch_stalled(&names).await.unwrap();
    for name in &names {
        case.apply(&tenant_yaml(name)).await.unwrap();
    }
    case.wait_for_all(&names, conditions::READY, "True", Duration::from_secs(300)).await.unwrap();
    assert_eq!(stalled.transitions().await.unwrap(), Vec::<String>::new(), "throttling must never show as Stalled");
    let stats = case.sim.stats().await.unwrap();
    let throttled: u64 = stats["throttled"].as_object().unwrap().values().filter_map(Value::as_u64).sum();
    let requests: u64 = stats["requests"].as_object().unwrap().values().filter_map(Value::as_u64).sum();
    eprintln!("throttled {throttled} of {requests} AWS requests; every tenant Ready, none Stalled");
    // About 35 requests at a rate of 0.3: 4 throttled happened (a 2% tail), so the check is
    // that the layer throttled at all, at a rate no unlucky draw misses (1 in 5,000).
    assert!(throttled > 1 && throttled * 20 >= requests, "the fault layer really throttled: {stats}");
    let counts = accounts_by_email(&case.sim).await;
    for name in &names {
        assert_eq!(counts.get(&format!("aws+{name}@example.com")), Some(&1), "one account for {name}");
    }
}

/// The rollout of 20 tenants with the controller as a separate process, killed with SIGKILL
/// at least 20 times: at random moments, and right after AWS created an account but before
/// the controller could record it (the simulator holds CreateAccount's answer back).
///
/// The simulator accepts duplicate emails here: AWS's own refusal would hide a duplicate
/// that Silo tried to create, and Silo must not rely on it. Leader election is off so every
/// kill lands on a process that is acting, not one waiting for the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_anywhere_during_a_rollout_never_duplicates_an_account() {
    const TENANTS: usize = 20;
    const KILLS: usize = 24;
    const AFTER_CREATE_KILLS: usize = 8;

    let case = test_case().await;
    case.sim
        .configure(json!({
            "create_account_delay_seconds": 3,
            "response_delays_ms": {"organizations:CreateAccount": 1500},
            "unique_emails": false,
        }))
        .await
        .unwrap();
    case.raise_account_quota(200).await;
    let names: Vec<String> = (0..TENANTS).map(|i| format!("crash-{i:02}")).collect();
    for name in &names {
        case.apply(&tenant_yaml(name)).await.unwrap();
    }

    let mut kills = 0;
    let mut after_create = 0;
    let mut rng = rand::rng();
    while kills < KILLS {
        let mut controller = case
            .spawn_controller(&["--concurrency", "4", "--leader-election", "false"], "crash-controller.log")
            .unwrap();
        let created_before = case.accounts_created().await;
        if after_create < AFTER_CREATE_KILLS {
            // Kill as soon as AWS has processed a CreateAccount: its answer is still held back,
            // so the controller cannot have written the request id. Within 30 s, else nothing
            // is left to create and the kill lands at that moment instead.
            if case.an_account_beyond(created_before, &controller).await {
                after_create += 1;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..2500))).await;
        }
        controller.kill();
        kills += 1;
    }

    let mut controller =
        case.spawn_controller(&["--concurrency", "4", "--leader-election", "false"], "crash-controller.log").unwrap();
    case.wait_for_all(&names, conditions::READY, "True", Duration::from_secs(300))
        .await
        .expect("every tenant Ready after the final restart");
    controller.kill();

    let counts = accounts_by_email(&case.sim).await;
    for name in &names {
        assert_eq!(counts.get(&format!("aws+{name}@example.com")), Some(&1), "exactly one account for {name}");
    }
    assert_eq!(counts.values().sum::<usize>(), TENANTS + 1, "one account per tenant plus the management account");
    for tenant in case.tenants().list(&Default::default()).await.unwrap().items {
        assert!(tenant.status.unwrap().account_id.is_some());
    }
    eprintln!(
        "{kills} SIGKILLs, {after_create} of them after CreateAccount was processed and before its answer arrived"
    );
    assert!(after_create >= 5, "enough kills hit the window between CreateAccount and the status write");
}

/// Two `silo run` processes: only the one holding the Lease writes to AWS (the simulator
/// counts each process's writes by the access key it signs with); when it dies, the other
/// takes over and writes. The simulator accepts duplicate emails, so an account made twice
/// (by both processes, or again after the takeover) would be counted, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_a_follower_takes_over() {
    let case = test_case().await;
    case.sim.configure(json!({"unique_emails": false})).await.unwrap();
    let flags = ["--concurrency", "2"];
    let as_replica = |key| Spawn { access_key: Some(key), identity: Some(key), ..Spawn::default() };
    let mut first = case.spawn_controller_with(&flags, "leader-1.log", as_replica("replica-1")).unwrap();
    let leaders = |log: &std::path::Path| {
        std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains("became the leader")).count()
    };
    case.eventually(Duration::from_secs(60), || async { leaders(&first.log) == 1 })
        .await
        .expect("the first process leads");
    let mut second = case.spawn_controller_with(&flags, "leader-2.log", as_replica("replica-2")).unwrap();
    case.apply(&tenant_yaml("led-1")).await.unwrap();
    case.wait_for("led-1", conditions::READY, "True", Duration::from_secs(90)).await.unwrap();

    assert_eq!(leaders(&first.log) + leaders(&second.log), 1, "exactly one process leads");
    assert!(writes_by(&case.sim, "replica-1").await > 0, "the leader created led-1's account");
    assert_eq!(
        writes_by(&case.sim, "replica-2").await,
        0,
        "the follower wrote to AWS: {}",
        case.sim.stats().await.unwrap()["writes_by_access_key"]
    );
    first.kill();
    let leader_writes = writes_by(&case.sim, "replica-1").await;
    case.apply(&tenant_yaml("led-2")).await.unwrap();
    case.wait_for("led-2", conditions::READY, "True", Duration::from_secs(90)).await.unwrap();
    second.check_running().unwrap();
    assert_eq!(leaders(&second.log), 1, "the follower took over");
    assert!(writes_by(&case.sim, "replica-2").await > 0, "the new leader created led-2's account");
    assert_eq!(writes_by(&case.sim, "replica-1").await, leader_writes, "the killed leader wrote nothing more");
    second.kill();
    let counts = accounts_by_email(&case.sim).await;
    assert_eq!(counts.get("aws+led-1@example.com"), Some(&1));
    assert_eq!(counts.get("aws+led-2@example.com"), Some(&1));
}

/// AWS writes a replica made, counted by the simulator by access key.
async fn writes_by(sim: &SimClient, access_key: &str) -> u64 {
    let stats = sim.stats().await.unwrap();
    stats["writes_by_access_key"][access_key].as_object().map_or(0, |ops| ops.values().filter_map(Value::as_u64).sum())
}

/// A leader cut off from the API server cannot renew its Lease, nor learn that it lost it,
/// while a follower takes over once the Lease expires. The cut-off leader stops writing to
/// AWS before that: the simulator counts each replica's writes by its access key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_writing_before_another_takes_over() {
    const LEASE_SECONDS: u64 = 4;
    let case = test_case().await;
    // Duplicate emails are accepted, so an account made by both replicas would be counted below.
    case.sim.configure(json!({"create_account_delay_seconds": 8, "unique_emails": false})).await.unwrap();
    let kubeconfig = std::fs::read_to_string(&case.info.kubeconfig).unwrap();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: https://")).unwrap();
    let proxy = silo_testenv::proxy::Proxy::start(server.parse().unwrap()).await.unwrap();
    let through_proxy = case.kubeconfig_via(proxy.address, "kubeconfig-through-proxy").unwrap();
    let lease = LEASE_SECONDS.to_string();
    let flags = ["--lease-seconds", lease.as_str(), "--create-missing-ous"];
    let leader = Spawn { kubeconfig: Some(&through_proxy), access_key: Some("replica-a"), identity: Some("replica-a") };
    let mut first = case.spawn_controller_with(&flags, "cut-off-leader.log", leader).unwrap();
    case.eventually(Duration::from_secs(60), || async {
        std::fs::read_to_string(&first.log).unwrap_or_default().contains("became the leader")
    })
    .await
    .expect("the first replica leads");
    let follower = Spawn { access_key: Some("replica-b"), identity: Some("replica-b"), ..Spawn::default() };
    let mut second = case.spawn_controller_with(&flags, "follower.log", follower).unwrap();

    let names: Vec<String> = (0..6).map(|i| format!("fenced-{i}")).collect();
    for name in &names {
        case.create(&TenantFixture::named(name).in_ou("/Tenants")).await.unwrap();
    }
    // Cut the leader off as soon as it has sent a CreateAccount: its creations end while it
    // is cut off, and the moves into /Tenants are writes it must not make.
    case.eventually_every(Duration::from_secs(60), Duration::from_millis(50), || async {
        case.sim.stats().await.unwrap()["by_access_key"]["replica-a"]["organizations:CreateAccount"]
            .as_u64()
            .unwrap_or(0)
            > 0
    })
    .await
    .expect("the leader sends a CreateAccount");
    proxy.cut();
    // Once the follower holds the Lease, the leader must have stopped writing: its writes are
    // counted from the takeover on, on every look below.
    let leases = Api::<Lease>::namespaced(case.client.clone(), CONTROLLER_NAMESPACE);
    case.eventually(Duration::from_secs(60), || async {
        let holder = leases.get(LEASE_NAME).await?.spec.and_then(|s| s.holder_identity);
        anyhow::ensure!(holder.as_deref() == Some("replica-b"), "the Lease is held by {holder:?}");
        Ok(())
    })
    .await
    .expect("the follower takes the Lease once it expires");
    let leader_writes = writes_by(&case.sim, "replica-a").await;
    let leader_wrote_nothing_more = || async {
        let writes = writes_by(&case.sim, "replica-a").await;
        anyhow::ensure!(
            writes == leader_writes,
            "the cut-off leader wrote to AWS after another replica could lead ({leader_writes} -> {writes}): {}",
            case.sim.stats().await.unwrap()["writes_by_access_key"]
        );
        Ok(())
    };

    case.eventually(Duration::from_secs(180), || async {
        leader_wrote_nothing_more().await.unwrap_or_else(|err| panic!("{err:#}"));
        case.tenants().list(&Default::default()).await.unwrap().items.iter().filter(|t| ready(t)).count() == names.len()
    })
    .await
    .expect("the follower finishes the rollout");
    // The cut-off leader's creations end (8 s) and its tenants are woken: it still writes nothing.
    case.consistently(Duration::from_secs(5), leader_wrote_nothing_more).await.unwrap();
    assert!(writes_by(&case.sim, "replica-b").await > 0, "the follower took over");
    first.kill();
    second.kill();
    let counts = accounts_by_email(&case.sim).await;
    for name in &names {
        assert_eq!(counts.get(&format!("aws+{name}@example.com")), Some(&1), "exactly one account for {name}");
    }
}
