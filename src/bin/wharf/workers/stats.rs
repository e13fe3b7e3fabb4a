//! The parent's summed `stats:` line. Asked with SIGUSR1, every worker writes its counters on
//! its stats channel ([`super::channel`]); the channels' reader threads hand those to the
//! parent, which adds them up field by field once every worker asked has answered, or the
//! wait is over.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long the parent waits for every worker's counters before it sums what it has.
const WAIT: Duration = Duration::from_secs(2);

/// The counters of one worker, by name, in the order it gave them.
pub type Counters = Vec<(String, u64)>;

/// The counters asked for at one time, by worker id.
pub struct StatsRound {
    /// The pids of the workers asked that have not answered yet.
    waiting: BTreeSet<u32>,
    answers: BTreeMap<usize, Counters>,
    deadline: Instant,
}

impl StatsRound {
    /// A round that waits for the workers `asked` (pids).
    pub fn new(asked: BTreeSet<u32>) -> StatsRound {
        StatsRound {
            waiting: asked,
            answers: BTreeMap::new(),
            deadline: Instant::now() + WAIT,
        }
    }

    /// Asked again before the round is over: wait for these too.
    pub fn ask(&mut self, asked: BTreeSet<u32>) {
        self.waiting.extend(asked);
    }

    /// Worker `id` (pid `pid`) answered with `counters`.
    pub fn answer(&mut self, pid: u32, id: usize, counters: Counters) {
        if self.waiting.remove(&pid) {
            self.answers.insert(id, counters);
        }
    }

    /// Worker `pid` exited: it will not answer.
    pub fn gone(&mut self, pid: u32) {
        self.waiting.remove(&pid);
    }

    /// When the parent stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether every worker has answered, or the wait is over.
    pub fn is_over(&self, now: Instant) -> bool {
        self.waiting.is_empty() || self.deadline <= now
    }

    /// Logs the summed line, `stats: workers=N name=sum ...`.
    pub fn log(self) {
        let line = format!(
            "stats: workers={} {}",
            self.answers.len(),
            sum(self.answers.values())
        );
        crate::stats_line(&line);
        if !self.waiting.is_empty() {
            log::warn!(
                "stats: {} workers did not answer within {WAIT:?}",
                self.waiting.len()
            );
        }
    }
}

/// The counters summed field by field, as `name=sum ...` in the order of the first worker's,
/// with names only later ones have at the end.
fn sum<'a>(lines: impl IntoIterator<Item = &'a Counters>) -> String {
    let mut total: Counters = Vec::new();
    for line in lines {
        for (name, value) in line {
            match total.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum = sum.saturating_add(*value),
                None => total.push((name.clone(), *value)),
            }
        }
    }
    total
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_two_workers_sum_field_by_field() {
        let one: Counters = vec![("accepted".into(), 3), ("active".into(), 1)];
        let two: Counters = vec![("accepted".into(), 4), ("active".into(), 0)];
        assert_eq!(sum([&one, &two]), "accepted=7 active=1");
        let newer: Counters = vec![("accepted".into(), 1), ("new".into(), 2)];
        assert_eq!(sum([&one, &newer]), "accepted=4 active=1 new=2");
    }

    #[test]
    fn a_round_is_over_when_every_worker_asked_has_answered_or_gone() {
        let mut round = StatsRound::new([10, 11, 12].into());
        round.answer(10, 1, vec![("accepted".into(), 1)]);
        round.answer(99, 9, vec![("accepted".into(), 5)]); // not asked: ignored
        round.gone(12);
        assert!(!round.is_over(Instant::now()));
        round.answer(11, 2, vec![("accepted".into(), 2)]);
        assert!(round.is_over(Instant::now()));
        assert_eq!(sum(round.answers.values()), "accepted=3");
    }
}
