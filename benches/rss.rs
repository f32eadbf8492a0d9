//! A process's resident memory, for the benches that report it (Linux).

/// The resident memory of `proc` (a pid, or `self`), bytes; `None` where `/proc` cannot
/// tell.
pub fn resident_bytes(proc: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{proc}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}
