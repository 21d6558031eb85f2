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
//! after it runs on host kernels, with the whole batch in each op and no
//! padding, as text-embeddings-inference does: the tokens of every sentence
//! are packed back to back (`[tokens, 384]`), so the dense layers run on
//! real tokens only and attention (`attention-varlen`, contract 0.1.3) keeps
//! each sentence to itself. The embeddings (word + position + token type,
//! then layer norm), six encoder layers (self-attention over 12 heads, a
//! GELU feed-forward, residual layer norms), mean pooling over each
//! sentence's tokens and L2 normalization — what `SentenceTransformer.encode`
//! computes, a batch of sentences giving each the answer it has alone.
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

    /// `x`: the packed tokens `[tokens, 384]` of the sentences that
    /// `offsets` bounds → the same shape.
    fn forward(&self, x: &Tensor, offsets: &[u32], heads: u32) -> Result<Tensor, InferError> {
        // [tokens, 384] → [tokens, heads, 384 / heads]: a view, no copy.
        let split = |t: Tensor| t.reshape(&[-1, heads as i32, (HIDDEN / heads) as i32]);
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let context = q
            .attention_varlen(&k, &v, offsets, None, false)?
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
        let mut outputs = Vec::with_capacity(2);
        // A client that asks for the token ids alone skips the encoder.
        if request.wants("embedding") {
            outputs.push(Output::numeric("embedding", self.embed(&encoded)?));
        }
        if request.wants("input_ids") {
            // Right-padded with [PAD] to the longest sentence.
            let seq = encoded.iter().map(Vec::len).max().unwrap_or(0);
            let ids: Vec<i64> = encoded
                .iter()
                .flat_map(|row| {
                    let padding = std::iter::repeat_n(self.tokenizer.pad(), seq - row.len());
                    row.iter().copied().chain(padding)
                })
                .collect();
            let shape = [encoded.len() as u32, seq as u32];
            outputs.push(Output::numeric(
                "input_ids",
                Tensor::from_i64(&shape, &ids)?,
            ));
        }
        Ok(outputs)
    }
}

impl MiniLm {
    /// Unit-length sentence embeddings `[sentences, HIDDEN]` of the token
    /// ids of each sentence, run packed: `[tokens, HIDDEN]` through every
    /// layer, no padding anywhere.
    fn embed(&self, encoded: &[Vec<i64>]) -> Result<Tensor, InferError> {
        let total: usize = encoded.iter().map(Vec::len).sum();
        let offsets: Vec<u32> = std::iter::once(0)
            .chain(encoded.iter().scan(0, |end, row| {
                *end += row.len() as u32;
                Some(*end)
            }))
            .collect();
        let ids: Vec<i64> = encoded.iter().flatten().copied().collect();
        // Each token's position within its own sentence.
        let positions: Vec<i64> = encoded.iter().flat_map(|row| 0..row.len() as i64).collect();
        let tokens = total as u32;
        let embedded = self
            .word_embeddings
            .embedding(&Tensor::from_i64(&[tokens], &ids)?)?
            .add(
                &self
                    .position_and_type
                    .embedding(&Tensor::from_i64(&[tokens], &positions)?)?,
            )?;
        let mut x = self.embedding_norm.forward(&embedded)?;
        for layer in &self.layers {
            x = layer.forward(&x, &offsets, self.heads)?;
        }

        // Mean over each sentence's tokens, as one product with a
        // [sentences, tokens] matrix holding 1/length over its own tokens
        // (every text has at least [CLS] and [SEP], so no length is zero);
        // then unit length, as sentence-transformers' Pooling and Normalize
        // modules do.
        let mut means = vec![0.0f32; encoded.len() * total];
        for (s, w) in offsets.windows(2).enumerate() {
            let (start, end) = (w[0] as usize, w[1] as usize);
            means[s * total + start..s * total + end].fill(1.0 / (end - start) as f32);
        }
        let pooled = Tensor::from_f32(&[encoded.len() as u32, tokens], &means)?.matmul(&x)?;
        let norm = pooled
            .mul(&pooled)?
            .sum(1, true)?
            .sqrt()?
            .maximum(&Tensor::scalar(1e-12)?)?;
        Ok(pooled.div(&norm)?)
    }
}

export_model!(MiniLm);
