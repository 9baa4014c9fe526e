//! What the benchmarks with a PyTorch side share: the counterpart script's process and its
//! JSON-lines protocol, the work folder, and the summaries of timed runs.

use std::path::{Path, PathBuf};

use crate::{EvalError, Result};

/// The arguments every benchmark with a PyTorch side takes.
#[derive(Debug, Clone, clap::Args)]
pub struct TorchSideArgs {
    /// Threads of both sides (sets RAYON_NUM_THREADS for candle; torch.set_num_threads for
    /// PyTorch). Default: candle's count (RAYON_NUM_THREADS, else the cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also run the same work in PyTorch (the bench's script in tools/bench), alternating
    /// repeats with ours.
    #[arg(long)]
    pub torch: bool,
    /// Python with torch and diffusers (default: $HSA_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<String>,
    /// The PyTorch script (default: the bench's script in tools/bench of this repository).
    #[arg(long)]
    pub torch_script: Option<PathBuf>,
    /// Folder for the weights and I/O files, kept afterwards (default: a temporary folder,
    /// removed at the end).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

impl TorchSideArgs {
    /// Applies `--threads` to candle (before its thread pools start) and returns the thread
    /// count both sides use.
    pub(crate) fn threads(&self) -> Result<usize> {
        if self.threads == Some(0) {
            return Err(EvalError::Invalid("--threads must be at least 1".into()));
        }
        if let Some(n) = self.threads {
            // Read by candle for every parallel kernel; rayon's pool reads it when first used.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
        Ok(candle_core::utils::get_num_threads())
    }

    /// The PyTorch script's command (see [`torch_command`]).
    pub(crate) fn command(&self, default_script: &str) -> std::process::Command {
        torch_command(
            self.python.as_deref(),
            self.torch_script.as_deref(),
            default_script,
        )
    }
}

/// The command that runs `tools/bench/<default_script>` (or `script`) with `python` (default:
/// `$HSA_PYTHON`, else `python3`).
pub(crate) fn torch_command(
    python: Option<&str>,
    script: Option<&Path>,
    default_script: &str,
) -> std::process::Command {
    let python = python
        .map(str::to_string)
        .or_else(|| std::env::var("HSA_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let script = script.map(Path::to_path_buf).unwrap_or_else(|| {
        let in_repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tools/bench")
            .join(default_script);
        if in_repo.is_file() {
            in_repo
        } else {
            Path::new("tools/bench").join(default_script)
        }
    });
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script);
    cmd
}

/// The benchmark's folder for weights and I/O files: `given` (kept), else a temporary folder
/// removed when the guard drops (also on errors).
pub(crate) fn work_folder(given: Option<&PathBuf>, name: &str) -> Result<(PathBuf, TempDir)> {
    let (dir, guard) = match given {
        Some(d) => (d.clone(), TempDir(None)),
        None => {
            let d = std::env::temp_dir().join(format!("hsa-bench-{name}-{}", std::process::id()));
            (d.clone(), TempDir(Some(d)))
        }
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| EvalError::Io(format!("cannot create {}: {e}", dir.display())))?;
    Ok((dir, guard))
}

/// The PyTorch version and thread count a script's "ready" event reports ("?" and 0 where
/// it does not say).
pub(crate) fn version_and_threads(ready: &serde_json::Value) -> (String, usize) {
    let version = ready.get("torch").and_then(|v| v.as_str()).unwrap_or("?");
    let threads = ready.get("threads").and_then(|v| v.as_u64()).unwrap_or(0);
    (version.to_string(), threads as usize)
}

/// Timed runs as "0.12, 0.13, ...".
pub(crate) fn runs(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// A running PyTorch counterpart script in `--serve` mode: it prints JSON events on stdout
/// and takes one command per line on stdin.
pub(crate) struct TorchServer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl TorchServer {
    pub(crate) fn start(cmd: &mut std::process::Command) -> Result<Self> {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| EvalError::Io(format!("cannot start {cmd:?}: {e}")))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        Ok(Self {
            child,
            stdin,
            lines: std::io::BufReader::new(stdout).lines(),
        })
    }

    /// The next JSON event; other lines (library messages) go to stderr.
    pub(crate) fn event(&mut self, want: &str) -> Result<serde_json::Value> {
        loop {
            let Some(line) = self.lines.next() else {
                let status = self.child.wait().map(|s| s.to_string());
                return Err(EvalError::Io(format!(
                    "the PyTorch script ended before '{want}' ({})",
                    status.unwrap_or_else(|e| e.to_string())
                )));
            };
            let line = line.map_err(|e| EvalError::Io(format!("PyTorch script output: {e}")))?;
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) if v.get("event").and_then(|e| e.as_str()) == Some(want) => return Ok(v),
                Ok(v) => {
                    return Err(EvalError::Io(format!(
                        "the PyTorch script answered {v} (expected '{want}')"
                    )))
                }
                Err(_) => eprintln!("{line}"),
            }
        }
    }

    pub(crate) fn send(&mut self, cmd: &str) -> Result<()> {
        use std::io::Write;
        writeln!(self.stdin, "{cmd}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| EvalError::Io(format!("PyTorch script input: {e}")))
    }

    /// Starts the script and waits for its "ready" event (sent after its warm-up).
    pub(crate) fn start_ready(
        cmd: &mut std::process::Command,
    ) -> Result<(Self, serde_json::Value)> {
        let mut server = Self::start(cmd)?;
        let ready = server.event("ready")?;
        Ok((server, ready))
    }

    /// Times one more repeat on the PyTorch side: its seconds.
    pub(crate) fn run(&mut self) -> Result<f64> {
        self.send("run")?;
        f64_field(&self.event("run")?, "seconds")
    }

    /// Sends "quit", waits for the script's "done" event and for it to exit.
    pub(crate) fn finish(mut self) -> Result<serde_json::Value> {
        self.send("quit")?;
        let done = self.event("done")?;
        let _ = self.child.wait();
        Ok(done)
    }
}

/// Removes the benchmark's temporary folder when dropped (also on errors).
pub(crate) struct TempDir(Option<std::path::PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

pub(crate) fn f64_field(v: &serde_json::Value, key: &str) -> Result<f64> {
    v.get(key)
        .and_then(|x| x.as_f64())
        .ok_or_else(|| EvalError::Io(format!("PyTorch script event {v} lacks '{key}'")))
}
