//! Running `wharf-bench` from the tests: a command, a bounded run, its JSON report.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

/// How long one wharf-bench run may take before the test gives up on it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf-bench"));
    command.stdin(Stdio::null());
    command
}

/// Runs a wharf-bench command to its end, killing it if it outlives `RUN_TIMEOUT`.
pub fn run(command: &mut Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wharf-bench");
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => output.expect("wait for wharf-bench"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("wharf-bench did not finish within {RUN_TIMEOUT:?}");
        }
    }
}

/// The one JSON object a `--json` run printed.
pub fn json_report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().next().unwrap_or_else(|| {
        panic!(
            "no report on stdout; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
}

pub fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {report}"))
}
