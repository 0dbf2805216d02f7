//! Where and in which floating-point format the encoder computes: `--device` parsing and
//! `--precision`.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// The floating-point format the transformer computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// What sentence-transformers computes in; the only fast format on CPU.
    #[default]
    F32,
    /// bfloat16, for GPUs (Ampere and later): f32's range, 8 bits of mantissa.
    Bf16,
    /// float16, for GPUs: more mantissa than bf16 but a range that ends at 65504.
    F16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

/// Parses `cpu` or `cuda:N` (`cuda` means `cuda:0`).
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        s => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Device::new_cuda(n).map_err(|e| {
                Error::Invalid(format!(
                    "device {s}: {e} (CUDA needs a build with `--features cuda` and a GPU)"
                ))
            }),
            None => Err(Error::Invalid(format!(
                "unknown device {s:?}: use cpu or cuda:N"
            ))),
        },
    }
}

/// Half precision on CPU takes candle's generic ops, not the fused f32 kernels.
pub(crate) fn warn_if_slow(dtype: DType, device: &Device) {
    if dtype != DType::F32 && device.is_cpu() {
        tracing::warn!(
            "{dtype:?} on CPU runs candle's unfused ops and is slower than f32; it is meant for GPUs"
        );
    }
}
