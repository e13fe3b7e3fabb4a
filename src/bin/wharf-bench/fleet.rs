//! The parent side of a `--procs` run: starting the client processes, waiting for each step
//! of the protocol (see `procs.rs`) with a deadline, collecting their reports, and killing
//! whatever is left when the run ends early. [`spread`] is the whole of it, for `pingpong`
//! and `hold` alike.

use std::env;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::cli::Target;
use crate::error::{BenchError, EXIT_ERRORS_COUNTED};
use crate::procs::{self, Step};
use crate::progress::Progress;
use crate::spread::ChildOf;
use crate::sys;

/// How often waiting for the children lets the caller update its progress bar.
const TICK: Duration = Duration::from_millis(250);

/// How long a child that closed its stdout may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Runs `mode` for `duration` over `procs` client processes sharing `connections` to
/// `target`: waits until every connection of every process is up, calls `at` with
/// [`Step::Established`], lets them measure, calls `at` with [`Step::Measured`] while every
/// connection is still open, then releases them. `at` is where the server is read. Returns
/// their reports, which they must give within [`procs::close_within`] of their release.
pub fn spread<T: DeserializeOwned>(
    target: &Target,
    connections: u64,
    procs: u32,
    (mode, duration): (&str, Duration),
    mut at: impl FnMut(Step) -> Result<(), BenchError>,
) -> Result<Vec<T>, BenchError> {
    let mut fleet = Fleet::spawn(procs)?;
    let within = procs::establish_within(target, connections, procs);
    fleet.await_all(Step::Established, within, || {})?;
    at(Step::Established)?;
    fleet.answer_all(Step::Established)?;
    let progress = Progress::new(mode, duration);
    let start = Instant::now();
    fleet.await_all(Step::Measured, duration + procs::SLACK, || {
        progress.update(start.elapsed(), || format!("{procs} client processes"));
    })?;
    at(Step::Measured)?;
    progress.finish();
    fleet.answer_all(Step::Measured)?;
    fleet.reports(procs::close_within(connections))
}

struct ClientProc {
    child: Child,
    status: Option<ExitStatus>,
}

/// The parent side: the running children, and what they say. Dropping it kills and reaps
/// every child still running, so an early return leaves no process behind.
struct Fleet {
    procs: Vec<ClientProc>,
    /// Lines from the children's stdouts, by child slot; `None` when one closes.
    said: Receiver<(usize, Option<String>)>,
}

impl Fleet {
    /// Starts `procs` copies of this program with this process's arguments and `--child`.
    fn spawn(procs: u32) -> Result<Fleet, BenchError> {
        let program = env::current_exe().map_err(|error| {
            BenchError::io("finding this program to start client processes", error)
        })?;
        let args: Vec<OsString> = env::args_os().skip(1).collect();
        let (tell, said) = mpsc::channel();
        let mut fleet = Fleet {
            procs: Vec::with_capacity(procs as usize),
            said,
        };
        for index in 1..=procs {
            let mut command = Command::new(&program);
            command
                .args(&args)
                .arg("--child")
                .arg(ChildOf { index, procs }.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            sys::die_with_parent(&mut command);
            let mut child = command.spawn().map_err(|error| {
                BenchError::io(format!("starting client process {index} of {procs}"), error)
            })?;
            let stdout = child.stdout.take();
            fleet.procs.push(ClientProc {
                child,
                status: None,
            });
            let slot = fleet.procs.len() - 1;
            let tell = tell.clone();
            // One thread per child reads its lines, so that one silent child cannot keep the
            // parent from hearing the others, and every wait can have a deadline.
            thread::Builder::new()
                .name(format!("client-{index}"))
                .spawn(move || {
                    if let Some(stdout) = stdout {
                        for line in BufReader::new(stdout).lines() {
                            let Ok(line) = line else { break };
                            if tell.send((slot, Some(line))).is_err() {
                                return;
                            }
                        }
                    }
                    let _ = tell.send((slot, None));
                })
                .map_err(|error| BenchError::io("starting a thread", error))?;
        }
        Ok(fleet)
    }

    /// Waits until every child has reached `step`, for at most `within`, calling `tick` a
    /// few times a second meanwhile.
    fn await_all(
        &mut self,
        step: Step,
        within: Duration,
        mut tick: impl FnMut(),
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + within;
        let mut waiting = vec![true; self.procs.len()];
        let mut left = self.procs.len();
        while left > 0 {
            let Some((slot, line)) = self.next_line(deadline, &mut tick) else {
                let late = waiting.iter().position(|&waiting| waiting).unwrap_or(0);
                return Err(self.failed(
                    late,
                    format!(
                        "did not say \"{}\" within {:.0} s",
                        step.said(),
                        within.as_secs_f64()
                    ),
                ));
            };
            match line {
                Some(line) if line == step.said() && waiting[slot] => {
                    waiting[slot] = false;
                    left -= 1;
                }
                Some(line) => {
                    return Err(self.failed(
                        slot,
                        format!("said {line:?} where \"{}\" was expected", step.said()),
                    ))
                }
                None => return Err(self.ended(slot, step.said())),
            }
        }
        Ok(())
    }

    fn answer_all(&mut self, step: Step) -> Result<(), BenchError> {
        for slot in 0..self.procs.len() {
            let stdin = self.procs[slot].child.stdin.as_mut();
            let sent = stdin
                .map(|stdin| writeln!(stdin, "{}", step.answer()).and_then(|()| stdin.flush()));
            if let Some(Err(error)) = sent {
                return Err(self.failed(slot, format!("could not be told to go on ({error})")));
            }
        }
        Ok(())
    }

    /// Waits for every child's JSON report and exit, for at most `within`; the reports come
    /// in child order. A child that exits with other than 0 or 3 (errors counted) fails the
    /// run.
    fn reports<T: DeserializeOwned>(&mut self, within: Duration) -> Result<Vec<T>, BenchError> {
        let deadline = Instant::now() + within;
        let mut reports: Vec<Option<T>> = self.procs.iter().map(|_| None).collect();
        let mut open = self.procs.len();
        while open > 0 {
            let Some((slot, line)) = self.next_line(deadline, &mut || {}) else {
                let late = reports.iter().position(Option::is_none).unwrap_or(0);
                return Err(self.failed(
                    late,
                    format!(
                        "did not report and exit within {:.0} s",
                        within.as_secs_f64()
                    ),
                ));
            };
            match line {
                Some(line) if reports[slot].is_none() => match serde_json::from_str(&line) {
                    Ok(report) => reports[slot] = Some(report),
                    Err(error) => {
                        return Err(self.failed(
                            slot,
                            format!("sent a report that does not parse ({error}): {line}"),
                        ))
                    }
                },
                Some(line) => {
                    return Err(self.failed(slot, format!("said {line:?} after its report")))
                }
                None if reports[slot].is_none() => return Err(self.ended(slot, "its report")),
                None => open -= 1,
            }
        }
        for slot in 0..self.procs.len() {
            let status = self.exit_status(slot);
            let clean = status.is_some_and(|status| {
                status.success() || status.code() == Some(i32::from(EXIT_ERRORS_COUNTED))
            });
            if !clean {
                return Err(self.failed(slot, format!("exited ({})", describe(status))));
            }
        }
        Ok(reports.into_iter().flatten().collect())
    }

    /// The next line any child says, or `None` once `deadline` passes.
    fn next_line(
        &self,
        deadline: Instant,
        tick: &mut impl FnMut(),
    ) -> Option<(usize, Option<String>)> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.said.recv_timeout(left.min(TICK)) {
                Ok(said) => return Some(said),
                Err(RecvTimeoutError::Timeout) => tick(),
                // Every reader thread sends its `None` before it ends, so the channel cannot
                // empty out before the parent stops listening; treat it as a deadline.
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The error for child `slot`, which closed its stdout before saying `expected`.
    fn ended(&mut self, slot: usize, expected: &str) -> BenchError {
        let status = self.exit_status(slot);
        self.failed(
            slot,
            format!(
                "exited ({}) before saying \"{expected}\"; its error, if any, is above",
                describe(status)
            ),
        )
    }

    fn failed(&self, slot: usize, what: String) -> BenchError {
        BenchError::ClientProcess(format!(
            "client process {} of {} {what}",
            slot + 1,
            self.procs.len()
        ))
    }

    /// Reaps child `slot`, which has closed its stdout and so is exiting; one that has not
    /// exited within [`EXIT_WAIT`] is killed. `None` if even that fails.
    fn exit_status(&mut self, slot: usize) -> Option<ExitStatus> {
        let proc = &mut self.procs[slot];
        if proc.status.is_none() {
            let deadline = Instant::now() + EXIT_WAIT;
            proc.status = loop {
                match proc.child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Ok(None) | Err(_) => {
                        let _ = proc.child.kill();
                        break proc.child.wait().ok();
                    }
                }
            };
        }
        proc.status
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for proc in &mut self.procs {
            if proc.status.is_none() {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
            }
        }
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "an unknown status".into(), |status| status.to_string())
}
