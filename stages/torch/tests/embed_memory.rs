//! `embed.infonce`'s memory, measured by hand (both tests are ignored: they
//! take minutes on 2 cores and read this process's RSS, which other tests
//! running beside them would disturb). See docs/embed-memory.md.
//!
//!   cargo test --release -p seqpipe-torch --test embed_memory -- --ignored --nocapture
//!
//! `rss_over_batches` trains the tower on a catalogue-sized table (V, D, B,
//! N from the environment) and fails if the resident set keeps growing
//! batch after batch; `stage_rss` runs the whole stage on a graph folder
//! (GRAPH) and prints the RSS every 5 s.

use seqpipe_torch::models::infonce::{chunked_infonce, InfoNce, InfoNceConfig};
use seqpipe_torch::models::optim::{AdamW, AdamWConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn rss_kb() -> u64 {
    status_kb("VmRSS")
}

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore]
fn rss_over_batches() {
    let (v, d, b, n) = (
        env("V", 96_000),
        env("D", 128),
        env("B", 1024),
        env("N", 300),
    );
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let cfg = InfoNceConfig {
        num_items: v,
        dim: d,
        hidden: d,
    };
    let model = InfoNce::new(&vs.root(), &cfg);
    let mut opt = AdamW::from_var_store(&vs, AdamWConfig::default());
    let start = std::time::Instant::now();
    let mut after_warm_up = 0;
    for step in 0..n {
        let a = Tensor::randint_low(1, v + 1, [b], (Kind::Int64, Device::Cpu));
        let bb = Tensor::randint_low(1, v + 1, [b], (Kind::Int64, Device::Cpu));
        let z = model.encode(&Tensor::cat(&[&a, &bb], 0));
        let zd = z.detach();
        let loss = chunked_infonce(&zd.narrow(0, 0, b), &zd.narrow(0, b, b), &a, &bb, 0.1, true);
        opt.backward_step(&loss.surrogate(&z));
        if step == 5 {
            after_warm_up = rss_kb();
        }
        if step % 20 == 0 || step == n - 1 {
            eprintln!(
                "step {step} rss {} MB {:.3}s/batch peak {} MB",
                rss_kb() / 1024,
                start.elapsed().as_secs_f64() / (step + 1) as f64,
                status_kb("VmHWM") / 1024
            );
        }
    }
    // Once the first batches have sized the heap, a batch must not leave
    // memory behind (the old per-batch tensors grew it ~1 MB per batch).
    let grown = rss_kb().saturating_sub(after_warm_up) / 1024;
    assert!(
        n <= 5 || grown < 64,
        "RSS grew {grown} MB after the 5th batch"
    );
}

#[test]
#[ignore]
fn stage_rss() {
    use seqpipe::progress::Progress;
    use seqpipe::stage::StageContext;
    let graph = std::path::PathBuf::from(std::env::var("GRAPH").unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("embeddings");
    std::fs::create_dir_all(&out).unwrap();
    std::thread::spawn(|| loop {
        eprintln!("rss {} MB", rss_kb() / 1024);
        std::thread::sleep(std::time::Duration::from_secs(5));
    });
    let registry = seqpipe_torch::registry();
    let stage = registry.get("embed.infonce").unwrap();
    let progress = Progress::hidden();
    let params =
        serde_json::json!({"dim": env("D", 128), "epochs": 1, "batch_size": env("B", 1024)});
    let mut ctx = StageContext {
        stage: "embed.infonce",
        params,
        seed: 42,
        device: "cpu",
        inputs: [("graph".to_string(), graph)].into_iter().collect(),
        outputs: [("embeddings".to_string(), out)].into_iter().collect(),
        checkpoint_dir: tmp.path().join("ckpt"),
        progress: &progress,
        notes: Default::default(),
    };
    stage.run(&mut ctx).unwrap();
    eprintln!("done rss {} MB notes {:?}", rss_kb() / 1024, ctx.notes);
}
