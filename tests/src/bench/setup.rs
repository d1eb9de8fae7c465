//! What a bench run is told (flags and `BENCH_*` variables), what it learns about the `silo`
//! binary from `silo run --help`, and what it records about the machine and the commit.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

/// The scenarios, in the order they run whatever order `BENCH_SCENARIOS` names them in.
#[derive(ValueEnum, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Onboard,
    Restart,
    Steady,
    Baseline,
    Unthrottled,
    Import,
    Signup,
    Rollout,
    Organizations,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Onboard => "onboard",
            Scenario::Restart => "restart",
            Scenario::Steady => "steady",
            Scenario::Baseline => "baseline",
            Scenario::Unthrottled => "unthrottled",
            Scenario::Import => "import",
            Scenario::Signup => "signup",
            Scenario::Rollout => "rollout",
            Scenario::Organizations => "organizations",
        }
    }
}

/// What the bench's Tenants carry.
#[derive(ValueEnum, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// An OU, nothing else (`spec: {organizationalUnit: /Tenants}`); the baseline scenario's
    /// Baseline has one region.
    Bare,
    /// What a real tenant carries: an account name, 5 tags, 1 service control policy, 3
    /// alternate contacts in `spec.contacts`, and a Baseline in two regions.
    Full,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Bare => "bare",
            Profile::Full => "full",
        }
    }
}

/// Where in the verification schedule the restart scenario restarts the controller.
#[derive(ValueEnum, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RestartAt {
    /// The fleet was verified on its schedule until the restart: the restart falls at a
    /// random point of the schedule (each tenant's phase is a hash of its UID).
    Random,
    /// The controller was down for `BENCH_RESTART_OUTAGE_SECONDS` before the restart: the
    /// tenants whose turn fell in the outage are overdue.
    Outage,
}

impl RestartAt {
    pub fn name(self) -> &'static str {
        match self {
            RestartAt::Random => "random",
            RestartAt::Outage => "outage",
        }
    }
}

/// Every knob; each has a `BENCH_*` variable so `make bench BENCH_TENANTS=30` works.
#[derive(Parser, Serialize, Clone, Debug)]
#[command(
    name = "silo-bench",
    about = "Silo's benchmarks: `silo run` against a real kube-apiserver and the AWS simulator with AWS-like quotas"
)]
pub struct Params {
    /// The `silo` binary to benchmark (a release build).
    #[arg(long, env = "SILO_BIN")]
    pub silo: PathBuf,

    /// Python with matplotlib, to draw the PNGs (`make bench` makes a venv for it).
    #[arg(long, env = "BENCH_PYTHON", default_value = "python3")]
    pub python: PathBuf,

    /// Scenarios to run (comma list); they always run in the order listed here.
    #[arg(
        long,
        env = "BENCH_SCENARIOS",
        value_delimiter = ',',
        default_value = "onboard,restart,steady,baseline,unthrottled,import,signup,rollout,organizations"
    )]
    pub scenarios: Vec<Scenario>,

    /// Draw each scenario's PNG (needs matplotlib in --python); the JSON is written either way.
    #[arg(long, env = "BENCH_PLOTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub plots: bool,

    /// After the scenarios, hold their results against the ceilings in this file and fail on
    /// any excess (`make bench-check`, inside `make test`: counts, never times).
    #[arg(long, env = "BENCH_CHECK")]
    pub check: Option<PathBuf>,

    /// Output directory (default `$SILO_CACHE/bench/<UTC timestamp>`).
    #[arg(long, env = "BENCH_OUT")]
    pub out: Option<PathBuf>,

    /// What every Tenant carries: `bare` (an OU) or `full` (account name, 5 tags, 1 service
    /// control policy, 3 alternate contacts, a two-region Baseline).
    #[arg(long, env = "BENCH_PROFILE", value_enum, default_value = "bare")]
    pub profile: Profile,

    /// N: Tenants in onboard, restart, steady and unthrottled.
    #[arg(long, env = "BENCH_TENANTS", default_value_t = 500)]
    pub tenants: usize,

    /// D: seconds a CreateAccount stays IN_PROGRESS in the simulator.
    #[arg(long, env = "BENCH_CREATE_SECONDS", default_value_t = 2.0)]
    pub create_seconds: f64,

    /// R: Organizations requests per second the simulator allows (`organizations:*`).
    #[arg(long, env = "BENCH_ORG_RPS", default_value_t = 10.0)]
    pub org_rps: f64,

    /// STS requests per second the simulator allows (`sts:*`).
    #[arg(long, env = "BENCH_STS_RPS", default_value_t = 50.0)]
    pub sts_rps: f64,

    /// CloudFormation requests per second the simulator allows (`cloudformation:*`).
    #[arg(long, env = "BENCH_CFN_RPS", default_value_t = 20.0)]
    pub cfn_rps: f64,

    /// Creations AWS runs at once per organization (the simulator's `max_concurrent_creations`).
    #[arg(long, env = "BENCH_CREATION_SLOTS", default_value_t = 5)]
    pub creation_slots: usize,

    /// Extra `silo run` flags, split on spaces.
    #[arg(long, env = "BENCH_SILO_FLAGS", default_value = "", allow_hyphen_values = true)]
    pub silo_flags: String,

    /// restart: how long after the restart AWS requests are counted.
    #[arg(long, env = "BENCH_RESTART_WINDOW_SECONDS", default_value_t = 600)]
    pub restart_window_seconds: u64,

    /// restart: the points of the verification schedule to restart at (comma list), each
    /// measured on its own: `random` (the fleet was verified on its schedule until the
    /// restart) and `outage` (the controller was down `BENCH_RESTART_OUTAGE_SECONDS` first).
    #[arg(long, env = "BENCH_RESTART_AT", value_delimiter = ',', default_value = "random,outage")]
    pub restart_at: Vec<RestartAt>,

    /// restart: how long the controller was down before the `outage` restart.
    #[arg(long, env = "BENCH_RESTART_OUTAGE_SECONDS", default_value_t = 3600)]
    pub restart_outage_seconds: u64,

    /// steady: the short `--resync-seconds` the controller runs with.
    #[arg(long, env = "BENCH_STEADY_RESYNC_SECONDS", default_value_t = 120)]
    pub steady_resync_seconds: u64,

    /// steady: how long requests are counted (default twice the resync).
    #[arg(long, env = "BENCH_STEADY_WINDOW_SECONDS")]
    pub steady_window_seconds: Option<u64>,

    /// steady: `--index-refresh-seconds`, passed only when `silo run --help` lists that flag.
    #[arg(long, env = "BENCH_STEADY_INDEX_REFRESH_SECONDS", default_value_t = 30)]
    pub steady_index_refresh_seconds: u64,

    /// M: Tenants with a Baseline in the baseline scenario (the profile's Baseline: one
    /// region when bare, two when full).
    #[arg(long, env = "BENCH_BASELINE_TENANTS", default_value_t = 100)]
    pub baseline_tenants: usize,

    /// Server-side applies in flight at once.
    #[arg(long, env = "BENCH_APPLY_CONCURRENCY", default_value_t = 32)]
    pub apply_concurrency: usize,

    /// Give up waiting for Ready after this many seconds (default 600 + 5 s per tenant).
    #[arg(long, env = "BENCH_TIMEOUT_SECONDS")]
    pub timeout_seconds: Option<u64>,

    /// unthrottled: seconds a CreateAccount stays IN_PROGRESS with the quotas off (both halves).
    #[arg(long, env = "BENCH_UNTHROTTLED_CREATE_SECONDS", default_value_t = 0.0)]
    pub unthrottled_create_seconds: f64,

    /// import: accounts made directly in the simulator (not by Silo), then imported.
    #[arg(long, env = "BENCH_IMPORT_ACCOUNTS", default_value_t = 1000)]
    pub import_accounts: usize,

    /// signup: the AccountPool's size; the burst is 3 x this many Tenants at once.
    #[arg(long, env = "BENCH_SIGNUP_POOL_SIZE", default_value_t = 10)]
    pub signup_pool_size: usize,

    /// signup: D, seconds a CreateAccount stays IN_PROGRESS (minutes on AWS, in proportion).
    #[arg(long, env = "BENCH_SIGNUP_CREATE_SECONDS", default_value_t = 60.0)]
    pub signup_create_seconds: f64,

    /// signup: seconds a new account's role stays unassumable after its creation (IAM
    /// propagation).
    #[arg(long, env = "BENCH_SIGNUP_ROLE_SECONDS", default_value_t = 20.0)]
    pub signup_role_seconds: f64,

    /// signup: S, seconds each stack operation stays *_IN_PROGRESS.
    #[arg(long, env = "BENCH_SIGNUP_STACK_SECONDS", default_value_t = 10.0)]
    pub signup_stack_seconds: f64,

    /// signup: the pool makes its accounts' Baseline (the Tenants' own) before they are ready,
    /// so a Tenant that takes one updates its stack instead of creating it.
    #[arg(long, env = "BENCH_SIGNUP_POOL_BASELINE", default_value_t = true, action = clap::ArgAction::Set)]
    pub signup_pool_baseline: bool,

    /// signup: Tenants arriving at random (Poisson) in the steady phase.
    #[arg(long, env = "BENCH_SIGNUP_TENANTS", default_value_t = 20)]
    pub signup_tenants: usize,

    /// signup: the steady arrival rate, as a share of the rate the pool refills at (5 per D).
    #[arg(long, env = "BENCH_SIGNUP_LOAD", default_value_t = 0.5)]
    pub signup_load: f64,

    /// signup: the seed of the random arrivals (the same for the runs with and without a pool).
    #[arg(long, env = "BENCH_SIGNUP_SEED", default_value_t = 1)]
    pub signup_seed: u64,

    /// rollout: N, Tenants on the one Baseline whose change is rolled out.
    #[arg(long, env = "BENCH_ROLLOUT_TENANTS", default_value_t = 1000)]
    pub rollout_tenants: usize,

    /// rollout: S, the median seconds of a stack operation; the 99th percentile is 6 S
    /// (lognormal: the simulator's `stack_operation_p99_seconds`).
    #[arg(long, env = "BENCH_ROLLOUT_STACK_SECONDS", default_value_t = 3.0)]
    pub rollout_stack_seconds: f64,

    /// rollout: the Baseline's `spec.rollout.stages` (comma list of numbers and percentages).
    #[arg(long, env = "BENCH_ROLLOUT_STAGES", value_delimiter = ',', default_value = "1,1%,10%,100%")]
    pub rollout_stages: Vec<String>,

    /// rollout: M, the Baseline's `spec.rollout.maxConcurrent`.
    #[arg(long, env = "BENCH_ROLLOUT_MAX_CONCURRENT", default_value_t = 10)]
    pub rollout_max_concurrent: usize,

    /// rollout: B, the Baseline's `spec.rollout.bakeSeconds`.
    #[arg(long, env = "BENCH_ROLLOUT_BAKE_SECONDS", default_value_t = 10)]
    pub rollout_bake_seconds: u32,

    /// organizations: Tenants spread over three organizations.
    #[arg(long, env = "BENCH_ORGANIZATIONS_TENANTS", default_value_t = 600)]
    pub organizations_tenants: usize,

    /// Give up when no Tenant became Ready for this many seconds while some are not.
    #[arg(long, env = "BENCH_STALL_SECONDS", default_value_t = 600)]
    pub stall_seconds: u64,
}

impl Params {
    pub fn steady_window(&self) -> u64 {
        self.steady_window_seconds.unwrap_or(2 * self.steady_resync_seconds)
    }

    /// How long to wait for `tenants` Tenants to be Ready before failing.
    pub fn timeout(&self, tenants: usize) -> Duration {
        Duration::from_secs(self.timeout_seconds.unwrap_or(600 + 5 * tenants as u64))
    }

    pub fn user_flags(&self) -> Vec<String> {
        self.silo_flags.split_whitespace().map(String::from).collect()
    }

    pub fn selected(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
    }

    /// The simulator's AWS-like quotas for this run.
    pub fn quotas(&self) -> Value {
        json!({
            // A fleet's organization has its account quota raised (AWS grants up to 10,000).
            "account_limit": null,
            "create_account_delay_seconds": self.create_seconds,
            "max_concurrent_creations": self.creation_slots,
            "rate_limits": {
                "organizations:*": self.org_rps,
                "sts:*": self.sts_rps,
                "cloudformation:*": self.cfn_rps,
            },
        })
    }
}

/// The simulator with its quotas off: no rate limits, no creation cap, creations taking
/// `create_seconds` (0: instant).
pub fn no_quotas(create_seconds: f64) -> Value {
    json!({
        "create_account_delay_seconds": create_seconds,
        "max_concurrent_creations": null,
        "rate_limits": {},
        "account_limit": null,
    })
}

/// The fewest-requests bound on onboarding `n` tenants: creations run `slots` at a time and
/// take `d` seconds each; each created tenant needs at least `c` Organizations requests
/// (CreateAccount and MoveAccount) at `r` per second.
pub fn onboard_bound(n: usize, slots: usize, d: f64, r: f64, c: f64) -> f64 {
    let creations = (n as f64 / slots as f64).ceil() * d;
    let requests = if r > 0.0 { n as f64 * c / r } else { 0.0 };
    creations.max(requests)
}

/// Ready tenants over time if both limits of [`onboard_bound`] were met exactly.
pub fn ideal_curve(n: usize, slots: usize, d: f64, r: f64, c: f64) -> Vec<[f64; 2]> {
    let end = onboard_bound(n, slots, d, r, c);
    let steps = 400;
    (0..=steps)
        .map(|i| {
            let t = end * 1.05 * i as f64 / steps as f64;
            let by_slots = if d > 0.0 { slots as f64 * (t / d).floor() } else { f64::INFINITY };
            let by_rate = if r > 0.0 { (r * t / c).floor() } else { f64::INFINITY };
            [t, by_slots.min(by_rate).min(n as f64)]
        })
        .collect()
}

/// What `silo run --help` says: which flags exist and their defaults.
pub struct SiloHelp {
    pub text: String,
}

impl SiloHelp {
    pub fn load(silo: &Path) -> Result<Self> {
        let mut command = Command::new(silo);
        command.args(["run", "--help"]);
        scrub_env(&mut command);
        let out = command.output().with_context(|| format!("run {} run --help", silo.display()))?;
        if !out.status.success() {
            bail!("{} run --help failed: {}", silo.display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(Self { text: String::from_utf8_lossy(&out.stdout).into_owned() })
    }

    /// The lines that describe `flag`: its own line up to the next flag's.
    fn block(&self, flag: &str) -> Option<String> {
        let lines: Vec<&str> = self.text.lines().collect();
        let start = lines.iter().position(|l| {
            let l = l.trim_start();
            // "-h, --help": skip the short form.
            let b = l.as_bytes();
            let l = if b.len() > 4 && b[0] == b'-' && b[1] != b'-' && &b[2..4] == b", " { &l[4..] } else { l };
            l.strip_prefix(flag).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '=', '<']))
        })?;
        let mut block = vec![lines[start]];
        for line in &lines[start + 1..] {
            if line.trim_start().starts_with('-') {
                break;
            }
            block.push(line);
        }
        Some(block.join("\n"))
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.block(flag).is_some()
    }

    pub fn default_of(&self, flag: &str) -> Option<String> {
        let block = self.block(flag)?;
        let (_, rest) = block.split_once("[default: ")?;
        Some(rest.split(']').next()?.trim().to_string())
    }

    /// A numeric default: from the help text when it says, else `fallback`; with its source.
    pub fn number(&self, flag: &str, fallback: u64) -> (u64, &'static str) {
        match self.default_of(flag).and_then(|v| v.parse().ok()) {
            Some(v) => (v, "silo run --help"),
            None => (fallback, "constant in silo-bench (silo run --help did not say)"),
        }
    }
}

/// Removes variables that would change `silo run` behind the bench's back: every `SILO_*`
/// (each flag has one) and `AWS_*` (credentials and endpoint are set explicitly).
pub fn scrub_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("SILO_") || key.starts_with("AWS_") || key == "POD_NAME" || key == "POD_NAMESPACE" {
            command.env_remove(key.as_ref());
        }
    }
}

/// The value of `--name` in a flag list (`--name v` or `--name=v`).
pub fn flag_value(flags: &[String], name: &str) -> Option<String> {
    let mut iter = flags.iter();
    while let Some(flag) = iter.next() {
        if flag == name {
            return iter.next().cloned();
        }
        if let Some(v) = flag.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(v.to_string());
        }
    }
    None
}

/// `flags` without the flags in `names` (and their values): the scenario's own flags win.
pub fn without_flags(flags: &[String], names: &[&str]) -> Vec<String> {
    let mut out = vec![];
    let mut i = 0;
    while i < flags.len() {
        let flag = &flags[i];
        let name = flag.split('=').next().unwrap_or(flag);
        if names.contains(&name) {
            let has_separate_value = !flag.contains('=') && flags.get(i + 1).is_some_and(|v| !v.starts_with("--"));
            i += if has_separate_value { 2 } else { 1 };
            continue;
        }
        out.push(flag.clone());
        i += 1;
    }
    out
}

/// The machine, for every report: the figures mean little without it.
pub fn machine() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|v| v.trim_start_matches([' ', '\t', ':']));
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_total_bytes": mem_kib * 1024,
        "mem_total_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "cpu_model": cpu,
        "loadavg": loadavg(),
    })
}

/// `/proc/loadavg`'s first three fields: the machine is shared, so say how busy it was.
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// `git rev-parse --short HEAD` of the repository, with whether the tree had changes.
pub fn git_commit(repo: &Path) -> Value {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "--short", "HEAD"]);
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    json!({"commit": commit, "dirty": dirty})
}

/// `YYYYMMDD-HHMMSS` in UTC, for the default output directory.
pub fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP: &str = "Run the controller.

Usage: silo run [OPTIONS]

Options:
      --resync-seconds <RESYNC_SECONDS>
          How often a Ready tenant is verified against AWS, in seconds (jittered up to twice)

          [env: SILO_RESYNC_SECONDS=]
          [default: 10800]

      --concurrency <CONCURRENCY>
          How many Tenants are reconciled at once

          [env: SILO_CONCURRENCY=]
          [default: 16]

      --create-missing-ous
          Create organizational units

  -h, --help
          Print help (see a summary with '-h')
";

    #[test]
    fn reads_defaults_from_help() {
        let help = SiloHelp { text: HELP.into() };
        assert_eq!(help.default_of("--resync-seconds").as_deref(), Some("10800"));
        assert_eq!(help.default_of("--concurrency").as_deref(), Some("16"));
        assert!(help.has_flag("--create-missing-ous"));
        assert!(help.has_flag("--help"));
        assert!(!help.has_flag("--index-refresh-seconds"));
        assert!(!help.has_flag("--resync"));
        assert_eq!(help.default_of("--create-missing-ous"), None);
        assert_eq!(help.number("--index-refresh-seconds", 7).0, 7);
    }

    #[test]
    fn flag_lists() {
        let flags: Vec<String> =
            "--concurrency 32 --create-missing-ous --resync-seconds=5".split(' ').map(String::from).collect();
        assert_eq!(flag_value(&flags, "--concurrency").as_deref(), Some("32"));
        assert_eq!(flag_value(&flags, "--resync-seconds").as_deref(), Some("5"));
        assert_eq!(flag_value(&flags, "--resync"), None);
        assert_eq!(without_flags(&flags, &["--resync-seconds", "--concurrency"]), vec!["--create-missing-ous"]);
    }

    #[test]
    fn bound_is_the_larger_limit() {
        // 200 tenants, 5 slots, 2 s, 10 rps: slots give 80 s, requests 40 s.
        assert_eq!(onboard_bound(200, 5, 2.0, 10.0, 2.0), 80.0);
        assert_eq!(onboard_bound(200, 5, 0.1, 10.0, 2.0), 40.0);
        let curve = ideal_curve(200, 5, 2.0, 10.0, 2.0);
        assert_eq!(curve.last().unwrap()[1], 200.0);
    }

    #[test]
    fn timestamp_shape() {
        let ts = utc_timestamp();
        assert_eq!(ts.len(), 15);
        assert!(ts.starts_with("20"));
    }
}
