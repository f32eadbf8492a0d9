//! The LSTM predictor (candle-nn): one LSTM layer, a next-step head (its residual is an
//! anomaly signal) and a P(failure within the model's horizon) head, both read from the hidden
//! state at every step. The hidden state is carried across samples, so serving is one batched
//! step per tick for every component with new data ([`LstmModel::step`]).
//!
//! Training is truncated back-propagation through time over whole sequences: every sequence
//! of a batch starts from the zero state, like a component that was just registered, and the
//! state is carried (detached) from one chunk to the next. Files are safetensors with the
//! [`ModelMeta`] as JSON in the header's metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::rnn::{LSTMConfig, LSTMState, LSTM, RNN};
use candle_nn::{Linear, Module, Optimizer, VarBuilder, VarMap};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::PredictError;

/// How inputs are scaled before the model sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Scaling {
    /// Inputs are already scaled by the caller (the node's online normaliser: EW z-scores
    /// clipped to ±5).
    Prescaled,
    /// Min–max over the training fleet, per input.
    Fleet { min: Vec<f32>, max: Vec<f32> },
}

impl Scaling {
    /// Scales one row of raw inputs in place.
    pub fn apply(&self, row: &mut [f32]) {
        if let Scaling::Fleet { min, max } = self {
            for (j, v) in row.iter_mut().enumerate() {
                let span = (max[j] - min[j]).max(1e-6);
                *v = ((*v - min[j]) / span).clamp(-1.0, 2.0);
            }
        }
    }
}

/// What a model file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Content-derived version, `lstm-<inputs>x<hidden>-<hash>`, set when saved.
    pub version: String,
    pub inputs: usize,
    pub hidden: usize,
    pub features: Vec<String>,
    pub scaling: Scaling,
    /// What "failure" means for the P(fail) head: its horizon in the data's own steps.
    pub horizon_steps: u32,
    pub seed: u64,
}

impl ModelMeta {
    pub fn new(features: Vec<String>, hidden: usize, horizon_steps: u32, seed: u64) -> Self {
        Self {
            version: String::new(),
            inputs: features.len(),
            hidden,
            features,
            scaling: Scaling::Prescaled,
            horizon_steps,
            seed,
        }
    }

    /// The metric names the model reads, slot by slot; empty when it was trained on unnamed
    /// slots (the synthetic fleet's `metric0`, `metric1`, …), whose inputs a component's
    /// metrics fill in the order first seen.
    pub fn input_names(&self) -> Vec<String> {
        let unnamed = |(i, f): (usize, &String)| f.strip_prefix("metric") == Some(&i.to_string());
        if self.features.iter().enumerate().all(unnamed) {
            Vec::new()
        } else {
            self.features.clone()
        }
    }

    /// Scales one row of raw inputs the way the model expects.
    pub fn scale(&self, row: &mut [f32]) {
        self.scaling.apply(row);
    }
}

/// The model.
pub struct LstmModel {
    pub meta: ModelMeta,
    varmap: VarMap,
    lstm: LSTM,
    next: Linear,
    fail: Linear,
    device: Device,
    /// The serving path's weights, laid out for one matmul per step (see [`Fused`]).
    fused: Fused,
}

/// Inference weights, contiguous: `[x | h] · w + bias` gives the four gates (i, f, g, o, as
/// PyTorch and candle order them) in one matmul; `h · head_w + head_b` gives the next-step
/// forecast and the failure logit in another.
struct Fused {
    w: Tensor,
    bias: Vec<f32>,
    head_w: Tensor,
    head_b: Vec<f32>,
}

impl Fused {
    fn from_varmap(varmap: &VarMap) -> Result<Self, PredictError> {
        let data = locked(varmap)?;
        let get = |name: &str| {
            data.get(name)
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| PredictError::param("model", format!("tensor {name} missing")))
        };
        // [4H, in] and [4H, H] → [4H, in + H] → [in + H, 4H].
        let w = Tensor::cat(&[get("lstm.weight_ih_l0")?, get("lstm.weight_hh_l0")?], 1)?
            .t()?
            .contiguous()?;
        let bias: Vec<f32> = (get("lstm.bias_ih_l0")? + get("lstm.bias_hh_l0")?)?.to_vec1()?;
        // [in, H] and [1, H] → [in + 1, H] → [H, in + 1].
        let head_w = Tensor::cat(&[get("next.weight")?, get("fail.weight")?], 0)?
            .t()?
            .contiguous()?;
        let head_b: Vec<f32> =
            Tensor::cat(&[get("next.bias")?, get("fail.bias")?], 0)?.to_vec1()?;
        Ok(Self {
            w,
            bias,
            head_w,
            head_b,
        })
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// tanh by a (7, 6) Padé approximant, clamped where it reaches ±1 (|error| < 1e-4, largest
/// near |x| = 5):
/// no branch, no libm call, so the gate loop vectorises.
#[inline(always)]
fn fast_tanh(x: f32) -> f32 {
    let x = x.clamp(-9.0, 9.0);
    let x2 = x * x;
    let p = x * (135_135.0 + x2 * (17_325.0 + x2 * (378.0 + x2)));
    let q = 135_135.0 + x2 * (62_370.0 + x2 * (3_150.0 + x2 * 28.0));
    (p / q).clamp(-1.0, 1.0)
}

#[inline(always)]
fn fast_sigmoid(x: f32) -> f32 {
    0.5 + 0.5 * fast_tanh(0.5 * x)
}

/// Rows per chunk of a batched step (see [`LstmModel::step`]).
const STEP_ROWS: usize = 512;

/// Runs `f` on the f32 contents of a contiguous CPU tensor without copying them out.
fn with_cpu_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, PredictError> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(PredictError::param("step", "tensor is not on the CPU"));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| PredictError::param("step", "tensor is not contiguous"))?;
    Ok(f(&cpu.as_slice::<f32>()?[start..end]))
}

/// The gate arithmetic of one step for the rows of `gates` (`rows × 4H`), updating `h` and `c`
/// (`rows × H`) in place. The loop has no branch and no libm call; it is compiled once per
/// instruction set (SSE2, AVX2+FMA, AVX-512) and the widest the CPU has is picked at run time,
/// since the release build targets baseline x86-64.
fn apply_gates(gates: &[f32], bias: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    pulp::Arch::new().dispatch(|| gate_rows(gates, bias, h, c, hidden));
}

#[inline(always)]
fn gate_rows(gates: &[f32], bias: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    let (bi, rest) = bias.split_at(hidden);
    let (bf, rest) = rest.split_at(hidden);
    let (bg, bo) = rest.split_at(hidden);
    for ((g, hr), cr) in gates
        .chunks_exact(4 * hidden)
        .zip(h.chunks_exact_mut(hidden))
        .zip(c.chunks_exact_mut(hidden))
    {
        let (gi, rest) = g.split_at(hidden);
        let (gf, rest) = rest.split_at(hidden);
        let (gg, go) = rest.split_at(hidden);
        for j in 0..hidden {
            let i = fast_sigmoid(gi[j] + bi[j]);
            let f = fast_sigmoid(gf[j] + bf[j]);
            let gt = fast_tanh(gg[j] + bg[j]);
            let o = fast_sigmoid(go[j] + bo[j]);
            let cn = f * cr[j] + i * gt;
            cr[j] = cn;
            hr[j] = o * fast_tanh(cn);
        }
    }
}

impl std::fmt::Debug for LstmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LstmModel")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// One batched step's outputs, row-major by component.
#[derive(Debug, Clone, Default)]
pub struct StepOut {
    /// The forecast of each component's next (scaled) input row, `batch × inputs`.
    pub next: Vec<f32>,
    /// P(failure within the horizon), one per component.
    pub p_fail: Vec<f32>,
}

/// One training or evaluation sequence: `len` rows of `inputs` values (scaled), and
/// optionally a failure label per row.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub rows: Vec<f32>,
    pub labels: Option<Vec<f32>>,
    /// Optionally, per row, the steps until the failure ahead (NaN where none is known): the
    /// target of an auxiliary time-to-failure head used only in training.
    pub ttf: Option<Vec<f32>>,
    pub len: usize,
}

/// Training options.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    pub epochs: usize,
    /// Truncated BPTT length.
    pub chunk: usize,
    /// Sequences per batch.
    pub batch: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Weight of the failure loss against the next-step loss.
    pub fail_weight: f64,
    /// Weight of positive failure labels (they are rare).
    pub positive_weight: f64,
    /// Weight of the auxiliary time-to-failure loss (0: off).
    pub ttf_weight: f64,
    /// The learning rate falls along a half cosine from `learning_rate` to this share of it
    /// at the last epoch (1: constant).
    pub final_lr_ratio: f64,
    /// The model's weights are the mean of its weights at the end of each epoch in this
    /// last share of the epochs (0: the last epoch's weights).
    pub average_last: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 30,
            chunk: 32,
            batch: 32,
            learning_rate: 5e-3,
            seed: 7,
            fail_weight: 1.0,
            positive_weight: 1.0,
            ttf_weight: 0.0,
            final_lr_ratio: 1.0,
            average_last: 0.0,
        }
    }
}

impl TrainOptions {
    /// Every option that would make training meaningless, named.
    pub fn validate(&self) -> Result<(), PredictError> {
        let counts = [
            ("epochs", self.epochs, 1),
            ("batch", self.batch, 1),
            ("chunk", self.chunk, 2),
        ];
        if let Some(&(name, v, least)) = counts.iter().find(|(_, v, least)| v < least) {
            return Err(PredictError::param(name, format!("{v} is below {least}")));
        }
        let weights = [
            ("learning_rate", self.learning_rate),
            ("fail_weight", self.fail_weight),
            ("positive_weight", self.positive_weight),
            ("ttf_weight", self.ttf_weight),
        ];
        if let Some(&(name, v)) = weights.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return Err(PredictError::param(
                name,
                format!("{v} is not a finite value >= 0"),
            ));
        }
        let shares = [
            ("final_lr_ratio", self.final_lr_ratio),
            ("average_last", self.average_last),
        ];
        if let Some(&(name, v)) = shares.iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
            return Err(PredictError::param(name, format!("{v} is not in [0, 1]")));
        }
        Ok(())
    }
}

/// Progress of one epoch, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    pub next_loss: f64,
    pub fail_loss: f64,
}

/// A small deterministic generator (xorshift64*), so initial weights and batch order depend
/// on the seed only.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

impl LstmModel {
    /// A fresh model, weights uniform in ±1/√hidden from `meta.seed`.
    pub fn new(meta: ModelMeta) -> Result<Self, PredictError> {
        if meta.inputs == 0 || meta.hidden == 0 {
            return Err(PredictError::param("meta", "inputs and hidden must be > 0"));
        }
        let mut rng = SeededRng::new(meta.seed);
        let hidden = meta.hidden;
        Self::with_weights(meta, |vars| fill_uniform(vars, hidden, &mut rng))
    }

    /// Builds the layers for `meta`, lets `set` fill every variable (by name), and lays out the
    /// serving weights: the one path of [`LstmModel::new`] and [`LstmModel::from_bytes`].
    fn with_weights(
        meta: ModelMeta,
        set: impl FnOnce(&HashMap<String, candle_core::Var>) -> Result<(), PredictError>,
    ) -> Result<Self, PredictError> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let (lstm, next, fail) = build(&varmap, &meta, &device)?;
        set(&*locked(&varmap)?)?;
        let fused = Fused::from_varmap(&varmap)?;
        Ok(Self {
            meta,
            varmap,
            lstm,
            next,
            fail,
            device,
            fused,
        })
    }

    /// One model that is the members side by side: an LSTM of their hidden units together,
    /// each member's units reading only their own state (the recurrent weights are block
    /// diagonal), and heads that average the members' heads (the failure head averages their
    /// logits). Run as one model, it gives the mean of the members' outputs; it is served,
    /// saved and loaded like any other. The members must read the same inputs the same way.
    pub fn merge(members: &[LstmModel]) -> Result<Self, PredictError> {
        let first = members
            .first()
            .ok_or_else(|| PredictError::param("members", "none to merge"))?;
        for m in members {
            let (a, b) = (&m.meta, &first.meta);
            if (a.inputs, &a.features, &a.scaling, a.horizon_steps)
                != (b.inputs, &b.features, &b.scaling, b.horizon_steps)
            {
                return Err(PredictError::param(
                    "members",
                    "they differ in inputs, scaling or horizon",
                ));
            }
        }
        let k = members.len();
        let total: usize = members.iter().map(|m| m.meta.hidden).sum();
        let inputs = first.meta.inputs;
        let mut meta = first.meta.clone();
        meta.hidden = total;
        meta.version.clear();
        // Each member's tensors as rows of f32 (a vector as a column: one value a row).
        let tensors: Vec<HashMap<String, Vec<Vec<f32>>>> = members
            .iter()
            .map(|m| {
                locked(&m.varmap)?
                    .iter()
                    .map(|(name, var)| {
                        let t = var.as_tensor();
                        let rows = if t.rank() == 1 {
                            t.to_vec1::<f32>()?.into_iter().map(|v| vec![v]).collect()
                        } else {
                            t.to_vec2::<f32>()?
                        };
                        Ok((name.clone(), rows))
                    })
                    .collect::<Result<_, PredictError>>()
            })
            .collect::<Result<_, _>>()?;
        let get = |m: usize, name: &str| -> Result<&Vec<Vec<f32>>, PredictError> {
            tensors[m]
                .get(name)
                .ok_or_else(|| PredictError::param("model", format!("tensor {name} missing")))
        };
        // Gate rows (weights and biases): for each gate (i, f, g, o), every member's rows of
        // that gate in turn; `block` places a recurrent row's columns at its member's own
        // offset.
        let gate_rows = |name: &str, block: bool| -> Result<Vec<f32>, PredictError> {
            let mut out = Vec::new();
            for gate in 0..4 {
                let mut offset = 0;
                for (m, member) in members.iter().enumerate() {
                    let h = member.meta.hidden;
                    for row in &get(m, name)?[gate * h..(gate + 1) * h] {
                        if block {
                            let mut wide = vec![0.0; total];
                            wide[offset..offset + row.len()].copy_from_slice(row);
                            out.extend(wide);
                        } else {
                            out.extend_from_slice(row);
                        }
                    }
                    offset += h;
                }
            }
            Ok(out)
        };
        // Heads: [out, h] per member → [out, total], each member's columns over k.
        let head_w = |name: &str, outs: usize| -> Result<Vec<f32>, PredictError> {
            let mut out = vec![0.0; outs * total];
            let mut offset = 0;
            for (m, member) in members.iter().enumerate() {
                let h = member.meta.hidden;
                for (r, row) in get(m, name)?.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        out[r * total + offset + j] = v / k as f32;
                    }
                }
                offset += h;
            }
            Ok(out)
        };
        let head_b = |name: &str| -> Result<Vec<f32>, PredictError> {
            let mut out = vec![0.0; get(0, name)?.len()];
            for m in 0..k {
                for (a, row) in out.iter_mut().zip(get(m, name)?) {
                    *a += row[0] / k as f32;
                }
            }
            Ok(out)
        };
        let mut merged: HashMap<&str, Vec<f32>> = [
            ("lstm.weight_ih_l0", gate_rows("lstm.weight_ih_l0", false)?),
            ("lstm.weight_hh_l0", gate_rows("lstm.weight_hh_l0", true)?),
            ("lstm.bias_ih_l0", gate_rows("lstm.bias_ih_l0", false)?),
            ("lstm.bias_hh_l0", gate_rows("lstm.bias_hh_l0", false)?),
            ("next.weight", head_w("next.weight", inputs)?),
            ("next.bias", head_b("next.bias")?),
            ("fail.weight", head_w("fail.weight", 1)?),
            ("fail.bias", head_b("fail.bias")?),
        ]
        .into();
        Self::with_weights(meta, |vars| {
            for (name, var) in vars {
                let vals = merged.remove(name.as_str()).ok_or_else(|| {
                    PredictError::param("model", format!("tensor {name} not merged"))
                })?;
                var.set(&Tensor::from_vec(vals, var.shape(), &Device::Cpu)?)?;
            }
            Ok(())
        })
    }

    /// Loads a model file.
    pub fn load(path: &Path) -> Result<Self, PredictError> {
        let buf = std::fs::read(path).map_err(|e| PredictError::io(path, e))?;
        Self::from_bytes(&buf).map_err(|e| PredictError::input(path, e.to_string()))
    }

    /// Loads a model from the bytes of a file (e.g. one shipped in the binary).
    pub fn from_bytes(buf: &[u8]) -> Result<Self, PredictError> {
        let (_, header) = safetensors::SafeTensors::read_metadata(buf)
            .map_err(|e| PredictError::param("model", format!("not a safetensors file: {e}")))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("augur"))
            .ok_or_else(|| PredictError::param("model", "no `augur` metadata in the header"))?;
        let meta: ModelMeta = serde_json::from_str(meta_json)
            .map_err(|e| PredictError::param("model", format!("bad metadata: {e}")))?;
        let tensors = candle_core::safetensors::load_buffer(buf, &Device::Cpu)?;
        Self::with_weights(meta, |vars| {
            for (name, var) in vars {
                let t = tensors.get(name).ok_or_else(|| {
                    PredictError::param("model", format!("tensor {name} missing"))
                })?;
                if t.shape() != var.shape() {
                    return Err(PredictError::param(
                        "model",
                        format!(
                            "tensor {name} has shape {:?}, want {:?}",
                            t.shape(),
                            var.shape()
                        ),
                    ));
                }
                finite_values(name, t)?;
                var.set(t)?;
            }
            Ok(())
        })
    }

    /// Loads a model the node can serve: one saved by `augur train` (it has a version) whose
    /// inputs are the node's own scaling, an online z-score per metric. A model trained on
    /// raw columns min–max scaled over a fleet (C-MAPSS) would be fed inputs on another scale
    /// and give meaningless probabilities, so it is refused with the reason.
    pub fn for_node(buf: &[u8]) -> Result<Self, PredictError> {
        let m = Self::from_bytes(buf)?;
        if m.meta.version.is_empty() {
            return Err(PredictError::param(
                "model",
                "it has no version: save it with `augur train`",
            ));
        }
        if m.meta.scaling != Scaling::Prescaled {
            return Err(PredictError::param(
                "model",
                format!(
                    "{} reads raw inputs min–max scaled over its training fleet; the node \
                     feeds each metric as an online z-score, so it can only be evaluated \
                     (`augur train --data`), not served: serve a model from \
                     `augur train --synthetic`",
                    m.meta.version
                ),
            ));
        }
        Ok(m)
    }

    /// Writes the model; sets and returns its version (a hash of the weights and meta).
    pub fn save(&mut self, path: &Path) -> Result<String, PredictError> {
        let data = locked(&self.varmap)?;
        let named = by_name(&data);
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for (name, var) in &named {
            for b in name.bytes() {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
            for v in finite_values(name, var.as_tensor())? {
                h = (h ^ v.to_bits() as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
        self.meta.version = format!("lstm-{}x{}-{:016x}", self.meta.inputs, self.meta.hidden, h);
        let meta_json = serde_json::to_string(&self.meta)
            .map_err(|e| PredictError::param("meta", e.to_string()))?;
        let tensors: Vec<(String, Tensor)> = named
            .iter()
            .map(|(n, v)| ((*n).clone(), v.as_tensor().clone()))
            .collect();
        let metadata: HashMap<String, String> = [("augur".to_string(), meta_json)].into();
        safetensors::serialize_to_file(tensors, Some(metadata), path).map_err(|e| {
            PredictError::param("model", format!("writing {}: {e}", path.display()))
        })?;
        Ok(self.meta.version.clone())
    }

    /// One step for `batch` components at once. `x` is `batch × inputs` scaled inputs; `h`
    /// and `c` are `batch × hidden` and are replaced by the new state.
    pub fn step(
        &self,
        batch: usize,
        x: &[f32],
        h: &mut [f32],
        c: &mut [f32],
    ) -> Result<StepOut, PredictError> {
        let (i, hd) = (self.meta.inputs, self.meta.hidden);
        if x.len() != batch * i || h.len() != batch * hd || c.len() != batch * hd {
            return Err(PredictError::param(
                "step",
                "buffer sizes do not match batch",
            ));
        }
        if batch == 0 {
            return Ok(StepOut::default());
        }
        let mut out = StepOut {
            next: vec![0.0; batch * i],
            p_fail: vec![0.0; batch],
        };
        // Rows go in chunks small enough that a chunk's gates stay in cache between the
        // matmul that writes them and the loop that reads them, and that no buffer is large
        // enough for the allocator to map and unmap it afresh every step; the chunks run on
        // rayon's pool (the matmuls inside share it).
        x.par_chunks(STEP_ROWS * i)
            .zip(h.par_chunks_mut(STEP_ROWS * hd))
            .zip(c.par_chunks_mut(STEP_ROWS * hd))
            .zip(out.next.par_chunks_mut(STEP_ROWS * i))
            .zip(out.p_fail.par_chunks_mut(STEP_ROWS))
            .try_for_each(|((((x, h), c), next), p_fail)| self.step_rows(x, h, c, next, p_fail))?;
        Ok(out)
    }

    /// [`LstmModel::step`] for one chunk of rows.
    fn step_rows(
        &self,
        x: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        next: &mut [f32],
        p_fail: &mut [f32],
    ) -> Result<(), PredictError> {
        let (i, hd) = (self.meta.inputs, self.meta.hidden);
        let rows = p_fail.len();
        // [x | h] rows, one matmul for the four gates of every component.
        let mut xh = Vec::with_capacity(rows * (i + hd));
        for (xr, hr) in x.chunks_exact(i).zip(h.chunks_exact(hd)) {
            xh.extend_from_slice(xr);
            xh.extend_from_slice(hr);
        }
        let gates = Tensor::from_vec(xh, (rows, i + hd), &self.device)?.matmul(&self.fused.w)?;
        with_cpu_slice(&gates, |g| apply_gates(g, &self.fused.bias, h, c, hd))?;
        let heads = Tensor::from_slice(h, (rows, hd), &self.device)?.matmul(&self.fused.head_w)?;
        with_cpu_slice(&heads, |heads| {
            for ((row, nx), p) in heads
                .chunks_exact(i + 1)
                .zip(next.chunks_exact_mut(i))
                .zip(p_fail.iter_mut())
            {
                for ((n, v), b) in nx.iter_mut().zip(&row[..i]).zip(&self.fused.head_b) {
                    *n = v + b;
                }
                *p = sigmoid(row[i] + self.fused.head_b[i]);
            }
        })
    }

    /// Runs whole sequences from the zero state; returns per sequence and row the forecast
    /// of the next row and P(fail).
    pub fn run(&self, seqs: &[&Sequence]) -> Result<Vec<StepOut>, PredictError> {
        let (i, hd) = (self.meta.inputs, self.meta.hidden);
        let b = seqs.len();
        let max_len = seqs.iter().map(|s| s.len).max().unwrap_or(0);
        let mut h = vec![0f32; b * hd];
        let mut c = vec![0f32; b * hd];
        let mut out: Vec<StepOut> = seqs
            .iter()
            .map(|s| StepOut {
                next: Vec::with_capacity(s.len * i),
                p_fail: Vec::with_capacity(s.len),
            })
            .collect();
        let mut x = vec![0f32; b * i];
        for t in 0..max_len {
            for (k, s) in seqs.iter().enumerate() {
                let row = t.min(s.len.saturating_sub(1));
                x[k * i..(k + 1) * i].copy_from_slice(&s.rows[row * i..(row + 1) * i]);
            }
            let step = self.step(b, &x, &mut h, &mut c)?;
            for (k, s) in seqs.iter().enumerate() {
                if t < s.len {
                    out[k]
                        .next
                        .extend_from_slice(&step.next[k * i..(k + 1) * i]);
                    out[k].p_fail.push(step.p_fail[k]);
                }
            }
        }
        Ok(out)
    }

    /// Trains in place; `on_epoch` sees each epoch's mean losses. Bad options or sequences
    /// are rejected before any weight moves.
    pub fn train(
        &mut self,
        seqs: &[Sequence],
        opts: TrainOptions,
        mut on_epoch: impl FnMut(EpochReport),
    ) -> Result<(), PredictError> {
        let i = self.meta.inputs;
        if let Some(k) = seqs
            .iter()
            .position(|s| s.rows.len() != s.len * i || s.len < 2)
        {
            return Err(PredictError::param(
                "sequences",
                format!(
                    "sequence {k} has {} values for {} rows of {i}",
                    seqs[k].rows.len(),
                    seqs[k].len
                ),
            ));
        }
        let per_row = |s: &Sequence| {
            [&s.labels, &s.ttf]
                .into_iter()
                .flatten()
                .all(|v| v.len() == s.len)
        };
        if let Some(k) = seqs.iter().position(|s| !per_row(s)) {
            return Err(PredictError::param(
                "sequences",
                format!(
                    "sequence {k} has {} rows but labels or time-to-failure of another length",
                    seqs[k].len
                ),
            ));
        }
        opts.validate()?;
        let params = candle_nn::ParamsAdamW {
            lr: opts.learning_rate,
            weight_decay: 1e-4,
            ..Default::default()
        };
        let mut vars = self.varmap.all_vars();
        // The time-to-failure head lives only here: it shapes the shared state in training
        // and is not part of the model file.
        let aux = VarMap::new();
        let ttf_head = if opts.ttf_weight > 0.0 {
            let head = candle_nn::linear(
                self.meta.hidden,
                1,
                VarBuilder::from_varmap(&aux, DType::F32, &self.device).pp("ttf"),
            )?;
            let mut rng = SeededRng::new(opts.seed ^ 0x7474_665f_6865_6164);
            fill_uniform(&*locked(&aux)?, self.meta.hidden, &mut rng)?;
            vars.extend(aux.all_vars());
            Some(head)
        } else {
            None
        };
        let mut opt = candle_nn::AdamW::new(vars, params)?;
        let mut rng = SeededRng::new(opts.seed);
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        let average_from = opts.epochs - (opts.epochs as f64 * opts.average_last).round() as usize;
        let kept: Vec<candle_core::Var> = by_name(&*locked(&self.varmap)?)
            .into_iter()
            .map(|(_, v)| v.clone())
            .collect();
        let mut sums = kept
            .iter()
            .map(|v| v.zeros_like())
            .collect::<Result<Vec<_>, _>>()?;
        let mut averaged = 0usize;
        for epoch in 1..=opts.epochs {
            let progress = (epoch - 1) as f64 / (opts.epochs.max(2) - 1) as f64;
            let ratio = opts.final_lr_ratio;
            let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            opt.set_learning_rate(opts.learning_rate * (ratio + (1.0 - ratio) * cosine));
            rng.shuffle(&mut order);
            let (mut next_sum, mut fail_sum, mut n) = (0.0, 0.0, 0usize);
            for group in order.chunks(opts.batch) {
                let batch: Vec<&Sequence> = group.iter().map(|&k| &seqs[k]).collect();
                let (a, b) = self.train_batch(&batch, &opts, ttf_head.as_ref(), &mut opt)?;
                next_sum += a;
                fail_sum += b;
                n += 1;
            }
            if epoch > average_from {
                for (sum, v) in sums.iter_mut().zip(&kept) {
                    *sum = (&*sum + v.as_tensor())?;
                }
                averaged += 1;
            }
            on_epoch(EpochReport {
                epoch,
                epochs: opts.epochs,
                next_loss: next_sum / n.max(1) as f64,
                fail_loss: fail_sum / n.max(1) as f64,
            });
        }
        if averaged > 1 {
            for (v, sum) in kept.iter().zip(&sums) {
                v.set(&(sum / averaged as f64)?)?;
            }
        }
        self.fused = Fused::from_varmap(&self.varmap)?;
        Ok(())
    }

    fn train_batch(
        &self,
        batch: &[&Sequence],
        opts: &TrainOptions,
        ttf_head: Option<&Linear>,
        opt: &mut candle_nn::AdamW,
    ) -> Result<(f64, f64), PredictError> {
        let (i, hd) = (self.meta.inputs, self.meta.hidden);
        let b = batch.len();
        let max_len = batch.iter().map(|s| s.len).max().unwrap_or(0);
        let mut state = LSTMState::new(
            Tensor::zeros((b, hd), DType::F32, &self.device)?,
            Tensor::zeros((b, hd), DType::F32, &self.device)?,
        );
        let (mut next_sum, mut fail_sum, mut chunks) = (0.0, 0.0, 0usize);
        let chunk = opts.chunk;
        // Time-to-failure targets are capped at 4 horizons and scaled to [0, 1].
        let cap = (4 * self.meta.horizon_steps).max(1) as f32;
        let mut start = 0;
        while start + 1 < max_len {
            let len = chunk.min(max_len - start);
            // Inputs rows start..start+len, targets rows start+1..start+len+1.
            let mut x = vec![0f32; b * len * i];
            let mut y = vec![0f32; b * len * i];
            let mut next_mask = vec![0f32; b * len];
            let mut fail_target = vec![0f32; b * len];
            let mut fail_mask = vec![0f32; b * len];
            let mut ttf_target = vec![0f32; b * len];
            let mut ttf_mask = vec![0f32; b * len];
            for (k, s) in batch.iter().enumerate() {
                for t in 0..len {
                    let row = start + t;
                    if row >= s.len {
                        break;
                    }
                    let at = (k * len + t) * i;
                    x[at..at + i].copy_from_slice(&s.rows[row * i..(row + 1) * i]);
                    if row + 1 < s.len {
                        y[at..at + i].copy_from_slice(&s.rows[(row + 1) * i..(row + 2) * i]);
                        next_mask[k * len + t] = 1.0;
                    }
                    if let Some(labels) = &s.labels {
                        let l = labels[row];
                        fail_target[k * len + t] = l;
                        fail_mask[k * len + t] = if l > 0.5 {
                            opts.positive_weight as f32
                        } else {
                            1.0
                        };
                    }
                    let ttf = s.ttf.as_ref().filter(|_| ttf_head.is_some());
                    if let Some(v) = ttf.map(|v| v[row]).filter(|v| v.is_finite()) {
                        ttf_target[k * len + t] = v.min(cap) / cap;
                        ttf_mask[k * len + t] = 1.0;
                    }
                }
            }
            let xt = Tensor::from_vec(x, (b, len, i), &self.device)?;
            let yt = Tensor::from_vec(y, (b, len, i), &self.device)?;
            let nm = Tensor::from_vec(next_mask, (b, len), &self.device)?;
            let ft = Tensor::from_vec(fail_target, (b, len), &self.device)?;
            let fm = Tensor::from_vec(fail_mask, (b, len), &self.device)?;
            let mut hs = Vec::with_capacity(len);
            for t in 0..len {
                let xi = xt.narrow(1, t, 1)?.squeeze(1)?;
                state = self.lstm.step(&xi, &state)?;
                hs.push(state.h.clone());
            }
            let hseq = Tensor::stack(&hs, 1)?; // b × len × hd
            let pred = self.next.forward(&hseq)?;
            let sq = (pred - &yt)?.sqr()?.mean(D::Minus1)?; // b × len
            let nm_sum = nm.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
            let next_loss = ((sq * &nm)?.sum_all()? / nm_sum)?;
            let logits = self.fail.forward(&hseq)?.squeeze(D::Minus1)?; // b × len
            let fm_sum = fm.sum_all()?.to_scalar::<f32>()? as f64;
            let fail_loss = if fm_sum > 0.0 {
                // max(x,0) − x·y + log(1 + e^−|x|), weighted.
                let bce = ((logits.relu()? - (&logits * &ft)?)?
                    + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                ((bce * &fm)?.sum_all()? / fm_sum)?
            } else {
                Tensor::zeros((), DType::F32, &self.device)?
            };
            let mut loss = (&next_loss + (&fail_loss * opts.fail_weight)?)?;
            let tm_sum = ttf_mask.iter().sum::<f32>() as f64;
            if let Some(ttf_head) = ttf_head.filter(|_| tm_sum > 0.0) {
                let tt = Tensor::from_vec(ttf_target, (b, len), &self.device)?;
                let tm = Tensor::from_vec(ttf_mask, (b, len), &self.device)?;
                let est = ttf_head.forward(&hseq)?.squeeze(D::Minus1)?;
                let ttf_loss = (((est - tt)?.sqr()? * tm)?.sum_all()? / tm_sum)?;
                loss = (loss + (ttf_loss * opts.ttf_weight)?)?;
            }
            opt.backward_step(&loss)?;
            next_sum += next_loss.to_scalar::<f32>()? as f64;
            fail_sum += fail_loss.to_scalar::<f32>()? as f64;
            chunks += 1;
            state = LSTMState::new(state.h.detach(), state.c.detach());
            start += len;
        }
        Ok((
            next_sum / chunks.max(1) as f64,
            fail_sum / chunks.max(1) as f64,
        ))
    }
}

/// Sets every variable, in name order, uniform in ±1/√hidden from `rng`: candle's own
/// initialisers draw from an unseeded generator.
fn fill_uniform(
    vars: &HashMap<String, candle_core::Var>,
    hidden: usize,
    rng: &mut SeededRng,
) -> Result<(), PredictError> {
    let k = 1.0 / (hidden as f64).sqrt();
    for (_, var) in by_name(vars) {
        let vals: Vec<f32> = (0..var.elem_count())
            .map(|_| ((rng.unit() * 2.0 - 1.0) * k) as f32)
            .collect();
        var.set(&Tensor::from_vec(vals, var.shape(), &Device::Cpu)?)?;
    }
    Ok(())
}

/// A var map's variables, locked.
fn locked(
    varmap: &VarMap,
) -> Result<std::sync::MutexGuard<'_, HashMap<String, candle_core::Var>>, PredictError> {
    varmap
        .data()
        .lock()
        .map_err(|_| PredictError::param("varmap", "poisoned"))
}

/// Tensor `name`'s values, all finite. A model with a NaN or an infinity in it would score
/// every component NaN, which the hazard and the score would read as anything; such weights
/// are refused, named.
fn finite_values(name: &str, t: &Tensor) -> Result<Vec<f32>, PredictError> {
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(PredictError::param(
            "model",
            format!("tensor {name} has {bad} non-finite values"),
        ));
    }
    Ok(values)
}

/// The variables in name order: the one order of initialisation, hashing and saving.
fn by_name(vars: &HashMap<String, candle_core::Var>) -> Vec<(&String, &candle_core::Var)> {
    let mut named: Vec<_> = vars.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named
}

fn build(
    varmap: &VarMap,
    meta: &ModelMeta,
    device: &Device,
) -> Result<(LSTM, Linear, Linear), PredictError> {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, device);
    let lstm = candle_nn::rnn::lstm(
        meta.inputs,
        meta.hidden,
        LSTMConfig::default(),
        vb.pp("lstm"),
    )?;
    let next = candle_nn::linear(meta.hidden, meta.inputs, vb.pp("next"))?;
    let fail = candle_nn::linear(meta.hidden, 1, vb.pp("fail"))?;
    Ok((lstm, next, fail))
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_named_features_are_read_by_name() {
        let generic = ModelMeta::new((0..3).map(|i| format!("metric{i}")).collect(), 4, 10, 1);
        assert!(generic.input_names().is_empty());
        let named = ModelMeta::new(vec!["latency".into(), "metric1".into()], 4, 10, 1);
        assert_eq!(named.input_names(), ["latency", "metric1"]);
    }

    use super::*;

    fn sine_sequences(n: usize, len: usize) -> Vec<Sequence> {
        (0..n)
            .map(|k| {
                let rows: Vec<f32> = (0..len)
                    .map(|t| ((t as f32 + k as f32) * 0.3).sin())
                    .collect();
                // "Failure" is the upper part of the wave.
                let labels = rows
                    .iter()
                    .map(|v| if *v > 0.7 { 1.0 } else { 0.0 })
                    .collect();
                Sequence {
                    rows,
                    labels: Some(labels),
                    ttf: None,
                    len,
                }
            })
            .collect()
    }

    #[test]
    fn a_merged_model_gives_its_members_mean() {
        let meta = |hidden, seed| ModelMeta::new(vec!["x".into()], hidden, 10, seed);
        let a = LstmModel::new(meta(4, 1)).unwrap();
        let b = LstmModel::new(meta(3, 2)).unwrap();
        let merged = LstmModel::merge(&[a, b]).unwrap();
        assert_eq!(merged.meta.hidden, 7);
        let (a, b) = (
            LstmModel::new(meta(4, 1)).unwrap(),
            LstmModel::new(meta(3, 2)).unwrap(),
        );
        let seqs = sine_sequences(2, 30);
        let refs: Vec<_> = seqs.iter().collect();
        let (oa, ob, om) = (
            a.run(&refs).unwrap(),
            b.run(&refs).unwrap(),
            merged.run(&refs).unwrap(),
        );
        let logit = |p: f32| (p / (1.0 - p)).ln();
        for s in 0..2 {
            for t in 0..30 {
                let want = sigmoid((logit(oa[s].p_fail[t]) + logit(ob[s].p_fail[t])) / 2.0);
                let got = om[s].p_fail[t];
                assert!((want - got).abs() < 1e-3, "p_fail {s}/{t}: {got} vs {want}");
                let want = (oa[s].next[t] + ob[s].next[t]) / 2.0;
                let got = om[s].next[t];
                assert!((want - got).abs() < 1e-3, "next {s}/{t}: {got} vs {want}");
            }
        }
        // Members that read other inputs are not merged.
        let other = LstmModel::new(ModelMeta::new(vec!["y".into()], 4, 10, 1)).unwrap();
        let err = LstmModel::merge(&[a, other]).unwrap_err().to_string();
        assert!(err.contains("differ"), "{err}");
        assert!(LstmModel::merge(&[]).is_err());
    }

    #[test]
    fn training_is_deterministic_and_learns() {
        let seqs = sine_sequences(8, 48);
        let opts = TrainOptions {
            epochs: 40,
            batch: 8,
            chunk: 16,
            learning_rate: 2e-2,
            ..Default::default()
        };
        let mut losses = Vec::new();
        let mut a = LstmModel::new(ModelMeta::new(vec!["v".into()], 8, 1, 3)).unwrap();
        a.train(&seqs, opts, |r| losses.push(r.next_loss)).unwrap();
        let mut b = LstmModel::new(ModelMeta::new(vec!["v".into()], 8, 1, 3)).unwrap();
        b.train(&seqs, opts, |_| {}).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let va = a.save(&dir.path().join("a.safetensors")).unwrap();
        let vb = b.save(&dir.path().join("b.safetensors")).unwrap();
        assert_eq!(va, vb, "same seed, same data, same weights");
        assert!(losses.last().unwrap() < &(losses[0] * 0.5), "{losses:?}");
        let loaded = LstmModel::load(&dir.path().join("a.safetensors")).unwrap();
        assert_eq!(loaded.meta.version, va);
        let out_a = a.run(&[&seqs[0]]).unwrap();
        let out_l = loaded.run(&[&seqs[0]]).unwrap();
        assert_eq!(out_a[0].p_fail, out_l[0].p_fail);
    }

    /// Steps until the next "failure" row of each sine sequence (NaN after the last one).
    fn with_ttf(mut seqs: Vec<Sequence>) -> Vec<Sequence> {
        for s in &mut seqs {
            let labels = s.labels.as_ref().unwrap();
            let mut next = f32::NAN;
            let mut ttf = vec![0f32; s.len];
            for t in (0..s.len).rev() {
                if labels[t] > 0.5 {
                    next = t as f32;
                }
                ttf[t] = next - t as f32;
            }
            s.ttf = Some(ttf);
        }
        seqs
    }

    #[test]
    fn the_time_to_failure_head_is_seeded_and_not_saved() {
        let seqs = with_ttf(sine_sequences(8, 48));
        let opts = TrainOptions {
            epochs: 10,
            batch: 8,
            chunk: 16,
            learning_rate: 2e-2,
            ttf_weight: 1.0,
            final_lr_ratio: 0.1,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut versions = Vec::new();
        for (k, o) in [
            opts,
            opts,
            TrainOptions {
                ttf_weight: 0.0,
                ..opts
            },
        ]
        .into_iter()
        .enumerate()
        {
            let mut m = LstmModel::new(ModelMeta::new(vec!["v".into()], 8, 4, 3)).unwrap();
            m.train(&seqs, o, |_| {}).unwrap();
            let path = dir.path().join(format!("{k}.safetensors"));
            versions.push(m.save(&path).unwrap());
            let loaded = LstmModel::load(&path).unwrap();
            assert_eq!(
                loaded.run(&[&seqs[0]]).unwrap()[0].p_fail,
                m.run(&[&seqs[0]]).unwrap()[0].p_fail
            );
        }
        assert_eq!(
            versions[0], versions[1],
            "the auxiliary head starts from the seed too"
        );
        assert_ne!(
            versions[0], versions[2],
            "the auxiliary loss shapes the shared weights"
        );
    }

    #[test]
    fn averaged_weights_are_the_mean_of_the_last_epochs() {
        let seqs = sine_sequences(4, 24);
        let opts = TrainOptions {
            epochs: 4,
            batch: 2,
            chunk: 8,
            learning_rate: 2e-2,
            ..Default::default()
        };
        let train = |o: TrainOptions| {
            let mut m = LstmModel::new(ModelMeta::new(vec!["v".into()], 4, 1, 3)).unwrap();
            m.train(&seqs, o, |_| {}).unwrap();
            let vars = locked(&m.varmap).unwrap();
            by_name(&vars)
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        };
        // With a constant rate the first three epochs of a four-epoch run are a three-epoch
        // run, so the mean of the last two epochs is the mean of those two models.
        let three = train(TrainOptions { epochs: 3, ..opts });
        let four = train(opts);
        let averaged = train(TrainOptions {
            average_last: 0.5,
            ..opts
        });
        assert_ne!(three, four);
        for ((a, b), (name, c)) in three.iter().zip(&four).zip(&averaged) {
            for ((x, y), z) in a.1.iter().zip(&b.1).zip(c) {
                assert!(
                    (z - (x + y) / 2.0).abs() < 1e-6,
                    "{name}: {z} vs {x} and {y}"
                );
            }
        }
    }

    #[test]
    fn bad_training_options_and_targets_are_named() {
        let seqs = sine_sequences(2, 8);
        let mut m = LstmModel::new(ModelMeta::new(vec!["v".into()], 4, 1, 3)).unwrap();
        let before = m
            .save(&tempfile::tempdir().unwrap().path().join("m"))
            .unwrap();
        let bad = [
            (
                TrainOptions {
                    ttf_weight: -1.0,
                    ..Default::default()
                },
                "ttf_weight",
            ),
            (
                TrainOptions {
                    learning_rate: f64::NAN,
                    ..Default::default()
                },
                "learning_rate",
            ),
            (
                TrainOptions {
                    final_lr_ratio: 2.0,
                    ..Default::default()
                },
                "final_lr_ratio",
            ),
            (
                TrainOptions {
                    epochs: 0,
                    ..Default::default()
                },
                "epochs",
            ),
            (
                TrainOptions {
                    chunk: 1,
                    ..Default::default()
                },
                "chunk",
            ),
            (
                TrainOptions {
                    average_last: -0.5,
                    ..Default::default()
                },
                "average_last",
            ),
        ];
        for (opts, name) in bad {
            let err = m.train(&seqs, opts, |_| {}).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let mut short = seqs.clone();
        short[1].ttf = Some(vec![1.0; 3]);
        let err = m
            .train(&short, TrainOptions::default(), |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("sequence 1"), "{err}");
        let after = m
            .save(&tempfile::tempdir().unwrap().path().join("m"))
            .unwrap();
        assert_eq!(before, after, "a rejected training run changes no weight");
    }

    /// The serving path (fused weights, gate arithmetic by hand) matches candle's own LSTM
    /// step and linear heads, for a batch big enough to be split over threads.
    #[test]
    fn the_fused_step_matches_candle() {
        let m = LstmModel::new(ModelMeta::new(
            (0..3).map(|i| format!("m{i}")).collect(),
            5,
            1,
            11,
        ))
        .unwrap();
        let b = 5000;
        let mut rng = SeededRng::new(5);
        let x: Vec<f32> = (0..b * 3).map(|_| rng.normal() as f32).collect();
        let mut h: Vec<f32> = (0..b * 5).map(|_| rng.normal() as f32 * 0.5).collect();
        let mut c: Vec<f32> = (0..b * 5).map(|_| rng.normal() as f32 * 0.5).collect();
        let state = LSTMState::new(
            Tensor::from_slice(&h, (b, 5), &m.device).unwrap(),
            Tensor::from_slice(&c, (b, 5), &m.device).unwrap(),
        );
        let xt = Tensor::from_slice(&x, (b, 3), &m.device).unwrap();
        let want = m.lstm.step(&xt, &state).unwrap();
        let want_next = m
            .next
            .forward(&want.h)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want_p = candle_nn::ops::sigmoid(&m.fail.forward(&want.h).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = m.step(b, &x, &mut h, &mut c).unwrap();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(
            &h,
            &want.h.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        ));
        assert!(close(
            &c,
            &want.c.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        ));
        assert!(close(&got.next, &want_next));
        assert!(close(&got.p_fail, &want_p));
    }

    #[test]
    fn fast_tanh_is_close_to_tanh() {
        let worst = (-20_000..=20_000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| (fast_tanh(x) - x.tanh()).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{worst}");
    }

    /// A NaN in the weights would score every component NaN: a file that carries one is
    /// refused, naming the tensor, and such weights are never written either.
    #[test]
    fn non_finite_weights_are_refused_on_load_and_save() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.safetensors");
        let mut m = LstmModel::new(ModelMeta::new(vec!["v".into()], 4, 4, 3)).unwrap();
        m.save(&good).unwrap();
        let buf = std::fs::read(&good).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&buf).unwrap();
        let meta = header.metadata().clone();
        let mut tensors = candle_core::safetensors::load_buffer(&buf, &Device::Cpu).unwrap();
        let bias = tensors.get("fail.bias").unwrap();
        let nan = Tensor::full(f32::NAN, bias.shape(), &Device::Cpu).unwrap();
        tensors.insert("fail.bias".into(), nan.clone());
        let bad = dir.path().join("bad.safetensors");
        safetensors::serialize_to_file(tensors, meta, &bad).unwrap();
        let err = LstmModel::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("fail.bias") && err.contains("non-finite"),
            "{err}"
        );
        {
            let data = locked(&m.varmap).unwrap();
            data["fail.bias"].set(&nan).unwrap();
        }
        let err = m.save(&dir.path().join("never.safetensors")).unwrap_err();
        assert!(err.to_string().contains("fail.bias"), "{err}");
        assert!(!dir.path().join("never.safetensors").exists());
    }

    #[test]
    fn a_file_that_is_not_a_model_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.safetensors");
        std::fs::write(&p, b"not a model").unwrap();
        let err = LstmModel::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("junk.safetensors") && err.contains("safetensors"),
            "{err}"
        );
    }
}
