//! Sentence embeddings with sentence-transformers' all-MiniLM-L6-v2 (a
//! 6-layer, 384-wide BERT), on its pretrained weights
//! (`scripts/fetch-minilm.sh` puts them in `examples/models/minilm/1`).
//!
//! Input `text`: BYTES `[-1]`, a batch of UTF-8 sentences (at least one; an
//! empty string is fine).
//! Outputs `embedding`: FP32 `[-1, 384]`, one unit-length vector per
//! sentence; `input_ids`: INT64 `[-1, -1]`, the token ids the model saw
//! (`[CLS] … [SEP]`, right-padded with `[PAD]` to the longest in the batch),
//! for debugging tokenization (ask for `embedding` alone in the request's
//! `outputs` to leave it out).
//!
//! The WordPiece tokenizer runs in the guest (`tokenizer.rs`); everything
//! after it runs on host kernels, with the whole batch in each op: the
//! embeddings (word + position + token type, then layer norm), six encoder
//! layers (self-attention over 12 heads with padding keys masked out, a
//! GELU feed-forward, residual layer norms), mean pooling over the real
//! tokens and L2 normalization — what `SentenceTransformer.encode` computes.
//!
//! `config.toml` parameters: `max_seq_length` (default 256, the model's;
//! longer texts are cut) and `num_attention_heads` (default 12), so the same
//! handler serves other BERT-style sentence encoders of width 384.

mod tables;
mod tokenizer;

use edgeserve_sdk::nn::{LayerNorm, Layout, Linear};
use edgeserve_sdk::{
    Error, InferError, Model, ModelMetadata, Output, Request, Tensor, TensorSpec, UnaryOp,
    export_model, model,
};
use tokenizer::Tokenizer;

/// Width of the embeddings (and of the encoder).
const HIDDEN: u32 = 384;
/// Tokens per text, `[CLS]` and `[SEP]` included, unless `max_seq_length`
/// says otherwise: the length all-MiniLM-L6-v2 was trained with.
const DEFAULT_MAX_SEQ_LEN: usize = 256;
/// Attention heads, unless `num_attention_heads` says otherwise.
const DEFAULT_HEADS: u32 = 12;
/// BERT's layer-norm epsilon.
const LAYER_NORM_EPS: f32 = 1e-12;
/// Added to the attention scores of padding keys; large enough that their
/// softmax weight is exactly zero, small enough to stay finite on any backend.
const MASKED_SCORE: f32 = -1e9;

/// One encoder layer's weights; matrices are PyTorch `Linear` weights,
/// `[out, in]`.
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    /// Carries the feed-forward's GELU.
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

struct MiniLm {
    tokenizer: Tokenizer,
    /// `[vocab, 384]`.
    word_embeddings: Tensor,
    /// Position embeddings plus the token-type-0 embedding, `[positions, 384]`:
    /// every token has type 0, so the two additions fold into one.
    position_and_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: u32,
    max_seq_len: usize,
}

/// BERT's layer norm at `prefix` (`{prefix}.weight`, `{prefix}.bias`).
fn layer_norm(prefix: &str) -> Result<LayerNorm, Error> {
    LayerNorm::load(prefix, LAYER_NORM_EPS)
}

impl Layer {
    /// The layer whose weights are named `{prefix}.…`.
    fn load(prefix: &str) -> Result<Layer, String> {
        let linear = |name: &str| Linear::load(&format!("{prefix}.{name}"), Layout::OutIn);
        let norm = |name: &str| layer_norm(&format!("{prefix}.{name}"));
        Ok(Layer {
            query: linear("attention.self.query")?,
            key: linear("attention.self.key")?,
            value: linear("attention.self.value")?,
            attention_out: linear("attention.output.dense")?,
            attention_norm: norm("attention.output.LayerNorm")?,
            intermediate: linear("intermediate.dense")?.with_activation(UnaryOp::Gelu),
            output: linear("output.dense")?,
            output_norm: norm("output.LayerNorm")?,
        })
    }

    /// `x`: `[batch · seq, 384]` → the same shape.
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        (batch, seq, heads): (u32, u32, u32),
    ) -> Result<Tensor, InferError> {
        // [batch · seq, 384] → [batch, heads, seq, 384 / heads].
        let split = |t: Tensor| {
            t.reshape(&[batch as i32, seq as i32, heads as i32, -1])?
                .transpose(&[0, 2, 1, 3])
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let context = q
            .attention(&k, &v, Some(mask), None, false)?
            .transpose(&[0, 2, 1, 3])?
            .reshape(&[-1, HIDDEN as i32])?;
        let attended = self
            .attention_norm
            .forward(&self.attention_out.forward(&context)?.add(x)?)?;
        let hidden = self.intermediate.forward(&attended)?;
        let out = self.output.forward(&hidden)?.add(&attended)?;
        Ok(self.output_norm.forward(&out)?)
    }
}

impl Model for MiniLm {
    fn metadata() -> ModelMetadata {
        ModelMetadata {
            inputs: vec![TensorSpec::new("text", "BYTES", &[-1])],
            outputs: vec![
                TensorSpec::new("embedding", "FP32", &[-1, i64::from(HIDDEN)]),
                TensorSpec::new("input_ids", "INT64", &[-1, -1]),
            ],
        }
    }

    fn init() -> Result<Self, String> {
        let vocab = model::asset_required("vocab.txt")
            .map_err(|e| format!("{e}: run scripts/fetch-minilm.sh"))?;
        let tokenizer = Tokenizer::from_vocab(
            std::str::from_utf8(&vocab).map_err(|e| format!("vocab.txt is not UTF-8: {e}"))?,
        )?;

        // Exports name the weights `embeddings.…` (BertModel) or
        // `bert.embeddings.…` (a task model); take whatever prefix is there.
        let prefix = model::weight_prefix("embeddings.word_embeddings.weight").ok_or(
            "model.safetensors has no embeddings.word_embeddings.weight: \
             is it a BERT model? (scripts/fetch-minilm.sh fetches the right one)",
        )?;

        let (word_embeddings, word_shape) =
            model::weight_2d(&format!("{prefix}embeddings.word_embeddings.weight"))?;
        let (positions, position_shape) =
            model::weight_2d(&format!("{prefix}embeddings.position_embeddings.weight"))?;
        let token_types =
            model::weight(&format!("{prefix}embeddings.token_type_embeddings.weight"))?;
        if word_shape[1] != HIDDEN {
            return Err(format!(
                "word embeddings are {word_shape:?}, not [vocab, {HIDDEN}]"
            ));
        }
        if i64::from(word_shape[0]) < tokenizer.vocab_size() {
            return Err(format!(
                "vocab.txt has {} tokens but the word embeddings only {} rows",
                tokenizer.vocab_size(),
                word_shape[0]
            ));
        }
        if position_shape[1] != HIDDEN {
            return Err(format!(
                "position embeddings are {position_shape:?}, not [positions, {HIDDEN}]"
            ));
        }
        let position_and_type = positions.add(&token_types.slice(0, 0, 1)?)?;

        let heads = model::parameter_in_range("num_attention_heads", DEFAULT_HEADS, 1..)?;
        if !HIDDEN.is_multiple_of(heads) {
            return Err(format!("num_attention_heads must divide {HIDDEN}"));
        }
        // Positions past the table have no embedding.
        let max_seq_len = model::parameter_in_range("max_seq_length", DEFAULT_MAX_SEQ_LEN, 1..)?
            .min(position_shape[0] as usize);
        if max_seq_len < 2 {
            return Err("max_seq_length must leave room for [CLS] and [SEP]".into());
        }

        let names = model::weight_names();
        let layer_count = (0..)
            .take_while(|i| {
                let query = format!("{prefix}encoder.layer.{i}.attention.self.query.weight");
                names.contains(&query)
            })
            .count();
        if layer_count == 0 {
            return Err(format!(
                "model.safetensors has no {prefix}encoder.layer.0.*"
            ));
        }
        let layers = (0..layer_count)
            .map(|i| Layer::load(&format!("{prefix}encoder.layer.{i}")))
            .collect::<Result<_, _>>()?;

        Ok(MiniLm {
            tokenizer,
            word_embeddings,
            position_and_type,
            embedding_norm: layer_norm(&format!("{prefix}embeddings.LayerNorm"))?,
            layers,
            heads,
            max_seq_len,
        })
    }

    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
        let texts = request.bytes("text")?.strings()?;
        if texts.is_empty() {
            return Err(InferError::invalid_input(
                "text holds no sentences; send at least one",
            ));
        }
        let encoded: Vec<Vec<i64>> = texts
            .iter()
            .map(|t| self.tokenizer.encode(t, self.max_seq_len))
            .collect();
        let batch = encoded.len();
        let seq = encoded.iter().map(Vec::len).max().unwrap_or(0);

        // Right padding; `keep` is 1 for real tokens and 0 for padding.
        let mut ids = Vec::with_capacity(batch * seq);
        let mut keep = Vec::with_capacity(batch * seq);
        for row in &encoded {
            ids.extend(
                row.iter()
                    .copied()
                    .chain(std::iter::repeat_n(self.tokenizer.pad(), seq - row.len())),
            );
            keep.extend((0..seq).map(|i| if i < row.len() { 1.0f32 } else { 0.0 }));
        }
        let (b, s) = (batch as u32, seq as u32);
        let ids = Tensor::from_i64(&[b, s], &ids)?;
        let mut outputs = Vec::with_capacity(2);
        // A client that asks for the token ids alone skips the encoder.
        if request.wants("embedding") {
            let keep = Tensor::from_f32(&[b, s, 1], &keep)?;
            let lengths: Vec<f32> = encoded.iter().map(|r| r.len() as f32).collect();
            outputs.push(Output::numeric(
                "embedding",
                self.embed(&ids, &keep, &lengths, (b, s))?,
            ));
        }
        if request.wants("input_ids") {
            outputs.push(Output::numeric("input_ids", ids));
        }
        Ok(outputs)
    }
}

impl MiniLm {
    /// Unit-length sentence embeddings [b, HIDDEN] of the padded token `ids`
    /// [b, s]; `keep` [b, s, 1] is 1 for real tokens and 0 for padding,
    /// `lengths` the real token count of each row.
    fn embed(
        &self,
        ids: &Tensor,
        keep: &Tensor,
        lengths: &[f32],
        (b, s): (u32, u32),
    ) -> Result<Tensor, InferError> {
        // Additive attention mask over the keys, [batch, 1, 1, seq]: it
        // broadcasts over heads and queries.
        let mask = keep
            .affine(-MASKED_SCORE, MASKED_SCORE)?
            .reshape(&[b as i32, 1, 1, s as i32])?;

        let embedded = self
            .word_embeddings
            .embedding(ids)?
            .add(&self.position_and_type.slice(0, 0, s)?)?;
        let mut x = self
            .embedding_norm
            .forward(&embedded)?
            .reshape(&[-1, HIDDEN as i32])?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask, (b, s, self.heads))?;
        }

        // Mean over the real tokens, then unit length (as sentence-transformers'
        // Pooling and Normalize modules; every text has at least [CLS] and
        // [SEP], so no count is zero).
        let pooled = x
            .reshape(&[b as i32, s as i32, HIDDEN as i32])?
            .mul(keep)?
            .sum(1, false)?
            .div(&Tensor::from_f32(&[b, 1], lengths)?)?;
        let norm = pooled
            .mul(&pooled)?
            .sum(1, true)?
            .sqrt()?
            .maximum(&Tensor::scalar(1e-12)?)?;
        Ok(pooled.div(&norm)?)
    }
}

export_model!(MiniLm);
