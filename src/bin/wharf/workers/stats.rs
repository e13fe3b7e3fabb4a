//! The parent's summed `stats:` line and metrics page. Asked with a signal, every worker
//! writes its counters on its stats channel ([`super::channel`]); the channels' reader
//! threads hand those to the parent, which adds them up field by field once every worker
//! asked has answered, or the wait is over, and logs the sum, or serves it to the scrapes
//! that asked, or both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::metrics::exposition;

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
    /// The summed line is logged (SIGUSR1, `--stats-interval`).
    log: bool,
    /// Scrapes of the metrics endpoint waiting for the page.
    scrapes: Vec<Sender<String>>,
}

impl StatsRound {
    /// A round that waits for the workers `asked` (pids).
    pub fn new(asked: BTreeSet<u32>) -> StatsRound {
        StatsRound {
            waiting: asked,
            answers: BTreeMap::new(),
            deadline: Instant::now() + WAIT,
            log: false,
            scrapes: Vec::new(),
        }
    }

    /// The sum is to be logged when the round is over.
    pub fn log_it(&mut self) {
        self.log = true;
    }

    /// The metrics page is to be sent on `reply` when the round is over.
    pub fn serve_to(&mut self, reply: Sender<String>) {
        self.scrapes.push(reply);
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

    /// Ends the round: logs the summed line, `stats: workers=N name=sum ...`, if asked to
    /// (of the workers that answered), and sends the metrics page to every scrape waiting
    /// (with `own`, the parent's own figures, added to the sum). `last` holds each running
    /// worker's last answer: this round's answers replace them, and the page shows them
    /// for workers that did not answer this time.
    pub fn finish(self, own: &Counters, last: &mut BTreeMap<usize, Counters>) {
        if self.log {
            // The reactors' counters, as a single server logs them; the processes' own
            // figures are for the metrics page.
            let counters: Counters = (total(self.answers.values()).iter())
                .filter(|(name, _)| !name.starts_with("process_"))
                .cloned()
                .collect();
            let line = format!(
                "stats: workers={} {}",
                self.answers.len(),
                format(&counters)
            );
            crate::stats_line(&line);
        }
        if !self.waiting.is_empty() {
            log::warn!(
                "stats: {} workers did not answer within {WAIT:?}",
                self.waiting.len()
            );
        }
        last.extend(self.answers);
        if !self.scrapes.is_empty() {
            let sum: Counters = (total(last.values()).into_iter())
                .chain(own.iter().cloned())
                .collect();
            let workers: Vec<(usize, &[(String, u64)])> = (last.iter())
                .map(|(id, counters)| (*id, counters.as_slice()))
                .collect();
            let page = exposition::render(&sum, &workers);
            for scrape in self.scrapes {
                let _ = scrape.send(page.clone()); // it may have given up waiting
            }
        }
    }
}

/// The counters summed field by field, in the order of the first worker's, with names only
/// later ones have at the end.
fn total<'a>(lines: impl IntoIterator<Item = &'a Counters>) -> Counters {
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
}

/// Counters as `name=value ...`.
fn format(counters: &Counters) -> String {
    (counters.iter())
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
        assert_eq!(format(&total([&one, &two])), "accepted=7 active=1");
        let newer: Counters = vec![("accepted".into(), 1), ("new".into(), 2)];
        assert_eq!(format(&total([&one, &newer])), "accepted=4 active=1 new=2");
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
        assert_eq!(format(&total(round.answers.values())), "accepted=3");
    }
}
