//! Picking the next token: greedy (argmax on the host) or seeded sampling
//! with temperature, top-k and top-p.

use edgeserve_sdk::{Error, Tensor};

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

/// A picked token: its id, the same id as an INT64 `[1]` tensor for the
/// next forward pass, and its natural-log probability under the logits
/// when asked for.
pub struct Next {
    pub id: u32,
    pub tensor: Tensor,
    pub logprob: Option<f32>,
}

/// The next token after `logits` (`[1, vocab]`).
///
/// Greedy decoding reads back one index, and its tensor is the argmax
/// itself; sampling reads the `top_k` best logits (found on the host) or,
/// without top-k, the whole row. With `with_logprob`, the row's log-sum-exp
/// is found on the host too and read back in the same read-back, since a
/// GPU waits for each (only a whole row read computes it here).
pub fn next_token(
    logits: &Tensor,
    decoding: Decoding,
    rng: &mut SplitMix64,
    with_logprob: bool,
) -> Result<Next, Error> {
    let (id, logprob) = match decoding {
        Decoding::Greedy => {
            let id = logits.argmax(-1, false)?;
            if !with_logprob {
                let next = id.to_i64_vec()?[0] as u32;
                return Ok(Next {
                    id: next,
                    tensor: id,
                    logprob: None,
                });
            }
            // The argmax's logit is the row's maximum.
            let (best, lse) = log_sum_exp(logits)?;
            let read = Tensor::read_f32_all(&[&id, &best, &lse])?;
            let logprob = Some(read[1][0] - read[2][0]);
            return Ok(Next {
                id: read[0][0] as u32,
                tensor: id,
                logprob,
            });
        }
        Decoding::Sample {
            temperature,
            top_k,
            top_p,
        } => sample(logits, (temperature, top_k, top_p), rng, with_logprob)?,
    };
    let tensor = Tensor::from_i64(&[1], &[i64::from(id)])?;
    Ok(Next {
        id,
        tensor,
        logprob,
    })
}

/// The maximum of `logits` (`[1, vocab]`) and its log-sum-exp, each `[1]`,
/// on the host.
fn log_sum_exp(logits: &Tensor) -> Result<(Tensor, Tensor), Error> {
    let best = logits.max(-1, false)?;
    let lse = logits
        .sub(&best.reshape(&[1, 1])?)?
        .exp()?
        .sum(-1, false)?
        .log()?
        .add(&best)?;
    Ok((best, lse))
}

/// A draw for [`Decoding::Sample`] with its `(temperature, top_k, top_p)`:
/// the id, and its log probability when `with_logprob`.
fn sample(
    logits: &Tensor,
    (temperature, top_k, top_p): (f64, u32, f64),
    rng: &mut SplitMix64,
    with_logprob: bool,
) -> Result<(u32, Option<f32>), Error> {
    let vocab = logits.shape().last().copied().unwrap_or(0);
    // Candidates as (logit, id), best first, and the row's log-sum-exp.
    let (mut candidates, lse): (Vec<(f32, u32)>, Option<f32>) = if top_k > 0 && top_k < vocab {
        let (values, ids) = logits.top_k(top_k)?;
        // One read-back for all, since a GPU waits for each: the ids ride
        // as f32, exact below MAX_VOCAB.
        let lse = with_logprob.then(|| log_sum_exp(logits)).transpose()?;
        let mut parts = vec![&values, &ids];
        parts.extend(lse.as_ref().map(|(_, lse)| lse));
        let read = Tensor::read_f32_all(&parts)?;
        let candidates = read[0]
            .iter()
            .zip(&read[1])
            .map(|(&value, &id)| (value, id as u32))
            .collect();
        (candidates, read.get(2).map(|lse| lse[0]))
    } else {
        let row = logits.to_f32_vec()?;
        let lse = with_logprob.then(|| row_log_sum_exp(&row));
        let mut all: Vec<(f32, u32)> = row.into_iter().zip(0..).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        (all, lse)
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
    // Rounding may leave the draw past the last weight: that token it is.
    let mut chosen = candidates[kept - 1];
    for (&candidate, w) in candidates.iter().zip(&weights) {
        if target < *w {
            chosen = candidate;
            break;
        }
        target -= w;
    }
    let (logit, id) = chosen;
    Ok((id, lse.map(|lse| logit - lse)))
}

/// The log-sum-exp of a row of logits read back whole, in f64.
fn row_log_sum_exp(row: &[f32]) -> f32 {
    let best = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from(x - best).exp()).sum();
    (f64::from(best) + sum.ln()) as f32
}
