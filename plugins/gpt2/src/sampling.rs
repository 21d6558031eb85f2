//! Picking the next token: greedy (argmax on the host) or seeded sampling
//! with temperature, top-k and top-p.

use edgeserve_sdk::{Dtype, Error, Tensor};

/// Most tokens a vocabulary may have: sampling reads token ids back as f32
/// (see [`next_token`]), exact up to 2^24.
pub const MAX_VOCAB: u32 = 1 << 24;

/// How the next token is chosen.
#[derive(Clone, Copy, Debug)]
pub enum Decoding {
    /// The most likely token.
    Greedy,
    /// A draw from the softmax of `logits / temperature`, restricted to the
    /// `top_k` most likely tokens (0: all) and then to the smallest set whose
    /// probability reaches `top_p`.
    Sample {
        temperature: f64,
        top_k: u32,
        top_p: f64,
    },
}

/// SplitMix64: a tiny, well-mixed generator, so a seed gives the same text
/// on every host.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The next token after `logits` (`[1, vocab]`), and the same id as an
/// INT64 `[1]` tensor for the next forward pass.
///
/// Greedy decoding reads back one index, and its tensor is the argmax
/// itself; sampling reads the `top_k` best logits (found on the host) or,
/// without top-k, the whole row.
pub fn next_token(
    logits: &Tensor,
    decoding: Decoding,
    rng: &mut SplitMix64,
) -> Result<(u32, Tensor), Error> {
    let id = match decoding {
        Decoding::Greedy => {
            let id = logits.argmax(-1, false)?;
            return Ok((id.to_i64_vec()?[0] as u32, id));
        }
        Decoding::Sample {
            temperature,
            top_k,
            top_p,
        } => sample(logits, (temperature, top_k, top_p), rng)?,
    };
    Ok((id, Tensor::from_i64(&[1], &[i64::from(id)])?))
}

/// A draw for [`Decoding::Sample`] with its `(temperature, top_k, top_p)`.
fn sample(
    logits: &Tensor,
    (temperature, top_k, top_p): (f64, u32, f64),
    rng: &mut SplitMix64,
) -> Result<u32, Error> {
    let vocab = logits.shape().last().copied().unwrap_or(0);
    // Candidates as (logit, id), best first.
    let mut candidates: Vec<(f32, u32)> = if top_k > 0 && top_k < vocab {
        let (values, ids) = logits.top_k(top_k)?;
        // One read-back for both, since a GPU waits for each: the ids ride
        // as f32, exact below MAX_VOCAB.
        let ids = ids.reshape(&[-1])?.cast(Dtype::F32)?;
        let both = Tensor::concat(&[&values.reshape(&[-1])?, &ids], 0)?.to_f32_vec()?;
        let (values, ids) = both.split_at(top_k as usize);
        values
            .iter()
            .zip(ids)
            .map(|(&value, &id)| (value, id as u32))
            .collect()
    } else {
        let mut all: Vec<(f32, u32)> = logits.to_f32_vec()?.into_iter().zip(0..).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all
    };
    let best = f64::from(candidates[0].0);
    let weights: Vec<f64> = candidates
        .iter()
        .map(|&(logit, _)| ((f64::from(logit) - best) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    // Nucleus: keep the best tokens until their share reaches top_p (the one
    // that crosses it included, and always at least one).
    let mut kept = weights.len();
    if top_p < 1.0 {
        let mut cumulative = 0.0;
        for (i, w) in weights.iter().enumerate() {
            cumulative += w;
            if cumulative >= top_p * total {
                kept = i + 1;
                break;
            }
        }
    }
    candidates.truncate(kept);
    let kept_total: f64 = weights[..kept].iter().sum();
    let mut target = rng.next_f64() * kept_total;
    for (&(_, id), w) in candidates.iter().zip(&weights) {
        if target < *w {
            return Ok(id);
        }
        target -= w;
    }
    // Rounding left the draw past the last weight: that token it is.
    Ok(candidates[kept - 1].1)
}
