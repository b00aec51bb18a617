//! The `qod` binary as a child process (server, fake NEF): started, its address read from its
//! "listening" log line, its log kept in a file, killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `qod` child process; killed when dropped, so a failing test leaves none behind.
pub struct Process {
    pub child: Child,
    pub addr: String,
    pub stdout: Option<BufReader<std::process::ChildStdout>>,
    /// The log lines up to and including the "listening" one.
    pub head: Vec<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `qod <args>` and waits for its "listening" log line; the rest of its log is appended
/// to `log`.
pub fn start(args: &[&str], log: &Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qod"))
        .args(args)
        .env(
            "QOD_LOG",
            std::env::var("QOD_TEST_LOG")
                .unwrap_or_else(|_| "info,apalis=warn,qod::network=debug".into()),
        )
        // The tests choose the authentication mode themselves.
        .env_remove("QOD_AUTH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qod starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut head = Vec::new();
    let addr = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        head.push(line.clone());
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        // `--log-format json`
        if let Some(rest) = line.split("\"addr\":\"").nth(1) {
            break rest.split('"').next().unwrap().to_owned();
        }
    };
    let log = log.to_owned();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
        }
    });
    let stdout = child.stdout.take().map(BufReader::new);
    Process {
        child,
        addr,
        stdout,
        head,
    }
}
