//! Running kubeadm: its inputs go to `/run` (never to a disk: a join configuration
//! holds a bootstrap token), its progress comes back as stages (the lines it starts
//! with a `[phase]` tag), and a failure carries the end of what it printed.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::KubeError;
use crate::config::CRI_SOCKET;
use crate::runtime::run;

/// Writes kubeadm's configuration (mode 0600) and its patches under `dir`; returns
/// the configuration's path.
pub fn write_inputs(
    dir: &Path,
    config: &str,
    patches: &[(String, String)],
) -> Result<PathBuf, KubeError> {
    let patches_dir = dir.join("patches");
    let _ = std::fs::remove_dir_all(&patches_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&patches_dir)
        .map_err(|source| KubeError::Write {
            path: patches_dir.clone(),
            source,
        })?;
    for (name, text) in patches {
        write_private(&patches_dir.join(name), text)?;
    }
    let path = dir.join("config.yaml");
    write_private(&path, config)?;
    Ok(path)
}

fn write_private(path: &Path, text: &str) -> Result<(), KubeError> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| KubeError::Write {
            path: path.to_owned(),
            source,
        })
}

/// The patches directory [`write_inputs`] fills under `dir`.
pub fn patches_dir(dir: &Path) -> PathBuf {
    dir.join("patches")
}

/// `kubeadm config validate`: the configuration is one kubeadm accepts.
pub fn validate(kubeadm: &Path, config: &Path) -> Result<(), KubeError> {
    run(Command::new(kubeadm)
        .args(["config", "validate", "--config"])
        .arg(config))
    .map(|_| ())
}

/// Runs kubeadm with `args`; every line it prints that opens with a `[phase]` tag
/// goes to `on_stage` as it comes. An error holds the last lines of its output.
pub fn run_staged(
    kubeadm: &Path,
    args: &[&str],
    mut on_stage: impl FnMut(&str),
) -> Result<(), KubeError> {
    let command = format!("{} {}", kubeadm.display(), args.join(" "));
    let mut child = Command::new(kubeadm)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| KubeError::Spawn {
            command: command.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(forward(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(forward(err, tx.clone()));
    }
    drop(tx);
    let mut output: Vec<String> = Vec::new();
    for line in rx {
        if line.starts_with('[') {
            on_stage(&line);
        }
        output.push(line);
        if output.len() > 400 {
            output.drain(..200);
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(|source| KubeError::Spawn {
        command: command.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        let start = output.len().saturating_sub(25);
        Err(KubeError::Command {
            command,
            status: status.to_string(),
            output: output[start..].join("\n"),
        })
    }
}

fn forward(
    stream: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    })
}

/// `kubeadm init` with the configuration at `config`.
pub fn init(kubeadm: &Path, config: &Path, on_stage: impl FnMut(&str)) -> Result<(), KubeError> {
    let config = config.display().to_string();
    run_staged(
        kubeadm,
        &[
            "init",
            "--config",
            &config,
            // kubeadm's own token lives a minute (config::init_documents) and is
            // nobody's business: nothing secret appears in the output.
            "--skip-token-print",
            "--skip-certificate-key-print",
        ],
        on_stage,
    )
}

/// `kubeadm join` with the configuration at `config`.
pub fn join(kubeadm: &Path, config: &Path, on_stage: impl FnMut(&str)) -> Result<(), KubeError> {
    let config = config.display().to_string();
    run_staged(kubeadm, &["join", "--config", &config], on_stage)
}

/// `kubeadm reset`: undoes a kubeadm run that failed half-way, so it can run again.
pub fn reset(kubeadm: &Path, on_stage: impl FnMut(&str)) -> Result<(), KubeError> {
    let socket = format!("--cri-socket={CRI_SOCKET}");
    run_staged(kubeadm, &["reset", "--force", &socket], on_stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_tagged_lines_and_failures_carry_the_output() {
        let sh = Path::new("/bin/sh");
        let mut stages = Vec::new();
        run_staged(
            sh,
            &[
                "-c",
                "echo '[certs] one'; echo plain; echo '[etcd] two' >&2",
            ],
            |s| stages.push(s.to_owned()),
        )
        .expect("runs");
        stages.sort();
        assert_eq!(stages, ["[certs] one", "[etcd] two"]);
        let err = run_staged(
            sh,
            &["-c", "echo '[preflight] x'; echo 'it broke' >&2; exit 3"],
            |_| {},
        )
        .expect_err("fails");
        let text = err.to_string();
        assert!(
            text.contains("it broke") && text.contains("exit status: 3"),
            "{text}"
        );
    }

    #[test]
    fn inputs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_inputs(
            dir.path(),
            "kind: JoinConfiguration",
            &[("etcd+strategic.json".into(), "{}".into())],
        )
        .expect("write");
        let mode = std::fs::metadata(&config)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(patches_dir(dir.path()).join("etcd+strategic.json").exists());
        // Written again (a retry): replaced, not refused.
        write_inputs(dir.path(), "kind: InitConfiguration", &[]).expect("again");
        assert_eq!(
            std::fs::read_to_string(&config).expect("read"),
            "kind: InitConfiguration"
        );
        assert!(!patches_dir(dir.path()).join("etcd+strategic.json").exists());
    }
}
