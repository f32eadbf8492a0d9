//! Free ports on 127.0.0.1 for a listener that another process will open later (HAProxy's
//! frontend, an `augur serve` under test).
//!
//! Binding port 0 and handing the number on leaves a window in which the kernel can give the
//! same port to anyone's outgoing connection (it comes from the ephemeral range), or to
//! another process doing the same. So a port is taken here from *above* the ephemeral range,
//! where the kernel never picks on its own, and is claimed with an exclusive lock on a file
//! named after it in a shared directory: two processes on this machine never hold the same
//! port, and the lock is released only when this process exits.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;

/// The lock files of the ports this process holds (the locks last as long as the files are
/// open, so until the process exits).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Where the lock files live: one directory per user (another user's files could not be
/// opened), shared by all of that user's processes.
fn lock_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    std::env::temp_dir().join(format!("augur-ports-{uid}"))
}

/// The ports searched: those above the kernel's ephemeral range when it leaves 1,000 or more
/// there, else the 3,000 below it (Linux's default range is 32768–60999). Ports the kernel may
/// hand out on its own are used only when it leaves no room on either side. Read once a
/// process.
fn search_range() -> (u16, u16) {
    static RANGE: std::sync::OnceLock<(u16, u16)> = std::sync::OnceLock::new();
    *RANGE.get_or_init(read_search_range)
}

fn read_search_range() -> (u16, u16) {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999));
    if hi <= u16::MAX - 1_000 {
        (hi + 1, u16::MAX)
    } else if lo > 4_024 {
        (lo - 3_000, lo - 1)
    } else {
        tracing::warn!(
            lo,
            hi,
            "the ephemeral port range leaves no room: test ports may clash"
        );
        (61_000, u16::MAX)
    }
}

/// `n` different ports on 127.0.0.1 that bind now and that no other process using this
/// function holds; they stay reserved to this process until it exits.
pub fn reserve_local_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir)?;
    let (lo, hi) = search_range();
    let span = u32::from(hi - lo) + 1;
    // Start at a place that depends on the process, so parallel processes rarely meet.
    let start = std::process::id().wrapping_mul(7919) % span;
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let mut ports = Vec::with_capacity(n);
    for offset in 0..span {
        if ports.len() == n {
            break;
        }
        let port = lo + ((start + offset) % span) as u16;
        let Ok(file) = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue; // a file this user cannot open: not a port to take
        };
        if file.try_lock().is_err() {
            continue; // another process holds it (or this one does)
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue; // something outside this scheme listens there
        }
        held.push(file);
        ports.push(port);
    }
    if ports.len() < n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!(
                "only {} of {n} ports free in {lo}–{hi} (locks in {})",
                ports.len(),
                dir.display()
            ),
        ));
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_differ_and_lie_above_the_ephemeral_range() {
        let (lo, hi) = search_range();
        let a = reserve_local_ports(3).unwrap();
        let b = reserve_local_ports(2).unwrap();
        let all: std::collections::BTreeSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 5, "{a:?} {b:?}");
        assert!(
            all.iter().all(|p| (lo..=hi).contains(p)),
            "{all:?} outside {lo}–{hi}"
        );
        // Each is locked: a second lock on its file, as another process would try, fails.
        for p in &all {
            let f = File::options()
                .write(true)
                .open(lock_dir().join(p.to_string()))
                .unwrap();
            assert!(f.try_lock().is_err(), "port {p} is not locked");
        }
    }
}
