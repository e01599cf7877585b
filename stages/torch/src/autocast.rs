//! Mixed precision: bf16 autocast around a model's forward pass.
//!
//! `tch` 0.24 exposes only LibTorch's legacy CUDA autocast switch, whose
//! lower precision is fp16 and cannot be changed from Rust. LibTorch 2.11
//! itself has per-device switches and a per-device autocast dtype
//! (`at::autocast::set_autocast_enabled(DeviceType, bool)` and
//! `set_autocast_dtype(DeviceType, ScalarType)` in ATen/autocast_mode.h),
//! exported from `libtorch_cpu.so`. They are plain functions of two
//! one-byte enums, so they are called here by their (Itanium C++ ABI)
//! symbol names — the build pins LibTorch 2.11.0 (torch-sys 0.24), whose
//! library has exactly these symbols; a LibTorch without them fails at link
//! time, not at run time.
//!
//! Autocast runs the listed ops (matmul, linear, attention, GRU…) in bf16
//! while parameters, gradients and the optimiser stay fp32 — PyTorch's
//! `torch.autocast(device_type, dtype=torch.bfloat16)`. bf16 keeps fp32's
//! exponent range, so no gradient scaler is needed (fp16 would need one).

use serde::{Deserialize, Serialize};
use tch::Device;

/// The arithmetic a training runs its forward passes in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    #[serde(rename = "fp32")]
    Fp32,
    /// bf16 autocast around forward passes; fp32 weights and optimiser.
    #[serde(rename = "bf16")]
    Bf16,
}

impl Precision {
    /// `"fp32"` or `"bf16"`; anything else is refused, naming the choices.
    pub fn parse(s: &str) -> anyhow::Result<Precision> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            other => anyhow::bail!("precision `{other}` is not one of fp32, bf16"),
        }
    }
}

/// c10::DeviceType values (c10/core/DeviceType.h).
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
/// c10::ScalarType::BFloat16 (c10/core/ScalarType.h).
const SCALAR_BFLOAT16: i8 = 15;

#[link(name = "torch_cpu")]
extern "C" {
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn get_autocast_dtype(device: i8) -> i8;
}

/// Runs `f` under `precision` on `device`: as is for fp32, inside a bf16
/// autocast region for bf16. The previous autocast state is restored after,
/// and the region's cache of casted weights is dropped when the outermost
/// region ends (as `torch.autocast.__exit__` does), so the next step casts
/// the updated weights again.
pub fn run<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    if precision == Precision::Fp32 {
        return f();
    }
    let kind = match device {
        Device::Cuda(_) => DEVICE_CUDA,
        _ => DEVICE_CPU,
    };
    // SAFETY: the four functions only read or write LibTorch's thread-local
    // autocast state; the nesting counter and cache calls are tch's own.
    let (was_enabled, was_dtype) = unsafe { (is_autocast_enabled(kind), get_autocast_dtype(kind)) };
    unsafe {
        set_autocast_dtype(kind, SCALAR_BFLOAT16);
        set_autocast_enabled(kind, true);
        torch_sys::at_autocast_increment_nesting();
    }
    let out = f();
    unsafe {
        if torch_sys::at_autocast_decrement_nesting() == 0 {
            torch_sys::at_autocast_clear_cache();
        }
        set_autocast_enabled(kind, was_enabled);
        set_autocast_dtype(kind, was_dtype);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn bf16_runs_matmuls_in_bf16_and_restores_fp32_after() {
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        let inside = run(Precision::Bf16, Device::Cpu, || a.matmul(&b));
        assert_eq!(inside.kind(), Kind::BFloat16);
        assert_eq!(a.matmul(&b).kind(), Kind::Float, "autocast left on");
        let fp32 = run(Precision::Fp32, Device::Cpu, || a.matmul(&b));
        assert_eq!(fp32.kind(), Kind::Float);
        // bf16 keeps ~3 significant digits: close to fp32, not equal
        let diff = (inside.to_kind(Kind::Float) - &fp32)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff > 0.0 && diff < 0.1, "{diff}");
    }

    #[test]
    fn regions_nest_and_unknown_precisions_are_refused() {
        let a = Tensor::randn([2, 2], (Kind::Float, Device::Cpu));
        let kinds = run(Precision::Bf16, Device::Cpu, || {
            let inner = run(Precision::Bf16, Device::Cpu, || a.matmul(&a).kind());
            (inner, a.matmul(&a).kind())
        });
        assert_eq!(kinds, (Kind::BFloat16, Kind::BFloat16));
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        assert!(Precision::parse("fp16")
            .unwrap_err()
            .to_string()
            .contains("fp32, bf16"));
    }
}
