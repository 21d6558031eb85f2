//! The GPT-2 transformer on host ops, with a host-side KV cache.

use edgeserve_sdk::nn::{LayerNorm, Layout, Linear};
use edgeserve_sdk::{Error, Tensor, UnaryOp, model};
use serde_json::Value;

/// One transformer block. GPT-2 stores its projections as `Conv1D` weights,
/// `[in, out]`; `c_fc` carries the MLP activation.
struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    /// Attention scale (GPT-2: `1/√head_dim`).
    scale: f32,
}

/// The architecture settings read from `config.json`.
struct Config {
    n_layer: usize,
    n_head: u32,
    eps: f32,
    /// The MLP activation.
    activation: UnaryOp,
    scale_attn_weights: bool,
    scale_attn_by_inverse_layer_idx: bool,
}

impl Config {
    fn parse(json: &[u8]) -> Result<Config, String> {
        let config: Value =
            serde_json::from_slice(json).map_err(|e| format!("config.json: {e}"))?;
        let uint = |key: &str| {
            config[key]
                .as_u64()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("config.json: {key} must be a positive integer"))
        };
        let flag = |key: &str, default: bool| config[key].as_bool().unwrap_or(default);
        let activation = match config["activation_function"].as_str().unwrap_or("gelu_new") {
            // The tanh approximation.
            "gelu_new" | "gelu_pytorch_tanh" => UnaryOp::GeluTanh,
            // The exact erf form.
            "gelu" => UnaryOp::Gelu,
            other => {
                return Err(format!(
                    "config.json: activation_function {other:?} is not supported (gelu_new, gelu_pytorch_tanh, gelu)"
                ));
            }
        };
        Ok(Config {
            n_layer: uint("n_layer")? as usize,
            n_head: uint("n_head")? as u32,
            eps: config["layer_norm_epsilon"].as_f64().unwrap_or(1e-5) as f32,
            activation,
            scale_attn_weights: flag("scale_attn_weights", true),
            scale_attn_by_inverse_layer_idx: flag("scale_attn_by_inverse_layer_idx", false),
        })
    }
}

/// GPT-2's weights, looked up once per instance (handles, not copies).
pub struct Gpt2 {
    /// Token embeddings `[vocab, dim]`, also the LM head when tied.
    wte: Tensor,
    /// Position embeddings `[positions, dim]`.
    wpe: Tensor,
    /// An untied LM head `[vocab, dim]`, when the checkpoint has one.
    lm_head: Option<Tensor>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    n_head: u32,
    head_dim: u32,
    /// The context length (rows of `wpe`).
    pub n_positions: u32,
    /// Rows of `wte`.
    pub vocab_size: u32,
}

/// Keys and values of every position processed so far: per block, `[heads,
/// positions, head_dim]` tensors held by the host. Each step concatenates its
/// new positions on the host; nothing is copied into the guest.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: u32,
}

impl Gpt2 {
    /// Looks the weights up by their standard GPT-2 names, under whatever
    /// prefix the checkpoint puts before `wte.weight`: none (as in OpenAI's
    /// checkpoints) or `transformer.` (as `GPT2LMHeadModel.state_dict()`
    /// names them); `config_json` is the checkpoint's Hugging Face
    /// `config.json`.
    pub fn load(config_json: &[u8]) -> Result<Gpt2, String> {
        let config = Config::parse(config_json)?;
        let prefix = model::weight_prefix("wte.weight")
            .ok_or("model.safetensors has neither wte.weight nor transformer.wte.weight")?;
        let linear = |name: &str| Linear::load(&format!("{prefix}{name}"), Layout::InOut);
        let layer_norm = |name: &str| LayerNorm::load(&format!("{prefix}{name}"), config.eps);
        let (wte, te) = model::weight_2d(&format!("{prefix}wte.weight"))?;
        let (wpe, pe) = model::weight_2d(&format!("{prefix}wpe.weight"))?;
        if te[1] != pe[1] {
            return Err(format!(
                "wte {te:?} and wpe {pe:?} must be [vocab, dim] and [positions, dim]"
            ));
        }
        let dim = te[1];
        if dim % config.n_head != 0 {
            return Err(format!(
                "n_embd {dim} is not divisible by n_head {}",
                config.n_head
            ));
        }
        let head_dim = dim / config.n_head;
        let blocks = (0..config.n_layer)
            .map(|i| {
                let mut scale = 1.0;
                if config.scale_attn_weights {
                    scale /= (head_dim as f32).sqrt();
                }
                if config.scale_attn_by_inverse_layer_idx {
                    scale /= (i + 1) as f32;
                }
                Ok(Block {
                    ln_1: layer_norm(&format!("h.{i}.ln_1"))?,
                    c_attn: linear(&format!("h.{i}.attn.c_attn"))?,
                    attn_proj: linear(&format!("h.{i}.attn.c_proj"))?,
                    ln_2: layer_norm(&format!("h.{i}.ln_2"))?,
                    c_fc: linear(&format!("h.{i}.mlp.c_fc"))?.with_activation(config.activation),
                    mlp_proj: linear(&format!("h.{i}.mlp.c_proj"))?,
                    scale,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // GPT-2 ties the LM head to wte; a checkpoint that stores one anyway
        // (possibly fine-tuned apart) is honoured.
        let lm_head = model::weight_names()
            .iter()
            .any(|n| n == "lm_head.weight")
            .then(|| model::weight("lm_head.weight"))
            .transpose()?;
        Ok(Gpt2 {
            n_positions: pe[0],
            vocab_size: te[0],
            wte,
            wpe,
            lm_head,
            blocks,
            ln_f: layer_norm("ln_f")?,
            n_head: config.n_head,
            head_dim,
        })
    }

    /// An empty cache for one sequence.
    pub fn cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.blocks.len()).map(|_| None).collect(),
            len: 0,
        }
    }

    /// Runs `ids` (the next positions after those in `cache`) through the
    /// model, appends their keys and values to `cache` and returns the
    /// logits of the last one, `[1, vocab]`.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor, Error> {
        let tokens: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        self.forward_tokens(&Tensor::from_i64(&[ids.len() as u32], &tokens)?, cache)
    }

    /// [`forward`](Gpt2::forward) on ids held by the host as an INT64 `[n]`
    /// tensor, such as the argmax of the previous logits: the id goes from
    /// that op to the embedding lookup without a round trip through the
    /// guest.
    pub fn forward_tokens(&self, tokens: &Tensor, cache: &mut KvCache) -> Result<Tensor, Error> {
        let n = tokens.shape()[0];
        // The position embeddings are rows `start..start + n` of `wpe`: a
        // slice, no position ids to build and upload.
        let start = cache.len;
        let mut x = self
            .wte
            .embedding(tokens)?
            .add(&self.wpe.slice(0, start, start + n)?)?;
        for (block, slot) in self.blocks.iter().zip(&mut cache.layers) {
            x = x.add(&self.attention(block, &x, slot)?)?;
            let h = block.c_fc.forward(&block.ln_2.forward(&x)?)?;
            x = x.add(&block.mlp_proj.forward(&h)?)?;
        }
        cache.len += n;
        // Only the last position's logits are needed: normalize that row alone
        // (a single position is already that row).
        let last = if n == 1 { x } else { x.slice(0, n - 1, n)? };
        let last = self.ln_f.forward(&last)?;
        last.matmul_t(self.lm_head.as_ref().unwrap_or(&self.wte))
    }

    /// Causal self-attention of one block over `x` (`[n, dim]`) and the
    /// positions already in `slot`, which it extends.
    fn attention(
        &self,
        block: &Block,
        x: &Tensor,
        slot: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor, Error> {
        let (heads, head_dim) = (self.n_head as i32, self.head_dim as i32);
        let h = block.ln_1.forward(x)?;
        // [n, 3·dim] -> [3, heads, n, head_dim]: q, k and v split by head.
        let qkv = block
            .c_attn
            .forward(&h)?
            .reshape(&[-1, 3, heads, head_dim])?
            .transpose(&[1, 2, 0, 3])?;
        let part = |i: u32| qkv.slice(0, i, i + 1)?.reshape(&[heads, -1, head_dim]);
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let (k, v) = match slot.take() {
            Some((past_k, past_v)) => (
                Tensor::concat(&[&past_k, &k], 1)?,
                Tensor::concat(&[&past_v, &v], 1)?,
            ),
            None => (k, v),
        };
        // Causal masking is aligned to the end, so it covers both the prompt
        // (n queries over n keys) and a decode step (1 query over the cache).
        let attended = q.attention(&k, &v, None, Some(block.scale), true)?;
        *slot = Some((k, v));
        let merged = attended
            .transpose(&[1, 0, 2])?
            .reshape(&[-1, heads * head_dim])?;
        block.attn_proj.forward(&merged)
    }
}
