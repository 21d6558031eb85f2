//! What a newcomer sees of the binary itself: `--help`, and a start-up
//! whose log is on stderr (stdout stays empty), without colour when not on a
//! terminal, as JSON lines when asked, and without the Vulkan loader's
//! `XDG_RUNTIME_DIR` complaint repeated.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use edgeserve_e2e::{PROCESS_GUARD, edgeserve_command, model_repository};

/// Starts `edgeserve serve` on the `linear` model with `args`, as on a
/// headless machine (no display, no `XDG_RUNTIME_DIR`, stdout and stderr
/// pipes), waits until it serves, stops it with SIGTERM → (stdout, stderr).
fn start_and_stop(args: &[&str]) -> (String, String) {
    let repo = model_repository(&["linear"]);
    let cache = common::shared_cache();
    let mut child = edgeserve_command()
        .args(["serve", "--host", "127.0.0.1", "--http-port", "0"])
        .args(["--grpc-port", "0", "--model-repository"])
        .arg(repo.path())
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .env_remove("EDGESERVE_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the edgeserve binary");
    let mut stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let serving = loop {
        match seen.recv_timeout(PROCESS_GUARD) {
            Ok(line) if line.contains("serving the Open Inference Protocol") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    child.wait().unwrap();
    let err = reader.join().unwrap();
    assert!(serving, "the server did not start:\n{err}");
    (out, err)
}

#[test]
fn startup_logs_once_to_stderr_without_colour_and_stdout_stays_empty() {
    // `auto` probes the GPU adapters (lavapipe here), which is where the
    // Vulkan loader's layers used to complain twice.
    let (stdout, stderr) = start_and_stop(&["--device", "auto"]);
    assert_eq!(stdout, "", "stdout is not empty");
    assert!(
        stderr.contains("--device auto:"),
        "no adapter probe:\n{stderr}"
    );
    let complaints = stderr.matches("XDG_RUNTIME_DIR is invalid").count();
    assert!(
        complaints <= 1,
        "{complaints} XDG_RUNTIME_DIR errors:\n{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a pipe:\n{stderr}"
    );
    assert!(stderr.contains("shutting down"), "{stderr}");
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let (stdout, stderr) = start_and_stop(&["--device", "cpu", "--log-format", "json"]);
    assert_eq!(stdout, "", "stdout is not empty");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
        })
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["message"] == "serving the Open Inference Protocol")
        .unwrap_or_else(|| panic!("no serving line in:\n{stderr}"));
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{serving}"
    );
    assert!(lines.iter().all(|l| l["timestamp"].is_string()));
}

#[test]
fn help_lists_each_command_on_one_line() {
    let out = edgeserve_command().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap_or_else(|| panic!("no command list:\n{help}"))
        .lines()
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .collect();
    for command in ["serve", "new", "build", "import"] {
        let entries: Vec<&&str> = commands
            .iter()
            .filter(|line| line.trim_start().starts_with(&format!("{command} ")))
            .collect();
        assert_eq!(entries.len(), 1, "{command}:\n{help}");
        let said = entries[0].trim_start()[command.len()..].trim();
        assert!(!said.is_empty(), "{command} has no description:\n{help}");
    }
    // One line per command: nothing wraps onto a continuation line.
    assert!(
        commands
            .iter()
            .all(|line| line.starts_with("  ") && !line.starts_with("      ")),
        "{help}"
    );
}
