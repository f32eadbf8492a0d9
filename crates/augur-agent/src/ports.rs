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

/// Where the lock files live: one directory for every process on the machine.
fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("augur-ports")
}

/// The ports searched: those above the kernel's ephemeral range, or 61000–65535 when it
/// cannot be read (Linux's default range ends at 60999).
fn search_range() -> (u16, u16) {
    let hi = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u16>().ok())
        .filter(|&hi| hi < 64_000)
        .unwrap_or(60_999);
    (hi + 1, u16::MAX)
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
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))?;
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
        let (lo, _) = search_range();
        let a = reserve_local_ports(3).unwrap();
        let b = reserve_local_ports(2).unwrap();
        let all: std::collections::BTreeSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 5, "{a:?} {b:?}");
        assert!(all.iter().all(|&p| p >= lo), "{all:?} below {lo}");
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
