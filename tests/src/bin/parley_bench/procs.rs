//! What the generator reads about processes: CPU time from
//! `/proc/PID/stat`, resident memory from `/proc/PID/status`, and the
//! file-descriptor limit.

use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Result;

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of a process (`None`: this one).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. There, field 0 is the state, 11 utime, 12 stime.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// Busy and total jiffies of the whole machine (`/proc/stat`).
fn machine_jiffies() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0.0);
    Some((total - idle, total))
}

/// A line of `/proc/PID/status` in KiB (`VmRSS`, `RssAnon`, ...).
pub fn status_kib(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident set size in KiB.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Bytes a process has caused to be written to storage so far (counted
/// when it dirties pages: `write_bytes` in `/proc/PID/io`).
pub fn write_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// The soft open-files limit of a process, from `/proc/PID/limits`.
pub fn nofile_limit(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Raises this process's open-files limit as far as allowed: first to
/// `want` (needs CAP_SYS_RESOURCE beyond the hard limit), else to the hard
/// limit. Returns the soft limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    use rlimit::Resource;
    if rlimit::setrlimit(Resource::NOFILE, want, want).is_err() {
        let _ = rlimit::increase_nofile_limit(want);
    }
    rlimit::getrlimit(Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0)
}

/// CPU use over a window, of this process and of the servers.
pub struct CpuMeter {
    started: Instant,
    client: Option<f64>,
    helpers: Vec<(u32, Option<f64>)>,
    servers: Vec<(String, u32, Option<f64>)>,
    machine: Option<(f64, f64)>,
}

/// CPU use over a window, in percent of one core (the machine has
/// `cores * 100`).
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    /// This process.
    pub client_pct: f64,
    /// Each server: name and percent.
    pub servers: Vec<(String, f64)>,
    /// Everything else on the machine (other people's builds and tests
    /// disturb a run: this says how much).
    pub other_pct: f64,
}

impl CpuUse {
    /// All servers together.
    pub fn servers_total(&self) -> f64 {
        self.servers.iter().map(|(_, p)| p).sum()
    }

    /// JSON fields: `client_cpu_pct`, `server_cpu_pct` and per server.
    pub fn fields(&self) -> Vec<(String, serde_json::Value)> {
        let mut out = vec![
            ("client_cpu_pct".to_owned(), round1(self.client_pct).into()),
            (
                "server_cpu_pct".to_owned(),
                round1(self.servers_total()).into(),
            ),
        ];
        out.push(("other_cpu_pct".to_owned(), round1(self.other_pct).into()));
        if self.servers.len() > 1 {
            let per: serde_json::Map<String, serde_json::Value> = self
                .servers
                .iter()
                .map(|(n, p)| (n.clone(), round1(*p).into()))
                .collect();
            out.push(("server_cpu_pct_by_node".to_owned(), per.into()));
        }
        out
    }
}

impl CpuMeter {
    /// Starts measuring this process and `servers` (name, pid).
    pub fn start(servers: &[(String, u32)]) -> Self {
        Self::start_with(servers, &[])
    }

    /// Also counts `helpers` (the generator's worker processes) as client.
    pub fn start_with(servers: &[(String, u32)], helpers: &[u32]) -> Self {
        Self {
            started: Instant::now(),
            client: cpu_seconds(None),
            helpers: helpers
                .iter()
                .map(|p| (*p, cpu_seconds(Some(*p))))
                .collect(),
            servers: servers
                .iter()
                .map(|(n, p)| (n.clone(), *p, cpu_seconds(Some(*p))))
                .collect(),
            machine: machine_jiffies(),
        }
    }

    /// The use since [`CpuMeter::start`].
    pub fn stop(&self) -> CpuUse {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let pct = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(b), Some(a)) => (a - b) / secs * 100.0,
            _ => f64::NAN,
        };
        let helpers: f64 = self
            .helpers
            .iter()
            .map(|(p, before)| pct(*before, cpu_seconds(Some(*p))))
            .sum();
        let client_pct = pct(self.client, cpu_seconds(None)) + helpers;
        let servers: Vec<(String, f64)> = self
            .servers
            .iter()
            .map(|(n, p, before)| (n.clone(), pct(*before, cpu_seconds(Some(*p)))))
            .collect();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let busy_pct = match (self.machine, machine_jiffies()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) / (t1 - t0) * cores * 100.0,
            _ => f64::NAN,
        };
        let ours = client_pct + servers.iter().map(|(_, p)| p).sum::<f64>();
        CpuUse {
            client_pct,
            servers,
            other_pct: (busy_pct - ours).max(0.0),
        }
    }
}

/// Rounds to one decimal for reports.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to two decimals for reports.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The CPUs of a `taskset -c` list (`0`, `0-2,5`); refuses anything else,
/// since the list goes into the nodes' start command.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let bad = || anyhow::anyhow!("bad CPU list {list:?}: expected e.g. 0 or 0-2,5");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cpus)
}

/// Pins this process (its calling thread, so every thread it starts after)
/// to the CPUs not in `server_cpus`; returns how many that is.
pub fn pin_to_other_cpus(server_cpus: &str) -> Result<usize> {
    let taken = parse_cpu_list(server_cpus)?;
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mine: Vec<String> = (0..all)
        .filter(|c| !taken.contains(c))
        .map(|c| c.to_string())
        .collect();
    if mine.is_empty() {
        anyhow::bail!("no CPU left for the generator: the node takes {server_cpus} of {all}");
    }
    let status = std::process::Command::new("taskset")
        .args(["-p", "-c", &mine.join(","), &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("running taskset (util-linux): {e}"))?;
    if !status.success() {
        anyhow::bail!(
            "taskset could not pin the generator to CPUs {}",
            mine.join(",")
        );
    }
    Ok(mine.len())
}
