//! What the harness learns from and asks of the OS: process RSS and CPU time from /proc, the
//! open-file limit, the ephemeral port range.

use std::time::Instant;

/// `VmRSS` of a `/proc/PID/status` text, KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// utime + stime (clock ticks) of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The two numbers of `/proc/sys/net/ipv4/ip_local_port_range`: how many ephemeral ports one
/// source address has towards one server address.
pub fn parse_port_range(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    (hi >= lo).then(|| hi - lo + 1)
}

/// Ephemeral ports per source address on this host (28,232 with Linux's default range).
pub fn ephemeral_ports() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| parse_port_range(&t))
        .unwrap_or(28_232)
}

/// A hint when `connections` towards one server address need more local ports than the source
/// addresses have.
pub fn port_hint(connections: u64, source_ips: usize, ports_per_ip: u64) -> Option<String> {
    let ips = source_ips.max(1) as u64;
    let capacity = ips * ports_per_ip;
    (connections > capacity).then(|| {
        let need = connections.div_ceil(ports_per_ip);
        format!(
            "hint: {connections} connections need more local ports than {ips} source address(es) × {ports_per_ip} \
             ephemeral ports = {capacity}; pass at least {need} addresses, e.g. --source-ips 127.0.0.1-127.0.0.{need}"
        )
    })
}

/// Clock ticks per second of the /proc CPU times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    pub rss_kib: u64,
    pub cpu_ticks: u64,
}

/// Reads RSS and CPU time of `pid`; `None` once the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample {
        at: Instant::now(),
        rss_kib: parse_vm_rss_kib(&status)?,
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
    })
}

/// Open file descriptors of `pid` (entries of `/proc/PID/fd`); `None` if unreadable.
pub fn count_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Sum of the sizes of the regular files under `path` (recursively, symbolic links not followed);
/// a file that vanishes while it is read counts as empty. `None` if `path` itself is unreadable.
pub fn dir_size(path: &std::path::Path) -> Option<u64> {
    let mut total = 0u64;
    let mut todo = vec![path.to_path_buf()];
    let mut first = true;
    while let Some(dir) = todo.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(_) if !first => continue,
            Err(_) => return None,
        };
        first = false;
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                todo.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Some(total)
}

/// Size of one file, bytes; `None` if it cannot be read.
pub fn file_size(path: &std::path::Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// This process's RSS, KiB.
pub fn self_rss_kib() -> Option<u64> {
    parse_vm_rss_kib(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// CPU use between two samples, percent of one core.
pub fn cpu_percent(from: &ProcSample, to: &ProcSample, ticks_per_sec: u64) -> f64 {
    let wall = to.at.saturating_duration_since(from.at).as_secs_f64();
    if wall <= 0.0 || ticks_per_sec == 0 {
        return 0.0;
    }
    let cpu = to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / ticks_per_sec as f64;
    (cpu / wall * 1000.0).round() / 10.0
}

/// The open-file limit after [`raise_nofile`].
#[derive(Debug, Clone, Copy)]
pub struct Nofile {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; when even the hard limit is below `want` and
/// the process may raise it (root), raises both to `want` first.
pub fn raise_nofile(want: u64) -> std::io::Result<Nofile> {
    use rlimit::Resource;
    let (soft, mut hard) = rlimit::getrlimit(Resource::NOFILE)?;
    if hard < want && rlimit::setrlimit(Resource::NOFILE, want, want).is_ok() {
        hard = want;
    }
    if soft < hard {
        rlimit::setrlimit(Resource::NOFILE, hard, hard)?;
    }
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    Ok(Nofile { soft, hard })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const STATUS: &str = "Name:\tocpp-css\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  912340 kB\n\
        VmSize:\t  901232 kB\nVmHWM:\t   60112 kB\nVmRSS:\t   51234 kB\nRssAnon:\t   40000 kB\nThreads:\t9\n";

    #[test]
    fn reads_vm_rss() {
        assert_eq!(parse_vm_rss_kib(STATUS), Some(51_234));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None, "kernel threads have no VmRSS");
        assert_eq!(parse_vm_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_after_the_command_name() {
        // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let stat = "4242 (ocpp-css) S 1 4242 4242 0 -1 4194560 5000 0 3 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1234 + 567));
        let odd = "77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0 1 0 0";
        assert_eq!(parse_stat_cpu_ticks(odd), Some(15));
        assert_eq!(parse_stat_cpu_ticks("77 (x) R 1"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_the_port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(28_232));
        assert_eq!(parse_port_range("1024 65535"), Some(64_512));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range(""), None);
    }

    #[test]
    fn hints_when_ports_run_out() {
        assert!(port_hint(20_000, 0, 28_232).is_none());
        assert!(port_hint(56_464, 2, 28_232).is_none());
        let h = port_hint(100_000, 1, 28_232).unwrap();
        assert!(h.contains("at least 4 addresses"), "{h}");
        assert!(h.contains("127.0.0.1-127.0.0.4"), "{h}");
    }

    #[test]
    fn cpu_percent_is_of_one_core() {
        let t0 = Instant::now();
        let a = ProcSample { at: t0, rss_kib: 0, cpu_ticks: 1000 };
        let b = ProcSample { at: t0 + Duration::from_secs(2), rss_kib: 0, cpu_ticks: 1300 };
        assert_eq!(cpu_percent(&a, &b, 100), 150.0); // 3 s of CPU in 2 s
        assert_eq!(cpu_percent(&a, &a, 100), 0.0);
    }

    #[test]
    fn sizes_of_files_and_directories() {
        let dir = std::env::temp_dir().join(format!("ocpp-bench-size-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        std::fs::write(dir.join("a"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.join("sub/b"), vec![0u8; 20]).unwrap();
        std::fs::write(dir.join("sub/deeper/c"), vec![0u8; 3]).unwrap();
        assert_eq!(dir_size(&dir), Some(123));
        assert_eq!(file_size(&dir.join("sub/b")), Some(20));
        assert_eq!(file_size(&dir.join("missing")), None);
        assert_eq!(dir_size(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_has_open_files() {
        // Other tests open and close files meanwhile, so only a lower bound holds.
        let _f = std::fs::File::open("/proc/self/status").unwrap();
        let n = count_fds(std::process::id()).unwrap();
        assert!(n >= 2, "the file and at least one standard stream: {n}");
        assert_eq!(count_fds(u32::MAX), None, "no such process");
    }

    #[test]
    fn this_process_has_an_rss_and_a_limit() {
        assert!(self_rss_kib().unwrap() > 0);
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0);
        assert!(clock_ticks_per_sec() > 0);
        let n = raise_nofile(64).unwrap();
        assert!(n.soft >= 64 && n.soft <= n.hard);
    }
}
