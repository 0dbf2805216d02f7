//! candle custom ops over [`super::kernels`]: fused GELU and LayerNorm on CPU f32, each with a
//! backward so that training and inference run the same kernels (attention has its own file).
//! [`super::layers`] decides when they apply; other devices and dtypes take candle's ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::kernels;

/// Whether the fused CPU kernels can run on `xs`.
pub fn applies(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32
}

pub(crate) fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported")
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: input must be contiguous")))?;
    Ok(&data[start..end])
}

/// Exact (erf) GELU.
pub fn gelu(xs: &Tensor) -> Result<Tensor> {
    xs.contiguous()?.apply_op1(Gelu)
}

/// LayerNorm over the last dimension.
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    let width = weight.elem_count();
    if xs.dims().last() != Some(&width) || bias.elem_count() != width {
        candle_core::bail!(
            "layer_norm: {:?} does not fit a weight of {width}",
            xs.dims()
        );
    }
    xs.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNorm { eps },
    )
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = slice(s, l, self.name())?;
        let mut out = vec![0f32; xs.len()];
        kernels::gelu_forward(xs, &mut out);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "fused-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = slice(s1, l1, self.name())?;
        let grad = slice(s2, l2, self.name())?;
        let mut out = vec![0f32; xs.len()];
        kernels::gelu_backward(xs, grad, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = slice(s1, l1, self.name())?;
        let weight = slice(s2, l2, self.name())?;
        let bias = slice(s3, l3, self.name())?;
        let mut out = vec![0f32; xs.len()];
        kernels::layer_norm_forward(xs, weight, bias, self.eps, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // One pass yields all three gradients, packed as rows [dx..., dweight, dbias].
        let width = weight.elem_count();
        let rows = xs.elem_count() / width;
        let packed = xs.apply_op3_no_bwd(
            weight,
            &grad.contiguous()?,
            &LayerNormGrad { eps: self.eps },
        )?;
        let dx = packed.narrow(0, 0, rows)?.reshape(xs.shape())?;
        let dw = packed.get(rows)?.reshape(weight.shape())?;
        let db = packed.get(rows + 1)?.reshape(weight.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = slice(s1, l1, self.name())?;
        let weight = slice(s2, l2, self.name())?;
        let grad = slice(s3, l3, self.name())?;
        let width = weight.len();
        let rows = xs.len() / width;
        let mut out = vec![0f32; (rows + 2) * width];
        let (dx, rest) = out.split_at_mut(rows * width);
        let (dw, db) = kernels::layer_norm_backward(xs, weight, grad, self.eps, dx);
        rest[..width].copy_from_slice(&dw);
        rest[width..].copy_from_slice(&db);
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, width))))
    }
}
