//! How many client processes share a run's connections (`--procs`), and which of them this
//! process is (`--child I/N`): the settings of `procs.rs` and `fleet.rs`, as the command
//! line gives them.

use std::fmt;

use clap::Args;

/// How many client processes share the connections (`pingpong` and `hold`).
#[derive(Args, Debug, Clone)]
pub struct Spread {
    /// Client processes to spread the connections over, each under its own open-files limit
    /// (under a limit of 20000: -c 100000 --procs 6). All are connected before any measures,
    /// and all still hold their connections when the server is measured; one report, with
    /// totals and one latency histogram. --connect-pace is the total over all of them, and
    /// each uses every --src address.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=MAX_PROCS))]
    pub procs: u32,
    /// Set by a `--procs` run on the client processes it starts: this is client I of N.
    #[arg(long, value_name = "I/N", hide = true, value_parser = parse_child_of)]
    pub child: Option<ChildOf>,
}

/// Most client processes one run may start: beyond this, surely a typo.
pub const MAX_PROCS: i64 = 256;

/// Client `index` (from 1) of `procs`: `--child I/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildOf {
    /// This child, from 1 to `procs`.
    pub index: u32,
    /// Children in the run.
    pub procs: u32,
}

impl fmt::Display for ChildOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.procs)
    }
}

/// Parses `--child I/N`.
pub fn parse_child_of(text: &str) -> Result<ChildOf, String> {
    let bad = || format!("'{text}' is not I/N with 1 <= I <= N");
    let (index, procs) = text.split_once('/').ok_or_else(bad)?;
    let index: u32 = index.parse().map_err(|_| bad())?;
    let procs: u32 = procs.parse().map_err(|_| bad())?;
    if index == 0 || index > procs {
        return Err(bad());
    }
    Ok(ChildOf { index, procs })
}

impl ChildOf {
    /// This child's share of `total`: equal parts, the first children taking one more each
    /// until the remainder is used up.
    pub fn share(&self, total: u64) -> u64 {
        let procs = u64::from(self.procs);
        let index = u64::from(self.index - 1);
        total / procs + u64::from(index < total % procs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for (total, procs) in [(50_000, 3), (7, 7), (10, 4), (200, 2)] {
            let shares: Vec<u64> = (1..=procs)
                .map(|index| ChildOf { index, procs }.share(total))
                .collect();
            assert_eq!(shares.iter().sum::<u64>(), total, "{shares:?}");
            let (min, max) = (shares.iter().min(), shares.iter().max());
            assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1));
        }
    }

    #[test]
    fn child_of_is_parsed_and_checked() {
        assert_eq!(parse_child_of("2/3"), Ok(ChildOf { index: 2, procs: 3 }));
        assert!(parse_child_of("0/3").is_err());
        assert!(parse_child_of("4/3").is_err());
        assert!(parse_child_of("3").is_err());
    }
}
