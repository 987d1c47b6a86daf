//! The memory budget of the CPU-side backends: before a model's weights are loaded, and
//! before a graph's slots and scratch are allocated, their totals are each compared with
//! it, so a model or a batch too large for the machine is an error rather than an abort.
//! The GPU backend checks its buffers against the adapter's limits instead.

use crate::error::{Error, Result};

/// The budget when the machine's available memory cannot be read.
pub const FALLBACK_BUDGET: u64 = 8 << 30;

/// Three quarters of the memory available now (`MemAvailable`, and a cgroup's remaining
/// allowance where one is set), else [`FALLBACK_BUDGET`].
pub fn default_budget() -> u64 {
    available_memory().map_or(FALLBACK_BUDGET, |bytes| bytes / 4 * 3)
}

fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    let available = available_kib.saturating_mul(1024);
    Some(cgroup_allowance().map_or(available, |left| left.min(available)))
}

/// What a cgroup v2 memory limit still allows this process, if one is set.
fn cgroup_allowance() -> Option<u64> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(read("memory.max")?.saturating_sub(read("memory.current")?))
}

/// Fails when `needed` bytes are over `budget`, stating both.
pub fn check(needed: u64, budget: u64) -> Result<()> {
    if needed <= budget {
        return Ok(());
    }
    Err(Error::Backend(format!(
        "this forward needs {} of activations, over the memory budget of {}; use a smaller batch or image, or raise --max-memory (BackendOptions::max_memory)",
        size_text(needed),
        size_text(budget)
    )))
}

/// Fails when a model's weights, `needed` bytes as f32, are over `budget`: the weights
/// and a forward's activations are each held to it.
pub fn check_weights(needed: u64, budget: u64) -> Result<()> {
    if needed <= budget {
        return Ok(());
    }
    Err(Error::Backend(format!(
        "the model's weights take {} as f32, over the memory budget of {}; raise --max-memory (BackendOptions::max_memory)",
        size_text(needed),
        size_text(budget)
    )))
}

/// Bytes in a readable unit.
pub fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{b} bytes"),
    }
}

/// Parses a size as `--max-memory` takes it: bytes, or a number with K, M, G or T
/// (powers of 1024, optionally followed by `iB` or `B`).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    let bytes = number * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1K"), Some(1024));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("2 mb"), Some(2 << 20));
        for bad in ["", "0", "-1", "1Q", "G", "1e999"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_budget_refusal_states_both_figures() {
        assert!(check(100, 100).is_ok());
        let err = check(3 << 30, 1 << 29).unwrap_err().to_string();
        assert!(
            err.contains("needs 3.0 GiB") && err.contains("budget of 512.0 MiB"),
            "{err}"
        );
        assert!(default_budget() > 0);
    }
}
