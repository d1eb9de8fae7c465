//! `silo run` as a separate process, as users run it, with its memory and CPU sampled from
//! `/proc` once a second until it is stopped.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde::Serialize;
use silo_testenv::{CONTROLLER_NAMESPACE, SimClient, process::Process};

use super::setup::scrub_env;

/// Peak memory and CPU time of the controller process.
#[derive(Serialize, Clone, Copy, Debug, Default)]
pub struct Usage {
    /// `VmHWM` of `/proc/<pid>/status`: the peak resident set.
    pub peak_rss_bytes: u64,
    /// `utime + stime` of `/proc/<pid>/stat`, in seconds (`sysconf(_SC_CLK_TCK)` ticks).
    pub cpu_seconds: f64,
    /// How many samples were taken (one a second).
    pub samples: u64,
}

impl Usage {
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_bytes as f64 / 1024.0 / 1024.0
    }
}

/// A running `silo run`.
pub struct Controller {
    process: Process,
    pub args: Vec<String>,
    pub started: Instant,
    pub metrics_address: String,
    usage: Arc<Mutex<Usage>>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Controller {
    /// Starts `silo run <args> --metrics-address 127.0.0.1:<free port> --leader-election false`
    /// against the environment, with its output appended to `log`. `started` is taken just
    /// before the process is spawned: the scenarios measure from there.
    pub async fn start(silo: &Path, args: &[String], kubeconfig: &Path, sim: &SimClient, log: &Path) -> Result<Self> {
        Self::spawn(silo, args, kubeconfig, sim, log, None).await
    }

    /// [`Controller::start`], but as one replica of several under leader election, named
    /// `identity` (its POD_NAME: its Leases' holder and its AWS session name).
    pub async fn start_replica(
        silo: &Path,
        args: &[String],
        kubeconfig: &Path,
        sim: &SimClient,
        log: &Path,
        identity: &str,
    ) -> Result<Self> {
        Self::spawn(silo, args, kubeconfig, sim, log, Some(identity)).await
    }

    async fn spawn(
        silo: &Path,
        args: &[String],
        kubeconfig: &Path,
        sim: &SimClient,
        log: &Path,
        replica: Option<&str>,
    ) -> Result<Self> {
        let metrics_address = format!("127.0.0.1:{}", silo_testenv::process::free_port()?);
        let mut full: Vec<String> = vec!["run".into()];
        full.extend(args.iter().cloned());
        full.extend(["--metrics-address".into(), metrics_address.clone()]);
        if replica.is_none() {
            full.extend(["--leader-election".into(), "false".into()]);
        }
        let mut command = Command::new(silo);
        command.args(&full);
        scrub_env(&mut command);
        if let Some(identity) = replica {
            command.env("POD_NAME", identity);
        }
        // NO_COLOR: plain text in the log file (tracing colours its output by default).
        command
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", CONTROLLER_NAMESPACE)
            .env("NO_COLOR", "1")
            .envs(sim.env());
        let started = Instant::now();
        let mut process = Process::start("silo run", command, log)?;
        let pid = process.pid();
        let usage = Arc::new(Mutex::new(Usage::default()));
        let sampler = {
            let usage = usage.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_secs(1));
                loop {
                    ticker.tick().await;
                    sample(pid, &usage);
                }
            })
        };
        // Up when /readyz answers: the process parsed its flags and has its clients.
        let ready = format!("http://{metrics_address}/readyz");
        silo_testenv::process::wait_until(
            &mut process,
            "silo run did not serve /readyz",
            Duration::from_secs(60),
            || {
                let ready = ready.clone();
                async move { reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()).then_some(()) }
            },
        )
        .await?;
        Ok(Self { process, args: full, started, metrics_address, usage, sampler })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log(&self) -> PathBuf {
        self.process.log.clone()
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Fails with the tail of the controller's log if it has exited.
    pub fn check(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// The usage so far, sampled now.
    pub fn usage(&self) -> Usage {
        sample(self.pid(), &self.usage);
        *self.usage.lock().expect("usage lock")
    }

    /// Samples one last time, then kills the process (SIGKILL) and reaps it.
    pub fn stop(mut self) -> Usage {
        let usage = self.usage();
        self.sampler.abort();
        self.process.kill();
        usage
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

/// Reads VmHWM and utime+stime of `pid`; keeps the largest values seen (a dead process has
/// no figures, so the last live sample stands).
fn sample(pid: u32, usage: &Mutex<Usage>) {
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|status| {
        let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
        line.split_whitespace().next()?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    let cpu = cpu_seconds(pid);
    let mut usage = usage.lock().expect("usage lock");
    if let Some(hwm) = hwm {
        usage.peak_rss_bytes = usage.peak_rss_bytes.max(hwm);
    }
    if let Some(cpu) = cpu {
        usage.cpu_seconds = usage.cpu_seconds.max(cpu);
    }
    if hwm.is_some() || cpu.is_some() {
        usage.samples += 1;
    }
}

/// Fails if `usage` has no sample at all (the process died before the first).
pub fn require_samples(usage: &Usage) -> Result<()> {
    if usage.samples == 0 {
        bail!("no /proc sample of the controller was taken");
    }
    Ok(())
}

/// `utime + stime` of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses): state is field
    // 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Where the CPU went: seconds so far of the test environment's processes by component
/// (kube-apiserver and etcd, whose command lines name the environment's directory; the
/// simulator, whose command line names its port), and the machine's busy and total CPU
/// seconds (`/proc/stat`, all CPUs). Two readings subtracted profile a stretch of a scenario.
#[derive(Serialize, Clone, Debug, Default)]
pub struct CpuReading {
    pub components: std::collections::BTreeMap<String, f64>,
    pub machine_busy: f64,
    pub machine_total: f64,
}

impl CpuReading {
    pub fn read(env_dir: &Path, sim_port: &str, named: &[(u32, &str)]) -> Self {
        let mut components = std::collections::BTreeMap::new();
        let env_dir = env_dir.display().to_string();
        let port_arg = format!("--port\0{sim_port}\0");
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline);
            let program = cmdline.split('\0').next().unwrap_or_default();
            let component = if let Some((_, name)) = named.iter().find(|(p, _)| *p == pid) {
                name
            } else if program.ends_with("kube-apiserver") && cmdline.contains(&env_dir) {
                "kube-apiserver"
            } else if program.ends_with("etcd") && cmdline.contains(&env_dir) {
                "etcd"
            } else if cmdline.contains("silo_awssim.py") && cmdline.contains(&port_arg) {
                "simulator"
            } else {
                continue;
            };
            *components.entry(component.to_string()).or_default() += cpu_seconds(pid).unwrap_or(0.0);
        }
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let jiffies: Vec<f64> =
            stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        let total: f64 = jiffies.iter().take(8).sum();
        let idle = jiffies.get(3).copied().unwrap_or(0.0) + jiffies.get(4).copied().unwrap_or(0.0);
        Self { components, machine_busy: (total - idle) / clock_ticks(), machine_total: total / clock_ticks() }
    }

    /// The CPU seconds from `earlier` to this reading, by component, with the machine's
    /// busy share (0 to 1) as `machine busy`.
    pub fn since(&self, earlier: &CpuReading) -> std::collections::BTreeMap<String, f64> {
        let mut out: std::collections::BTreeMap<String, f64> = self
            .components
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.components.get(k).copied().unwrap_or(0.0)))
            .collect();
        let total = self.machine_total - earlier.machine_total;
        out.insert(
            "machine busy (share of all CPUs)".into(),
            if total > 0.0 { (self.machine_busy - earlier.machine_busy) / total } else { 0.0 },
        );
        out
    }
}
