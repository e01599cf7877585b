//! Bakes LibTorch's library folder into every binary of this package (the
//! `seqpipe` binary, tests, examples) as a run path, so that nobody has to
//! export `LD_LIBRARY_PATH` to run what `cargo build` produced.
//!
//! torch-sys (`links = "tch"`) tells its direct dependants where LibTorch is
//! through `DEP_TCH_LIBTORCH_LIB`. The folder is also exported to the crate as
//! `SEQPIPE_LIBTORCH_LIB`, where `device.rs` looks for `libtorch_cuda.so`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:rustc-env=SEQPIPE_LIBTORCH_LIB={dir}");
    } else {
        println!("cargo:rustc-env=SEQPIPE_LIBTORCH_LIB=");
    }
}
