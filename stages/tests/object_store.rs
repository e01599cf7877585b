//! The cache in an S3-compatible object store (`--cache s3://bucket/prefix`),
//! against a real S3 server on loopback (moto in server mode, from PyPI,
//! installed into .venv by scripts/test.sh): a second machine (another
//! local folder) finds everything the first computed, downloads it and
//! computes nothing; two machines at once compute each stage once between
//! them.
//!
//! Where moto is missing the tests say `skipped: <reason>` and pass, unless
//! SEQPIPE_REQUIRE_MOTO is set (scripts/test.sh sets it once moto is there).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A moto S3 server for this test binary, killed when the binary exits.
struct Server {
    endpoint: String,
    _child: Child,
}

fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(start_server) {
        Ok(s) => Some(s),
        Err(reason) if std::env::var_os("SEQPIPE_REQUIRE_MOTO").is_some() => {
            panic!("SEQPIPE_REQUIRE_MOTO is set but the S3 server did not start: {reason}")
        }
        Err(reason) => {
            eprintln!("skipped: {reason}");
            None
        }
    }
}

fn start_server() -> Result<Server, String> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if !bin.exists() {
        return Err(format!("{} is not installed", bin.display()));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    // A static is never dropped, so the server cannot be killed from here:
    // a shell holds our pipe open and kills it once the pipe closes (this
    // test binary exited, however it ended).
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & s=$!; cat >/dev/null; kill $s"#)
        .arg(&bin)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Creating the bucket is the readiness probe.
    while http_put(port, "/seqpipe-test").is_err() {
        if Instant::now() > deadline {
            return Err(format!("moto did not answer on {endpoint}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Server {
        endpoint,
        _child: child,
    })
}

/// An unsigned `PUT path` (moto's server mode creates buckets from it).
fn http_put(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    if reply.starts_with("HTTP/1.1 200") {
        Ok(reply)
    } else {
        Err(std::io::Error::other(reply))
    }
}

const SPEC: &str = r#"
[pipeline]
name = "shared"
seed = 4
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 120, items = 50, min_len = 5, max_len = 15 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "sasrec", dim = 16, layers = 1, heads = 1, epochs = 4, max_len = 12 }

[stages.eval]
kind = "evaluate"
inputs = { model = "train.model", data = "sequences.data" }
"#;

/// A "machine": its own folder with the spec and its own local cache.
fn machine(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.toml"), SPEC).unwrap();
    dir
}

fn seqpipe(server: &Server, dir: &Path, url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_seqpipe"));
    c.args(args)
        .args(["--cache", url, "--local-cache", "cache"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", &server.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .current_dir(dir);
    c
}

fn run(server: &Server, dir: &Path, url: &str) -> Output {
    let out = seqpipe(server, dir, url, &["run", "p.toml", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Stage name → (outcome, outputs) of the last run recorded in `dir`.
fn last_run(dir: &Path) -> BTreeMap<String, (String, serde_json::Value)> {
    let text = std::fs::read(dir.join("cache/runs/shared/latest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&text).unwrap();
    manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (
                    s["outcome"].as_str().unwrap().to_string(),
                    s["outputs"].clone(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_second_machine_finds_everything_in_the_store_and_computes_nothing() {
    let Some(server) = server() else { return };
    let root = tempfile::tempdir().unwrap();
    let url = "s3://seqpipe-test/two-machines";
    let a = machine(root.path(), "a");
    let b = machine(root.path(), "b");
    run(server, &a, url);
    let first = last_run(&a);
    assert!(first.values().all(|(o, _)| o == "ran"), "{first:?}");

    run(server, &b, url);
    let second = last_run(&b);
    for (stage, (outcome, outputs)) in &second {
        assert_eq!(outcome, "cached", "{stage} was computed again");
        assert_eq!(outputs, &first[stage].1, "{stage}");
    }
    // The hits were downloaded and verified: b's folder now holds them, so
    // `show` reads the metrics locally.
    let eval = second["eval"].1["metrics"].as_str().unwrap();
    assert!(b
        .join("cache/objects")
        .join(&eval[..2])
        .join(eval)
        .join("metrics.json")
        .is_file());
    let show = seqpipe(server, &b, url, &["show", "p.toml"])
        .output()
        .unwrap();
    assert!(show.status.success());
}

#[test]
fn two_machines_at_once_compute_each_stage_once_between_them() {
    let Some(server) = server() else { return };
    let root = tempfile::tempdir().unwrap();
    let url = "s3://seqpipe-test/at-once";
    let dirs = [machine(root.path(), "a"), machine(root.path(), "b")];
    let children: Vec<Child> = dirs
        .iter()
        .map(|d| {
            seqpipe(server, d, url, &["run", "p.toml", "--quiet"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut waited = false;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        waited |= err.contains("another run is computing it");
    }
    assert!(waited, "neither run waited for the other");
    let runs: Vec<_> = dirs.iter().map(|d| last_run(d)).collect();
    for stage in runs[0].keys() {
        let computed = runs.iter().filter(|r| r[stage].0 == "ran").count();
        assert_eq!(computed, 1, "`{stage}` computed {computed} times");
        assert_eq!(runs[0][stage].1, runs[1][stage].1, "{stage}");
    }
}

#[test]
fn an_unsupported_store_is_named_in_the_error() {
    let Some(server) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = machine(dir.path(), "a");
    let out = seqpipe(server, &d, "ftp://example.invalid/x", &["run", "p.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the shared cache ftp://example.invalid/x"),
        "{err}"
    );
}
