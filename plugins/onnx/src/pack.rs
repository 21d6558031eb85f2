//! Running an encoder's token-wise layers on real tokens only.
//!
//! A batch of sentences of different lengths arrives padded to the longest,
//! and an exported BERT computes every layer on every padding position too,
//! only for the pooling to multiply those rows by zero. When a graph has
//! that shape, a request with padding runs the region between the
//! embeddings and the pooling *packed*: the real tokens of all sentences back
//! to back as one sequence `[1, total, ...]`, each attention as the host's
//! `attention-varlen` over the sentences' offsets, and the result scattered
//! back to `[batch, sequence, ...]` (zeros at the padding) where the pooling
//! reads it. text-embeddings-inference runs BERT batches this way.
//!
//! What makes this exact is checked twice. At `init` ([`Packing::find`]),
//! in the graph: every step of the region works on each token alone
//! (`linear`, layer norm, elementwise ops, reshapes that keep the first two
//! axes, the transposes around attention), every attention reads one
//! additive mask computed from one graph input alone, and every value the
//! region hands to the rest of the graph is multiplied there by a value
//! also computed from that input alone, or picked at a constant token
//! position (BERT's pooler reads token 0). Per request
//! ([`Packing::start`]), in the values: the attention mask (`[batch, 1, 1,
//! seq]`, or `[batch, 1, seq, seq]` with every query of a sentence alike)
//! is 0 at real tokens and at most [`DROPPED`] at padding (so padding gets
//! exactly zero weight), every sentence keeps a token, the multiplying
//! values are exactly zero at every padding position, and every picked
//! position is a real token. A request that fails any of these, or has no
//! padding, runs the graph as it is. So does one that asks for an output the
//! region makes (a last hidden state, which holds every padding position),
//! unless the model's config says its padding positions may be zeros
//! ([`crate::plan::PADDING_POSITIONS`]): then that output is scattered back
//! like any other value the region hands on.

use std::collections::{HashMap, HashSet};

use edgeserve_onnx_graph::{ATTENTION, LINEAR};
use edgeserve_sdk::{CompareOp, Error, ReduceOp, Tensor};

use crate::host::{Value, as_bool};
use crate::plan::{Static, Step};

/// An additive attention mask at or below this gives its key exactly zero
/// weight: `exp` of anything under about -104 is 0 in f32, and attention
/// scores are nowhere near 1e9.
const DROPPED: f32 = -1e9;

/// Elementwise ops of one input that a packed region may run.
const UNARY: &[&str] = &[
    "Gelu", "Relu", "Tanh", "Sigmoid", "Erf", "Sqrt", "Exp", "Neg", "Abs", "Identity",
];

/// What a step does when a request runs packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Not in the region: runs as it is, on unpacked values.
    Outside,
    /// In the region: runs as it is, on packed values.
    Inside,
    /// A transpose into or out of attention's head-major layout, which the
    /// packed attention does not need: its output is its input.
    Alias,
    /// Attention, run as `attention-varlen`.
    Attention,
}

/// The packable region of a plan (see the module docs).
#[derive(Debug)]
pub(crate) struct Packing {
    /// Each step's role, by index.
    roles: Vec<Role>,
    /// The region's first step: where a request decides and packs.
    first: usize,
    /// The additive mask every attention of the region reads.
    mask: usize,
    /// Values made before the region that it reads per token.
    entries: Vec<usize>,
    /// Values the region makes.
    made: HashSet<usize>,
    /// Values, computed from the mask's input alone, that multiply the
    /// region's results where the rest of the graph reads them.
    pools: Vec<usize>,
    /// Token positions the rest of the graph picks from the region's
    /// results (a `Gather` on the sequence axis: BERT's pooler reads token
    /// 0); each must be a real token of every sentence.
    picks: Vec<i64>,
    /// Graph outputs the region makes (a last hidden state): a request that
    /// asks for one runs unpacked, since it returns every padding position,
    /// unless the model takes zeros there ([`crate::plan::PADDING_POSITIONS`]).
    token_outputs: Vec<usize>,
}

/// A request running packed: where its real tokens are.
pub(crate) struct Packed {
    batch: u32,
    seq: u32,
    /// Token offsets of the sentences in the packed sequence, 0 first.
    offsets: Vec<u32>,
    /// `[total]`: the flat `[batch · seq]` position of each packed token.
    rows: Tensor,
    /// `[batch · seq]`: each position's packed token, or `total` (a zero
    /// row) for padding.
    back: Tensor,
    /// Region values already scattered back for readers outside it.
    unpacked: HashSet<usize>,
}

impl Packing {
    /// Finds the region in `steps` (in order), moving the steps computed
    /// from the attention mask's input alone to the front so the mask and
    /// the pooling weights are known when the region starts. `None` when
    /// the graph has no such region.
    pub(crate) fn find(
        steps: &mut [Step],
        statics: &HashMap<usize, Static>,
        outputs: &[usize],
    ) -> Option<Packing> {
        let attentions: Vec<usize> = (0..steps.len())
            .filter(|&i| steps[i].node.op == ATTENTION)
            .collect();
        let mask = steps[*attentions.first()?]
            .inputs
            .get(3)
            .copied()
            .flatten()?;
        if attentions
            .iter()
            .any(|&i| steps[i].inputs.get(3).copied().flatten() != Some(mask))
        {
            return None;
        }
        let from_mask = from_one_input(steps, statics, mask)?;
        // A stable sort: the mask's steps first, each group in its order.
        steps.sort_by_key(|s| !s.outputs.iter().all(|o| from_mask.contains(o)));

        let producer: HashMap<usize, usize> = steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.outputs.iter().map(move |&o| (o, i)))
            .collect();
        let mut readers: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            for (at, slot) in s.inputs.iter().enumerate() {
                if let Some(slot) = slot {
                    readers.entry(*slot).or_default().push((i, at));
                }
            }
        }
        let is_static = |slot: usize| statics.contains_key(&slot);
        let mut roles: Vec<Role> = steps
            .iter()
            .map(|s| {
                // Steps on the mask's values (but attention, which takes
                // the mask itself) stay out: those values are not per token.
                let on_mask = s.outputs.iter().any(|o| from_mask.contains(o))
                    || s.node.op != ATTENTION
                        && s.inputs.iter().flatten().any(|i| from_mask.contains(i));
                if on_mask {
                    Role::Outside
                } else {
                    candidate(s, statics, mask)
                }
            })
            .collect();

        // Drop steps whose neighbours cannot be packed until none is left.
        loop {
            let made: HashSet<usize> = region_outputs(steps, &roles);
            // Values computed outside the region from its results (a
            // pooled output): never per-token inputs of the region.
            let mut after = HashSet::new();
            for (step, role) in steps.iter().zip(&roles) {
                let reads = |s: &usize| made.contains(s) || after.contains(s);
                if *role == Role::Outside && step.inputs.iter().flatten().any(reads) {
                    after.extend(step.outputs.iter().copied());
                }
            }
            let usable = |s: usize| made.contains(&s) || !after.contains(&s);
            let role_of = |slot: usize| producer.get(&slot).map(|&p| roles[p]);
            let mut dropped = Vec::new();
            for i in 0..steps.len() {
                if roles[i] == Role::Outside {
                    continue;
                }
                let step = &steps[i];
                let input = |at: usize| step.inputs.get(at).copied().flatten();
                let token = |at: usize| input(at).filter(|&s| !is_static(s));
                let keep = match roles[i] {
                    Role::Inside if step.node.op == LINEAR => token(0).is_some_and(usable),
                    Role::Inside if is_binary(&step.node.op) => {
                        (0..2).any(|at| token(at).is_some_and(|s| made.contains(&s)))
                            && (0..2).all(|at| token(at).is_none_or(usable))
                    }
                    Role::Inside => token(0).is_some_and(|s| made.contains(&s)),
                    Role::Alias => {
                        let into = readers.get(&step.outputs[0]).is_some_and(|r| {
                            r.iter()
                                .all(|&(j, at)| roles[j] == Role::Attention && at != 1)
                        });
                        let out_of = token(0).and_then(role_of) == Some(Role::Attention);
                        token(0).is_some_and(|s| made.contains(&s)) && (into || out_of)
                    }
                    Role::Attention => {
                        let via_alias =
                            |at: usize| token(at).and_then(role_of) == Some(Role::Alias);
                        via_alias(0)
                            && via_alias(2)
                            && token(1).is_some_and(|s| made.contains(&s))
                            && readers
                                .get(&step.outputs[0])
                                .is_some_and(|r| r.iter().all(|&(j, _)| roles[j] == Role::Alias))
                    }
                    Role::Outside => unreachable!("skipped above"),
                };
                if !keep {
                    dropped.push(i);
                }
            }
            if dropped.is_empty() {
                break;
            }
            for i in dropped {
                roles[i] = Role::Outside;
            }
        }
        if !roles.contains(&Role::Attention) {
            return None;
        }
        let made = region_outputs(steps, &roles);
        let first = roles.iter().position(|&r| r != Role::Outside)?;

        // What the region reads from before it: made before it starts and
        // read by nothing else (it is replaced by its packed form).
        let mut entries = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            if roles[i] == Role::Outside {
                continue;
            }
            for slot in step.inputs.iter().flatten() {
                if made.contains(slot) || is_static(*slot) || slot == &mask {
                    continue;
                }
                let before = producer.get(slot).is_none_or(|&p| p < first);
                let only_region = readers[slot]
                    .iter()
                    .all(|&(j, _)| roles[j] != Role::Outside);
                if !before || !only_region || outputs.contains(slot) {
                    return None;
                }
                if !entries.contains(slot) {
                    entries.push(*slot);
                }
            }
        }
        // What the rest of the graph reads from the region: only through a
        // product with a value made from the mask's input alone, or picked
        // at constant positions of the sequence.
        let mut pools = Vec::new();
        let mut picks = Vec::new();
        let token_outputs: Vec<usize> = outputs
            .iter()
            .copied()
            .filter(|o| made.contains(o))
            .collect();
        for slot in &made {
            for &(j, at) in readers.get(slot).into_iter().flatten() {
                if roles[j] != Role::Outside {
                    continue;
                }
                let step = &steps[j];
                if step.node.op == "Gather" && at == 0 && step.node.int("axis", 0) == 1 {
                    let index = step.inputs.get(1).copied().flatten();
                    match index.and_then(|i| statics.get(&i)) {
                        Some(Static::Const(c)) => {
                            picks.extend(c.data.iter().map(|&v| v as i64));
                            continue;
                        }
                        _ => return None,
                    }
                }
                let other = step.inputs.get(1 - at.min(1)).copied().flatten();
                match other {
                    Some(o)
                        if step.node.op == "Mul"
                            && step.inputs.len() == 2
                            && at < 2
                            && from_mask.contains(&o) =>
                    {
                        if !pools.contains(&o) {
                            pools.push(o);
                        }
                    }
                    _ => return None,
                }
            }
        }
        Some(Packing {
            roles,
            first,
            mask,
            entries,
            made,
            pools,
            picks,
            token_outputs,
        })
    }

    /// Graph outputs made inside the region: a packed run gives them zeros
    /// at padding positions, where the graph computes a value.
    pub(crate) fn token_outputs(&self) -> &[usize] {
        &self.token_outputs
    }

    /// Step `i`'s role when a request runs packed.
    pub(crate) fn role(&self, i: usize) -> Role {
        self.roles[i]
    }

    /// The region's first step.
    pub(crate) fn first(&self) -> usize {
        self.first
    }

    /// Decides at the region's first step whether this request runs packed
    /// and, if so, packs the region's entries in `values`.
    pub(crate) fn start(&self, values: &mut [Option<Value>]) -> Result<Option<Packed>, Error> {
        let Some(Value::Host(mask)) = &values[self.mask] else {
            return Ok(None);
        };
        let (batch, rows, seq) = match mask.shape()[..] {
            [b, 1, 1, s] => (b, 1, s),
            // Per query too, as SDPA exports expand it: packable when every
            // query of a sentence sees the same keys.
            [b, 1, q, s] if q == s => (b, q, s),
            _ => return Ok(None),
        };
        if batch == 0 || seq == 0 {
            return Ok(None);
        }
        let mut pools = Vec::with_capacity(self.pools.len());
        for &slot in &self.pools {
            let Some(Value::Host(pool)) = &values[slot] else {
                return Ok(None);
            };
            let fits = matches!(pool.shape()[..], [b, s] | [b, s, 1] if b == batch && s == seq);
            if !fits {
                return Ok(None);
            }
            pools.push(pool);
        }
        for &slot in &self.entries {
            let Some(Value::Host(x)) = &values[slot] else {
                return Ok(None);
            };
            if x.rank() < 2 || x.shape()[0] != batch || x.shape()[1] != seq {
                return Ok(None);
            }
        }
        // What the decision reads, in one read-back (a GPU waits once):
        // the keys each sentence sees, then for a per-query mask whether
        // every query row equals the first (checked on the host, so that a
        // [batch, 1, seq, seq] mask is never copied out whole), then each
        // pooling's weights.
        let cells = (batch * seq) as usize;
        let first_row;
        let first = if rows == 1 {
            mask
        } else {
            first_row = mask.slice(2, 0, 1)?;
            &first_row
        };
        let same = if rows > 1 {
            let same = as_bool(&mask.compare(CompareOp::Equal, first)?)?;
            Some(same.reshape(&[-1])?.reduce(ReduceOp::Min, 0, false)?)
        } else {
            None
        };
        let mut parts: Vec<&Tensor> = vec![first];
        parts.extend(same.as_ref());
        parts.extend(pools);
        let mut read = Tensor::read_f32_all(&parts)?.into_iter();
        let bias = read.next().unwrap_or_default();
        if same.is_some() && read.next() != Some(vec![1.0]) {
            return Ok(None);
        }
        let weights: Vec<f32> = read.flatten().collect();
        let mut keep = Vec::with_capacity(bias.len());
        for &b in &bias {
            if b == 0.0 {
                keep.push(true);
            } else if b <= DROPPED {
                keep.push(false);
            } else {
                return Ok(None);
            }
        }
        let every_sentence_keeps = keep.chunks(seq as usize).all(|s| s.contains(&true));
        if !every_sentence_keeps || !keep.contains(&false) {
            return Ok(None);
        }
        for &p in &self.picks {
            let at = if p < 0 { p + i64::from(seq) } else { p };
            let real = |sentence: &[bool]| {
                usize::try_from(at).is_ok_and(|a| sentence.get(a) == Some(&true))
            };
            if !keep.chunks(seq as usize).all(real) {
                return Ok(None);
            }
        }
        for pool in weights.chunks(cells) {
            if pool.iter().zip(&keep).any(|(&w, &k)| !k && w != 0.0) {
                return Ok(None);
            }
        }
        let rows: Vec<i32> = (0..keep.len() as i32)
            .filter(|&p| keep[p as usize])
            .collect();
        let total = rows.len() as u32;
        let mut back = Vec::with_capacity(keep.len());
        let mut next = 0;
        for &k in &keep {
            back.push(if k { next } else { total as i32 });
            next += i32::from(k);
        }
        let mut offsets = vec![0];
        for sentence in keep.chunks(seq as usize) {
            let kept = sentence.iter().filter(|&&k| k).count() as u32;
            offsets.push(offsets.last().copied().unwrap_or(0) + kept);
        }
        let packed = Packed {
            batch,
            seq,
            offsets,
            rows: Tensor::from_slice(&[total], &rows)?,
            back: Tensor::from_slice(&[keep.len() as u32], &back)?,
            unpacked: HashSet::new(),
        };
        for &slot in &self.entries {
            if let Some(Value::Host(x)) = &values[slot] {
                values[slot] = Some(Value::Host(packed.pack(x)?));
            }
        }
        Ok(Some(packed))
    }

    /// Scatters back the region's values among `slots`: those a step
    /// outside the region reads, or the outputs a request gets.
    pub(crate) fn unpack(
        &self,
        slots: impl IntoIterator<Item = usize>,
        packed: &mut Packed,
        values: &mut [Option<Value>],
    ) -> Result<(), Error> {
        for slot in slots {
            if !self.made.contains(&slot) || !packed.unpacked.insert(slot) {
                continue;
            }
            // A step of the region may have run on a value already
            // scattered back for a reader outside it (an `Identity` of the
            // hidden state the pooling reads too): its result is too.
            if let Some(Value::Host(x)) = &values[slot]
                && packed.holds(x)
            {
                values[slot] = Some(Value::Host(packed.unpack(x)?));
            }
        }
        Ok(())
    }
}

impl Packed {
    /// `[batch, seq, rest..]` → `[1, total, rest..]`.
    fn pack(&self, x: &Tensor) -> Result<Tensor, Error> {
        let rest = dims(&x.shape()[2..]);
        let flat = x.reshape(&[&[(self.batch * self.seq) as i32][..], &rest].concat())?;
        let total = self.rows.numel() as i32;
        flat.gather(&self.rows, 0)?
            .reshape(&[&[1, total][..], &rest].concat())
    }

    /// Whether `x` is packed: `[1, total, ..]`, which no `[batch, seq, ..]`
    /// with padding can be.
    fn holds(&self, x: &Tensor) -> bool {
        x.shape().get(..2) == Some(&[1, self.rows.numel() as u32][..])
    }

    /// `[1, total, rest..]` → `[batch, seq, rest..]`, zeros at padding.
    fn unpack(&self, x: &Tensor) -> Result<Tensor, Error> {
        let shape = x.shape();
        let rest = dims(&shape[2..]);
        let tokens = x.reshape(&[&[shape[1] as i32][..], &rest].concat())?;
        let zero_shape: Vec<u32> = [&[1][..], &shape[2..]].concat();
        let zero = Tensor::full(x.dtype(), &zero_shape, 0.0)?;
        Tensor::concat(&[&tokens, &zero], 0)?
            .gather(&self.back, 0)?
            .reshape(&[&[self.batch as i32, self.seq as i32][..], &rest].concat())
    }

    /// Attention over the packed `q`, `k`, `v` (`[1, total, heads, d]`, the
    /// head-major transposes skipped), each sentence alone.
    pub(crate) fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
    ) -> Result<Tensor, Error> {
        let tokens = |t: &Tensor| t.reshape(&dims(&t.shape()[1..]));
        let out = tokens(q)?.attention_varlen(
            &tokens(k)?,
            &tokens(v)?,
            &self.offsets,
            Some(scale),
            false,
        )?;
        let shape = out.shape();
        out.reshape(&[&[1][..], &dims(&shape)].concat())
    }
}

fn dims(shape: &[u32]) -> Vec<i32> {
    shape.iter().map(|&d| d as i32).collect()
}

fn is_binary(op: &str) -> bool {
    matches!(op, "Add" | "Sub" | "Mul" | "Div")
}

/// The values computed from the graph input that `mask` comes from and
/// constants alone, that input included; `None` unless `mask` comes from
/// exactly one graph input.
fn from_one_input(
    steps: &[Step],
    statics: &HashMap<usize, Static>,
    mask: usize,
) -> Option<HashSet<usize>> {
    let producer: HashMap<usize, &Step> = steps
        .iter()
        .flat_map(|s| s.outputs.iter().map(move |&o| (o, s)))
        .collect();
    let mut sources = HashSet::new();
    let mut todo = vec![mask];
    let mut seen = HashSet::new();
    while let Some(slot) = todo.pop() {
        if !seen.insert(slot) || statics.contains_key(&slot) {
            continue;
        }
        match producer.get(&slot) {
            Some(step) => todo.extend(step.inputs.iter().flatten()),
            None => {
                sources.insert(slot);
            }
        }
    }
    let source = match sources.into_iter().collect::<Vec<_>>()[..] {
        [one] => one,
        _ => return None,
    };
    let mut from = HashSet::from([source]);
    for step in steps {
        let all = step
            .inputs
            .iter()
            .flatten()
            .all(|s| from.contains(s) || statics.contains_key(s));
        if all && step.inputs.iter().flatten().any(|s| from.contains(s)) {
            from.extend(step.outputs.iter().copied());
        }
    }
    Some(from)
}

/// The role `step` may take judged by itself; its neighbours are checked
/// by [`Packing::find`].
fn candidate(step: &Step, statics: &HashMap<usize, Static>, mask: usize) -> Role {
    let node = &step.node;
    let input = |at: usize| step.inputs.get(at).copied().flatten();
    let fixed = |at: usize| input(at).is_some_and(|s| statics.contains_key(&s));
    let one_output = step.outputs.len() == 1;
    let role = match node.op.as_str() {
        op if op == ATTENTION => {
            let k_heads = node.ints("k_perm") == Some(&[0, 2, 1, 3]);
            if k_heads && input(3) == Some(mask) && (0..3).all(|at| input(at).is_some()) {
                Role::Attention
            } else {
                Role::Outside
            }
        }
        "Transpose" if node.ints("perm") == Some(&[0, 2, 1, 3]) => Role::Alias,
        op if op == LINEAR && fixed(1) && fixed(2) => Role::Inside,
        "LayerNormalization"
            if node.int("axis", -1) == -1 && fixed(1) && (input(2).is_none() || fixed(2)) =>
        {
            Role::Inside
        }
        op if UNARY.contains(&op) && step.inputs.len() == 1 => Role::Inside,
        op if is_binary(op) && step.inputs.len() == 2 => {
            // A constant operand may only broadcast along the last axis.
            let small = |at: usize| match input(at).and_then(|s| statics.get(&s)) {
                None => true,
                Some(Static::Const(c)) => c.shape.len() <= 1,
                Some(Static::Weight(w)) => w.rank() <= 1,
            };
            if small(0) && small(1) && !(fixed(0) && fixed(1)) {
                Role::Inside
            } else {
                Role::Outside
            }
        }
        "Reshape" if node.int("allowzero", 0) == 0 => {
            match input(1).and_then(|s| statics.get(&s)) {
                // Keeping the first two axes (ONNX's 0: copy that dim).
                Some(Static::Const(c))
                    if c.data.len() >= 2 && c.data[0] == 0.0 && c.data[1] == 0.0 =>
                {
                    Role::Inside
                }
                _ => Role::Outside,
            }
        }
        _ => Role::Outside,
    };
    if one_output { role } else { Role::Outside }
}

/// The values made by the steps `roles` puts in the region.
fn region_outputs(steps: &[Step], roles: &[Role]) -> HashSet<usize> {
    steps
        .iter()
        .zip(roles)
        .filter(|(_, r)| **r != Role::Outside)
        .flat_map(|(s, _)| s.outputs.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use edgeserve_onnx_graph::Attr;

    use super::*;
    use crate::plan::tests::Graph;

    impl Graph {
        fn linear(&mut self, x: &str, n: usize, k: usize, activation: Option<&str>) -> String {
            let (w, b) = (self.constant(&[n, k], &[]), self.constant(&[n], &[]));
            let mut attrs = vec![("transB", Attr::Int(1))];
            if let Some(a) = activation {
                attrs.push(("activation", Attr::String(a.into())));
            }
            self.op(LINEAR, &[x, &w, &b], &attrs)
        }

        fn layer_norm(&mut self, x: &str) -> String {
            let (g, b) = (self.constant(&[8], &[]), self.constant(&[8], &[]));
            self.op(
                "LayerNormalization",
                &[x, &g, &b],
                &[("axis", Attr::Int(-1))],
            )
        }

        fn heads(&mut self, x: &str, transpose: bool) -> String {
            let shape = self.constant(&[4], &[0.0, 0.0, 2.0, 4.0]);
            let y = self.op("Reshape", &[x, &shape], &[]);
            if !transpose {
                return y;
            }
            self.op(
                "Transpose",
                &[&y],
                &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
            )
        }

        fn find(&mut self, outputs: &[&str]) -> Option<Packing> {
            let outputs: Vec<usize> = outputs.iter().map(|o| self.slot(o)).collect();
            Packing::find(&mut self.steps, &self.statics, &outputs)
        }
    }

    /// A two-layer BERT as `edgeserve import` leaves it (fused linears and
    /// attention, hidden size 8 in 2 heads), mean-pooled over the mask;
    /// `bias_also_from` makes the attention mask depend on a second input
    /// too. Returns the graph, the embeddings' layer norm, the pooling
    /// weights, the last hidden state and the pooled output.
    fn bert(bias_also_from: Option<&str>) -> (Graph, String, String, String, String) {
        let mut g = Graph::default();
        let table = g.constant(&[100, 8], &[]);
        let emb = g.op("Gather", &[&table, "input_ids"], &[]);
        let mut h = g.layer_norm(&emb);
        let embedded = h.clone();
        let keep = g.op("Cast", &["attention_mask"], &[("to", Attr::Int(9))]);
        let (zero, min) = (g.constant(&[], &[0.0]), g.constant(&[], &[-3.4e38]));
        let mut bias = g.op("Where", &[&keep, &zero, &min], &[]);
        if let Some(other) = bias_also_from {
            let other = g.op("Cast", &[other], &[("to", Attr::Int(1))]);
            bias = g.op("Add", &[&bias, &other], &[]);
        }
        let axes = g.constant(&[2], &[1.0, 2.0]);
        let bias = g.op("Unsqueeze", &[&bias, &axes], &[]);
        for _ in 0..2 {
            let q = g.linear(&h, 8, 8, None);
            let q = g.heads(&q, true);
            let k = g.linear(&h, 8, 8, None);
            let k = g.heads(&k, false);
            let v = g.linear(&h, 8, 8, None);
            let v = g.heads(&v, true);
            let attrs = [
                ("k_perm", Attr::Ints(vec![0, 2, 1, 3])),
                ("scale", Attr::Float(0.5)),
            ];
            let ctx = g.op(ATTENTION, &[&q, &k, &v, &bias], &attrs);
            let perm = [("perm", Attr::Ints(vec![0, 2, 1, 3]))];
            let ctx = g.op("Transpose", &[&ctx], &perm);
            let shape = g.constant(&[3], &[0.0, 0.0, 8.0]);
            let ctx = g.op("Reshape", &[&ctx, &shape], &[]);
            let out = g.linear(&ctx, 8, 8, None);
            let sum = g.op("Add", &[&out, &h], &[]);
            h = g.layer_norm(&sum);
            let ff = g.linear(&h, 32, 8, Some("Gelu"));
            let ff = g.linear(&ff, 8, 32, None);
            let sum = g.op("Add", &[&ff, &h], &[]);
            h = g.layer_norm(&sum);
        }
        let weights = g.op("Cast", &["attention_mask"], &[("to", Attr::Int(1))]);
        let last = g.constant(&[1], &[-1.0]);
        let weights = g.op("Unsqueeze", &[&weights, &last], &[]);
        let masked = g.op("Mul", &[&h, &weights], &[]);
        let axis = g.constant(&[1], &[1.0]);
        let pooled = g.op(
            "ReduceSum",
            &[&masked, &axis],
            &[("keepdims", Attr::Int(0))],
        );
        (g, embedded, weights, h, pooled)
    }

    #[test]
    fn packs_the_encoder_between_the_embeddings_and_the_pooling() {
        let (mut g, embedded, weights, _, pooled) = bert(None);
        let p = g.find(&[&pooled]).expect("a region");
        let ops = |role: Role| {
            let steps = g.steps.iter().zip(&p.roles);
            let mut ops: Vec<&str> = steps
                .filter(|(_, r)| **r == role)
                .map(|(s, _)| s.node.op.as_str())
                .collect();
            ops.sort_unstable();
            ops.dedup();
            ops
        };
        assert_eq!(ops(Role::Attention), [ATTENTION]);
        assert_eq!(ops(Role::Alias), ["Transpose"]);
        let inside = ["Add", "LayerNormalization", "Reshape", LINEAR];
        assert_eq!(ops(Role::Inside), inside);
        let count = |role: Role| p.roles.iter().filter(|&&r| r == role).count();
        // Per layer: q and v into attention, its output out of it.
        assert_eq!((count(Role::Attention), count(Role::Alias)), (2, 6));
        assert_eq!(p.entries, [g.slot(&embedded)]);
        assert_eq!(p.pools, [g.slot(&weights)]);
        // The mask's steps moved ahead of the region, which starts at the
        // first layer's first linear.
        let first = &g.steps[p.first];
        assert_eq!(first.node.op, LINEAR);
        let mask_steps = g.steps[..p.first]
            .iter()
            .filter(|s| s.outputs.contains(&p.mask) || s.outputs.contains(&g.slots[&weights]));
        assert_eq!(mask_steps.count(), 2);
        assert!(p.roles[..p.first].iter().all(|&r| r == Role::Outside));
        // The pooling reads the region from outside it.
        let pooling = g.steps.iter().position(|s| s.node.op == "Mul").unwrap();
        assert_eq!(p.roles[pooling], Role::Outside);
    }

    #[test]
    fn leaves_a_head_on_the_pooled_output_outside() {
        let (mut g, _, _, _, pooled) = bert(None);
        let logits = g.linear(&pooled, 2, 8, None);
        let p = g.find(&[&logits]).expect("a region");
        let head = g.steps.iter().position(|s| s.outputs == [g.slots[&logits]]);
        assert_eq!(p.roles[head.unwrap()], Role::Outside);
        assert_eq!(p.roles.iter().filter(|&&r| r == Role::Attention).count(), 2);
    }

    #[test]
    fn names_outputs_that_hold_padding_positions() {
        let (mut g, _, _, hidden, pooled) = bert(None);
        let p = g.find(&[&pooled, &hidden]).expect("a region");
        assert_eq!(p.token_outputs(), [g.slot(&hidden)]);
        assert_eq!(p.roles.iter().filter(|&&r| r == Role::Attention).count(), 2);
        let (mut g, _, _, _, pooled) = bert(None);
        assert_eq!(
            g.find(&[&pooled]).expect("a region").token_outputs(),
            [0usize; 0]
        );
    }

    #[test]
    fn leaves_masks_made_from_more_than_one_input() {
        let (mut g, _, _, _, pooled) = bert(Some("token_type_ids"));
        assert!(g.find(&[&pooled]).is_none());
    }

    #[test]
    fn takes_tokens_picked_at_constant_positions() {
        let (mut g, _, _, hidden, pooled) = bert(None);
        // A CLS pooling beside the mean: token 0 of every sentence, then a
        // head on it.
        let zero = g.constant(&[], &[0.0]);
        let first = g.op("Gather", &[&hidden, &zero], &[("axis", Attr::Int(1))]);
        let head = g.linear(&first, 2, 8, Some("Tanh"));
        let p = g.find(&[&pooled, &head]).expect("a region");
        assert_eq!(p.picks, [0]);
        let gather = g
            .steps
            .iter()
            .position(|s| s.node.op == "Gather" && s.outputs == [g.slots[&first]]);
        assert_eq!(p.roles[gather.unwrap()], Role::Outside);
    }

    #[test]
    fn leaves_results_read_other_than_through_the_mask() {
        // A max over the sequence reads every padding position.
        let (mut g, _, _, hidden, pooled) = bert(None);
        let axis = g.constant(&[1], &[1.0]);
        let max = g.op(
            "ReduceMax",
            &[&hidden, &axis],
            &[("keepdims", Attr::Int(0))],
        );
        assert!(g.find(&[&pooled, &max]).is_none());
        // Tokens picked by request data.
        let (mut g, _, _, hidden, pooled) = bert(None);
        let first = g.op("Gather", &[&hidden, "positions"], &[("axis", Attr::Int(1))]);
        let both = g.op("Add", &[&pooled, &first], &[]);
        assert!(g.find(&[&both]).is_none());
    }
}
