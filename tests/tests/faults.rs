//! Silo under AWS weather and hard crashes: slow creations, heavy throttling, and a
//! controller process killed with SIGKILL over and over during a rollout.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rand::Rng;
use serde_json::{Value, json};
use silo::{Tenant, conditions};
use silo_testenv::{SimClient, Spawn, TenantFixture, TestCase, test_case};

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

fn stalled(tenant: &Tenant) -> bool {
    tenant.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::STALLED))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_throttling_is_weather_not_failure() {
    let mut case = test_case().await;
    case.sim.configure(json!({"throttle_rate": 0.3, "create_account_delay_seconds": 2})).await.unwrap();
    case.start_controller(TestCase::config());
    let names: Vec<String> = (0..10).map(|i| format!("storm-{i:02}")).collect();
    for name in &names {
        case.apply(&tenant_yaml(name)).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let tenants = case.tenants().list(&Default::default()).await.unwrap().items;
        let stalled: Vec<_> = tenants.iter().filter(|t| stalled(t)).map(|t| t.status.clone()).collect();
        assert!(stalled.is_empty(), "throttling must never show as Stalled: {stalled:?}");
        if tenants.iter().filter(|t| ready(t)).count() == names.len() {
            break;
        }
        assert!(Instant::now() < deadline, "not every tenant was Ready under throttling");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = case.sim.stats().await.unwrap();
    let throttled: u64 = stats["throttled"].as_object().unwrap().values().filter_map(Value::as_u64).sum();
    let requests: u64 = stats["requests"].as_object().unwrap().values().filter_map(Value::as_u64).sum();
    eprintln!("throttled {throttled} of {requests} AWS requests; every tenant Ready, none Stalled");
    assert!(throttled > 0 && throttled * 100 >= requests * 15, "the fault layer really throttled: {stats}");
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
        let created_before = case.sim.stats().await.unwrap()["accounts_created"].as_u64().unwrap_or(0);
        if after_create < AFTER_CREATE_KILLS {
            // Kill as soon as AWS has processed a CreateAccount: its answer is still held back,
            // so the controller cannot have written the request id.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let stats = case.sim.stats().await.unwrap();
                if stats["accounts_created"].as_u64().unwrap_or(0) > created_before {
                    after_create += 1;
                    break;
                }
                if Instant::now() > deadline {
                    break; // nothing left to create; kill at a random moment instead
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..2500))).await;
        }
        controller.kill();
        kills += 1;
    }

    let mut controller =
        case.spawn_controller(&["--concurrency", "4", "--leader-election", "false"], "crash-controller.log").unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        controller.check_running().unwrap();
        let tenants = case.tenants().list(&Default::default()).await.unwrap().items;
        if tenants.iter().filter(|t| ready(t)).count() == TENANTS {
            break;
        }
        assert!(Instant::now() < deadline, "not every tenant was Ready after the final restart");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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

/// Two `silo run` processes: only the one holding the Lease acts; when it dies, the other
/// takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_a_follower_takes_over() {
    let case = test_case().await;
    let mut first = case.spawn_controller(&["--concurrency", "2"], "leader-1.log").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut second = case.spawn_controller(&["--concurrency", "2"], "leader-2.log").unwrap();
    case.apply(&tenant_yaml("led-1")).await.unwrap();
    case.wait_for("led-1", conditions::READY, "True", Duration::from_secs(90)).await.unwrap();

    let leaders = |log: &std::path::Path| {
        std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains("became the leader")).count()
    };
    assert_eq!(leaders(&first.log) + leaders(&second.log), 1, "exactly one process leads");
    let (leader, follower) =
        if leaders(&first.log) == 1 { (&mut first, &mut second) } else { (&mut second, &mut first) };
    leader.kill();
    case.apply(&tenant_yaml("led-2")).await.unwrap();
    case.wait_for("led-2", conditions::READY, "True", Duration::from_secs(90)).await.unwrap();
    follower.check_running().unwrap();
    assert_eq!(leaders(&follower.log), 1, "the follower took over");
    follower.kill();
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
    case.sim.configure(json!({"create_account_delay_seconds": 8})).await.unwrap();
    let kubeconfig = std::fs::read_to_string(&case.info.kubeconfig).unwrap();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: https://")).unwrap();
    let proxy = silo_testenv::proxy::Proxy::start(server.parse().unwrap()).await.unwrap();
    let through_proxy = case.kubeconfig_via(proxy.address, "kubeconfig-through-proxy").unwrap();
    let lease = LEASE_SECONDS.to_string();
    let flags = ["--lease-seconds", lease.as_str(), "--create-missing-ous"];
    let leader = Spawn { kubeconfig: Some(&through_proxy), access_key: Some("replica-a"), identity: Some("replica-a") };
    let mut first = case.spawn_controller_with(&flags, "cut-off-leader.log", leader).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&first.log).unwrap_or_default().contains("became the leader") {
        first.check_running().unwrap();
        assert!(Instant::now() < deadline, "the first replica never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let follower = Spawn { access_key: Some("replica-b"), identity: Some("replica-b"), ..Spawn::default() };
    let mut second = case.spawn_controller_with(&flags, "follower.log", follower).unwrap();

    let names: Vec<String> = (0..6).map(|i| format!("fenced-{i}")).collect();
    for name in &names {
        case.create(&TenantFixture::named(name).in_ou("/Tenants")).await.unwrap();
    }
    // Cut the leader off as soon as it has sent a CreateAccount: its creations end while it
    // is cut off, and the moves into /Tenants are writes it must not make.
    let deadline = Instant::now() + Duration::from_secs(60);
    while case.sim.stats().await.unwrap()["by_access_key"]["replica-a"]["organizations:CreateAccount"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the leader sent no CreateAccount");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.cut();
    // Past the point where the follower may take over, the leader must have stopped writing.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;
    let leader_writes = writes_by(&case.sim, "replica-a").await;

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        second.check_running().unwrap();
        let tenants = case.tenants().list(&Default::default()).await.unwrap().items;
        if tenants.iter().filter(|t| ready(t)).count() == names.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the follower did not finish the rollout");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Give the cut-off leader's creations time to end (8 s) and its tenants time to be woken.
    tokio::time::sleep(Duration::from_secs(5)).await;
    first.check_running().unwrap();
    assert_eq!(
        writes_by(&case.sim, "replica-a").await,
        leader_writes,
        "the cut-off leader wrote to AWS after another replica could lead: {}",
        case.sim.stats().await.unwrap()["writes_by_access_key"]
    );
    assert!(writes_by(&case.sim, "replica-b").await > 0, "the follower took over");
    first.kill();
    second.kill();
    let counts = accounts_by_email(&case.sim).await;
    for name in &names {
        assert_eq!(counts.get(&format!("aws+{name}@example.com")), Some(&1), "exactly one account for {name}");
    }
}
