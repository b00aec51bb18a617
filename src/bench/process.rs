//! Resource use of a server process on this machine, read from /proc (Linux).

use std::path::Path;

/// The process listening on TCP `port`, found through /proc/net/tcp{,6} and the processes'
/// open sockets. None if it is not local or not visible to us.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let listening = *state == "0A";
            let same_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && same_port {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| Path::new(i) == target)
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Resident memory in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// User plus system CPU time consumed so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU time of each thread of `pid` so far, in seconds, summed by thread name; the main
/// thread (whose id is the process's) is named `main`.
/// CPU seconds of several processes (the nodes of one database), summed.
pub fn cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// CPU seconds by thread name over several processes, summed per name.
pub fn cpu_by_thread_of(pids: &[u32]) -> Option<std::collections::BTreeMap<String, f64>> {
    let mut all = std::collections::BTreeMap::new();
    for pid in pids {
        for (name, t) in cpu_by_thread(*pid)? {
            *all.entry(name).or_insert(0.0) += t;
        }
    }
    Some(all)
}

pub fn cpu_by_thread(pid: u32) -> Option<std::collections::BTreeMap<String, f64>> {
    let mut by_name = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let path = entry.path();
        let name = if entry.file_name().to_str() == Some(&pid.to_string()) {
            "main".to_owned()
        } else {
            std::fs::read_to_string(path.join("comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_default()
        };
        if let Some(cpu) = stat_cpu_seconds(&path.join("stat").to_string_lossy()) {
            *by_name.entry(name).or_insert(0.0) += cpu;
        }
    }
    Some(by_name)
}

fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_by_its_listening_port_and_measured() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
        assert!(rss_bytes(std::process::id()).unwrap() > 1024 * 1024);
        assert!(cpu_seconds(std::process::id()).is_some());
        let threads = cpu_by_thread(std::process::id()).unwrap();
        assert!(threads.contains_key("main"), "{threads:?}");
    }
}
