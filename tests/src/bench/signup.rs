//! The signup scenario: Tenants arriving as a SaaS's signups bring them, with a warm
//! AccountPool and without one, in an AWS shaped like the real one, scaled down but in
//! proportion: a CreateAccount takes D, a new account's role cannot be assumed for a while
//! after it (IAM propagation), and each stack operation takes S.
//!
//! Each run (pool on, then pool off; the same arrivals) has two phases:
//! - **steady**: `BENCH_SIGNUP_TENANTS` Tenants arriving at random (a Poisson process) at
//!   `BENCH_SIGNUP_LOAD` times the rate the pool refills at (5 creations per D);
//! - **burst**: 3 x the pool size applied at once, once the pool is full again.
//!
//! Each Tenant's time is from just before its apply to the moment a watch sees it Ready.
//! Organizations requests per Tenant include the pool's refills (the pool's accounts are made
//! for Tenants); the pool's first fill before the steady phase is reported apart.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    runtime::watcher::{self, Event},
};
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use super::Bench;
use crate::{
    fleet::{self, Counters, of_service, sum_service},
    report::{Table, f, series, vline},
    setup::{Profile, Scenario},
};

const POOL: &str = "signup";
const POOL_OU: &str = "/Tenants/Pool";
/// AWS runs five creations at once per organization: the pool refills five per D.
const CREATIONS_AT_ONCE: f64 = 5.0;
/// The target's allowance beyond one stack operation for Silo's own work.
const SILO_ALLOWANCE_SECONDS: f64 = 10.0;

fn pools(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("silo.dev", "v1alpha1", "AccountPool");
    Api::all_with(client.clone(), &ApiResource::from_gvk_with_plural(&gvk, "accountpools"))
}

/// When each Tenant was first seen Ready, from a watch.
#[derive(Clone, Default)]
struct ReadyTimes(Arc<Mutex<BTreeMap<String, Instant>>>);

impl ReadyTimes {
    fn watch(&self, api: Api<DynamicObject>) -> tokio::task::JoinHandle<()> {
        let seen = self.0.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                if let Ok(Event::Apply(tenant) | Event::InitApply(tenant)) = event
                    && fleet::is_ready(&tenant)
                {
                    seen.lock().expect("ready times").entry(tenant.name_any()).or_insert_with(Instant::now);
                }
            }
        })
    }

    fn get(&self, name: &str) -> Option<Instant> {
        self.0.lock().expect("ready times").get(name).copied()
    }
}

/// One phase of one run, measured.
struct Phase {
    /// (name, seconds from the phase's start to the apply, seconds from apply to Ready, from the pool).
    tenants: Vec<(String, f64, f64, bool)>,
    /// Seconds from the phase's start until every Tenant was Ready.
    all_ready: f64,
    requests: BTreeMap<String, u64>,
    throttled: BTreeMap<String, u64>,
    /// Seconds from the phase's start until the pool was full again (pool on).
    refilled: Option<f64>,
}

impl Phase {
    fn latencies(&self, from_pool: Option<bool>) -> Vec<f64> {
        let mut l: Vec<f64> = self.tenants.iter().filter(|t| from_pool.is_none_or(|p| t.3 == p)).map(|t| t.2).collect();
        l.sort_by(f64::total_cmp);
        l
    }

    fn org_requests_per_tenant(&self) -> f64 {
        sum_service(&self.requests, "organizations") as f64 / self.tenants.len().max(1) as f64
    }

    fn json(&self) -> Value {
        let stats = |from_pool| {
            let l = self.latencies(from_pool);
            json!({"count": l.len(), "p50": percentile(&l, 0.5), "p95": percentile(&l, 0.95), "max": l.last()})
        };
        json!({
            "tenants": self.tenants.len(),
            "apply_to_ready_seconds": stats(None),
            "from_pool": stats(Some(true)),
            "created": stats(Some(false)),
            "all_ready_seconds": self.all_ready,
            "pool_full_again_seconds": self.refilled,
            "organizations_requests_per_tenant": self.org_requests_per_tenant(),
            "organizations_requests_per_tenant_by_operation":
                super::per_tenant(&of_service(&self.requests, "organizations"), self.tenants.len()),
            "requests_by_operation": self.requests,
            "throttled_by_operation": self.throttled,
            "per_tenant": self.tenants.iter().map(|(name, at, took, pool)| json!({"name": name, "applied_at": at, "apply_to_ready_seconds": took, "from_pool": pool})).collect::<Vec<_>>(),
        })
    }
}

/// The `q` quantile of sorted `values` (nearest rank); `None` when empty.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

fn show(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| f(v, 1))
}

impl Bench {
    pub async fn signup(&mut self) -> Result<()> {
        let p = self.p.clone();
        let size = p.signup_pool_size;
        let (d, s) = (p.signup_create_seconds, p.signup_stack_seconds);
        let rate = p.signup_load * CREATIONS_AT_ONCE / d;
        // The same arrivals for both runs.
        let mut rng = rand::rngs::StdRng::seed_from_u64(p.signup_seed);
        let mut at = 0.0;
        let arrivals: Vec<f64> = (0..p.signup_tenants)
            .map(|_| {
                at += -(1.0 - rng.random::<f64>()).ln() / rate;
                at
            })
            .collect();

        let mut runs = BTreeMap::new();
        let mut args = vec![];
        for pool_on in [true, false] {
            let (run, run_args) = self.signup_run(pool_on, &arrivals).await?;
            runs.insert(pool_on, run);
            args = run_args;
        }
        let (on, off) = (&runs[&true], &runs[&false]);
        let target = s + SILO_ALLOWANCE_SECONDS;
        let slots = CREATIONS_AT_ONCE;
        // A bootstrapped pool account is ready after its role and its stack too.
        let bootstrap = if p.signup_pool_baseline { p.signup_role_seconds + s } else { 0.0 };
        let refill_bound = ((2 * size) as f64 / slots).ceil() * d + (size as f64 / slots).ceil() * d + bootstrap;

        let mut table = Table::new(
            format!(
                "signup: pool of {size} (its Baseline made in advance: {}), D = {d} s, role after {} s, S = {s} s; {} steady arrivals at {:.3}/s, a burst of {}",
                p.signup_pool_baseline,
                p.signup_role_seconds,
                p.signup_tenants,
                rate,
                3 * size
            ),
            &["apply to Ready (s)", "pool on", "pool off"],
        );
        for (label, phase) in [("steady", 0), ("burst", 1)] {
            let (a, b) = (&on.phases[phase], &off.phases[phase]);
            for (q, name) in [(0.5, "p50"), (0.95, "p95")] {
                table.row(vec![
                    format!("{label} {name}"),
                    show(percentile(&a.latencies(None), q)),
                    show(percentile(&b.latencies(None), q)),
                ]);
            }
            table.row(vec![
                format!("{label} max"),
                show(a.latencies(None).last().copied()),
                show(b.latencies(None).last().copied()),
            ]);
            table.row(vec![
                format!("{label}: Organizations requests per tenant"),
                f(a.org_requests_per_tenant(), 2),
                f(b.org_requests_per_tenant(), 2),
            ]);
            table.row(vec![
                format!("{label}: Tenants served from the pool"),
                a.latencies(Some(true)).len().to_string(),
                b.latencies(Some(true)).len().to_string(),
            ]);
        }
        let burst = &on.phases[1];
        table
            .row(vec![format!("steady p95 target (S + {SILO_ALLOWANCE_SECONDS} s)"), f(target, 1), String::new()])
            .row(vec!["burst: pool full again (s from the burst)".into(), show(burst.refilled), String::new()])
            .row(vec![
                "  bound: ceil(2 size / 5) D (the created Tenants) + ceil(size / 5) D (+ role + S with the Baseline)"
                    .into(),
                f(refill_bound, 1),
                String::new(),
            ])
            .row(vec!["pool's first fill (s)".into(), show(on.first_fill), String::new()]);
        println!("{}", table.render());

        let steady_p95 = percentile(&on.phases[0].latencies(None), 0.95);
        let refused: u64 = runs
            .values()
            .flat_map(|r| &r.phases)
            .map(|ph| ph.throttled.get("organizations:CreateAccount").copied().unwrap_or(0))
            .sum();
        self.summary.push(format!(
            "signup: steady p95 {} s with the pool ({} s without; target {target:.0} s), burst p95 {} s with ({} s without), pool full again {} s after the burst (bound {refill_bound:.0} s)",
            show(steady_p95),
            show(percentile(&off.phases[0].latencies(None), 0.95)),
            show(percentile(&burst.latencies(None), 0.95)),
            show(percentile(&off.phases[1].latencies(None), 0.95)),
            show(burst.refilled),
        ));
        let run_json = |run: &Run| {
            json!({
                "pool_first_fill_seconds": run.first_fill,
                "steady": run.phases[0].json(),
                "burst": run.phases[1].json(),
            })
        };
        let results = json!({
            "pool_size": size,
            "create_seconds": d,
            "role_unassumable_seconds": p.signup_role_seconds,
            "stack_seconds": s,
            "pool_baseline": p.signup_pool_baseline,
            "arrival_rate_per_second": rate,
            "arrival_rate_note": "BENCH_SIGNUP_LOAD times the refill rate, 5 creations per D",
            "steady_tenants": p.signup_tenants,
            "burst_tenants": 3 * size,
            "measured": "per Tenant, from just before its server-side apply to the moment a watch saw Ready=True",
            "requests_note": "Organizations requests of a phase, the pool's refills and placements included, divided by the phase's Tenants",
            "pool_on": run_json(on),
            "pool_off": run_json(off),
            "target_steady_p95_seconds": target,
            "steady_p95_within_target": steady_p95.is_some_and(|p95| p95 <= target),
            "refill_bound_seconds": refill_bound,
            "refill_bound_formula": "ceil(2 size / 5) D (the burst's created Tenants, ahead of the refill) + ceil(size / 5) D, + the role's propagation + S when the pool makes its Baseline in advance",
            "create_account_refused": refused,
        });
        // Each Tenant's time, in arrival order (steady, then burst).
        let points = |run: &Run| -> Vec<[f64; 2]> {
            run.phases.iter().flat_map(|ph| &ph.tenants).enumerate().map(|(i, t)| [i as f64, t.2]).collect()
        };
        let steady_n = p.signup_tenants as f64;
        let plot_spec = json!({
            "title": format!("signup: pool of {size}, D = {d} s, S = {s} s: apply to Ready per Tenant"),
            "xlabel": format!("Tenant, in arrival order ({} steady, then a burst of {})", p.signup_tenants, 3 * size),
            "ylabel": "seconds from apply to Ready",
            "series": [
                series("pool on", &points(on), "points", "left"),
                series("pool off", &points(off), "points", "left"),
                series(&format!("target S + {SILO_ALLOWANCE_SECONDS} s"), &[[0.0, target], [steady_n + (3 * size) as f64, target]], "dashed", "left"),
            ],
            "vlines": [vline(steady_n - 0.5, "the burst")],
        });
        self.write(Scenario::Signup, &args, results, plot_spec).await
    }

    /// One run: the pool (when on) filled, the steady arrivals, then the burst.
    async fn signup_run(&mut self, pool_on: bool, arrivals: &[f64]) -> Result<(Run, Vec<String>)> {
        let p = self.p.clone();
        let size = p.signup_pool_size;
        let label = if pool_on { "pool on" } else { "pool off" };
        self.reset_world().await?;
        fleet::delete_all(&pools(&self.client), 1).await.context("delete the AccountPools")?;
        let mut config = p.quotas();
        config["create_account_delay_seconds"] = json!(p.signup_create_seconds);
        config["unassumable_roles_seconds"] = json!(p.signup_role_seconds);
        config["stack_operation_seconds"] = json!(p.signup_stack_seconds);
        self.configure(config).await?;
        fleet::create_ou(&self.sim).await?;
        // Trusted access for Account Management: a claimed account is renamed to the Tenant's.
        let org = self.sim.organizations();
        org.enable_aws_service_access().service_principal("account.amazonaws.com").send().await?;
        let baseline = fleet::BARE_BASELINE;
        fleet::apply_all(&fleet::baselines(&self.client), vec![fleet::baseline(baseline, &["us-east-1"])], 1).await?;

        let mut args = p.user_flags();
        if flag_missing(&args, "--create-missing-ous") {
            args.push("--create-missing-ous".into());
        }
        let log = format!("signup-{}.silo.log", if pool_on { "pool" } else { "nopool" });
        let mut controller = self.start_controller(&args, &log).await?;
        let args = controller.args.clone();
        let ready = ReadyTimes::default();
        let watch = ready.watch(self.tenants());

        let mut first_fill = None;
        if pool_on {
            let started = Instant::now();
            let mut pool = json!({
                "apiVersion": "silo.dev/v1alpha1", "kind": "AccountPool", "metadata": {"name": POOL},
                "spec": {"size": size, "organizationalUnit": POOL_OU, "emailTemplate": "aws+pool-{index}@example.com"},
            });
            if p.signup_pool_baseline {
                pool["spec"]["baseline"] = json!({"name": baseline});
            }
            pools(&self.client).patch(POOL, &PatchParams::apply("silo-bench").force(), &Patch::Apply(&pool)).await?;
            self.wait_pool_full(&mut controller, size).await?;
            first_fill = Some(started.elapsed().as_secs_f64());
            eprintln!("silo-bench: signup: the pool of {size} filled in {:.0} s", first_fill.unwrap_or_default());
        }

        let mut phases = vec![];
        for (phase, offsets) in [("steady", arrivals.to_vec()), ("burst", vec![0.0; 3 * size])] {
            let names = fleet::names(phase, offsets.len());
            let before = Counters::read(&self.sim).await?;
            let started = Instant::now();
            let mut applied = vec![];
            for (name, offset) in names.iter().zip(&offsets) {
                tokio::time::sleep_until((started + Duration::from_secs_f64(*offset)).into()).await;
                let mut doc = fleet::tenant(name, Profile::Bare, Some(baseline));
                if pool_on {
                    doc["spec"]["pool"] = json!(POOL);
                }
                applied.push(Instant::now());
                fleet::tenants(&self.client)
                    .patch(name, &PatchParams::apply("silo-bench").force(), &Patch::Apply(&doc))
                    .await
                    .with_context(|| format!("apply {name}"))?;
            }
            let timeout = p.timeout(names.len());
            let last = loop {
                controller.check()?;
                let seen: Vec<Option<Instant>> = names.iter().map(|n| ready.get(n)).collect();
                if seen.iter().all(Option::is_some) {
                    break seen.into_iter().flatten().max().unwrap_or(started);
                }
                if started.elapsed() > timeout {
                    bail!(
                        "signup ({label}, {phase}): not every Tenant Ready after {} s: {}",
                        timeout.as_secs(),
                        fleet::not_ready_reasons(&self.tenants()).await
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let refilled = if pool_on {
                self.wait_pool_full(&mut controller, size).await?;
                Some(started.elapsed().as_secs_f64())
            } else {
                None
            };
            let d = Counters::read(&self.sim).await?.since(&before);
            let listed = self.tenants().list(&ListParams::default()).await?;
            let from_pool: BTreeMap<String, bool> = listed
                .items
                .iter()
                .map(|t| (t.name_any(), t.data["status"]["claimedFromPool"].as_str().is_some()))
                .collect();
            let tenants = names
                .iter()
                .zip(&applied)
                .map(|(name, at)| {
                    let took = ready.get(name).map_or(f64::NAN, |r| r.duration_since(*at).as_secs_f64());
                    let pooled = from_pool.get(name).copied().unwrap_or(false);
                    (name.clone(), at.duration_since(started).as_secs_f64(), took, pooled)
                })
                .collect();
            let all_ready = last.duration_since(started).as_secs_f64();
            eprintln!("silo-bench: signup ({label}, {phase}): {} Tenants Ready in {all_ready:.0} s", names.len());
            phases.push(Phase { tenants, all_ready, requests: d.requests, throttled: d.throttled, refilled });
        }
        watch.abort();
        controller.stop();
        Ok((Run { first_fill, phases }, args))
    }

    /// Waits until the pool holds `size` ready accounts.
    async fn wait_pool_full(&self, controller: &mut crate::controller::Controller, size: usize) -> Result<()> {
        let deadline = Instant::now() + self.p.timeout(size * 4);
        loop {
            controller.check()?;
            let pool = pools(&self.client).get(POOL).await?;
            let ready = pool.data["status"]["ready"].as_u64().unwrap_or(0) as usize;
            if ready >= size {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the pool held {ready} of {size} ready accounts at the timeout: {}", pool.data["status"]);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// One run of the scenario (pool on or off).
struct Run {
    first_fill: Option<f64>,
    /// steady, burst.
    phases: Vec<Phase>,
}

fn flag_missing(args: &[String], flag: &str) -> bool {
    !args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&values, 0.5), Some(5.0));
        assert_eq!(percentile(&values, 0.95), Some(10.0));
        assert_eq!(percentile(&[3.0], 0.95), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
