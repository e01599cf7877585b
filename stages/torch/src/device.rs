//! Picks the LibTorch device for a tensor stage, loading CUDA on demand.
//!
//! The `seqpipe` binary links LibTorch's CPU libraries only (the linker drops
//! `libtorch_cuda.so`, whose symbols nothing references), so that it starts
//! fast and runs on machines without a GPU. When a tensor stage asks for
//! `auto` or `cuda`, `libtorch_cuda.so` is loaded here, from the LibTorch
//! folder the binary was built against or the library path; its static
//! initialisers register CUDA with LibTorch, after which
//! `tch::Cuda::is_available()` tells the truth.

use std::sync::OnceLock;

use tch::Device;

static CUDA: OnceLock<Result<(), String>> = OnceLock::new();

/// Loads `libtorch_cuda.so` once; `Err` says why it could not be.
pub fn load_cuda() -> Result<(), String> {
    CUDA.get_or_init(|| {
        let baked = env!("SEQPIPE_LIBTORCH_LIB");
        let mut candidates = vec![];
        if !baked.is_empty() {
            candidates.push(format!("{baked}/libtorch_cuda.so"));
        }
        candidates.push("libtorch_cuda.so".to_string());
        let mut errors = vec![];
        for candidate in candidates {
            // SAFETY: loading LibTorch's own CUDA library; its initialisers
            // only register CUDA hooks. The handle is leaked on purpose: the
            // library must stay loaded for the life of the process.
            let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
            match unsafe { libloading::os::unix::Library::open(Some(&candidate), flags) } {
                Ok(lib) => {
                    std::mem::forget(lib);
                    return Ok(());
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(errors.join("; "))
    })
    .clone()
}

/// Resolves a pipeline's device request (`auto`, `cpu`, `cuda`, `cuda:N`).
pub fn resolve(request: &str) -> anyhow::Result<Device> {
    let gpu_present = std::path::Path::new("/dev/nvidiactl").exists();
    match request {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if gpu_present && load_cuda().is_ok() && tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Ok(Device::Cpu)
            }
        }
        other => {
            let index = match other.strip_prefix("cuda") {
                Some("") => 0,
                Some(n) => n.trim_start_matches(':').parse::<usize>()?,
                None => anyhow::bail!("unknown device `{other}`"),
            };
            load_cuda().map_err(|e| {
                anyhow::anyhow!("device `{other}`: cannot load libtorch_cuda.so: {e}")
            })?;
            anyhow::ensure!(
                tch::Cuda::is_available(),
                "device `{other}` was requested but CUDA is not available on this machine"
            );
            anyhow::ensure!(
                (index as i64) < tch::Cuda::device_count(),
                "device `{other}`: only {} CUDA device(s)",
                tch::Cuda::device_count()
            );
            Ok(Device::Cuda(index))
        }
    }
}

/// A short name for the run manifest.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// Whether CUDA was loaded in this process (without trying to load it).
pub fn load_cuda_state() -> String {
    match CUDA.get() {
        None => "not requested".into(),
        Some(Ok(())) => format!("yes, {} device(s)", tch::Cuda::device_count()),
        Some(Err(e)) => format!("no: {e}"),
    }
}
