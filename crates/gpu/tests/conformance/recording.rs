//! Long recordings: many dispatches and large tables in one submission,
//! each dispatch reading its own parameter words from the stream's arena.

use std::collections::VecDeque;

use edgeserve_tensor::Attention;
use edgeserve_tensor::BinaryOp::{Add, Mul};

use crate::{Rng, assert_close, cpu, gpu, up};

/// 1,200 steps on one thread with no read-back between them: affines whose
/// parameters differ from step to step (a dispatch reading another's words
/// would be off by at least 0.125), and at steps 100, 200 and 300 a product
/// over a batch of 4,096 whose offset table is 32 KiB, so one recording's
/// words fill more than one arena buffer; the stream is submitted part-way
/// (every 512 dispatches) and its arena written again.
#[test]
fn every_dispatch_of_a_long_recording_reads_its_own_parameters() {
    let mut rng = Rng::new(40);
    let x = rng.tensor(&[4096, 2, 3], -1.0, 1.0);
    let w = rng.tensor(&[4096, 3, 3], -0.5, 0.5);
    let gw = up(&w);
    let (mut c, mut g) = (x.clone(), up(&x));
    for step in 0..1200 {
        if [100, 200, 300].contains(&step) {
            c = cpu().matmul(&c, &w, false).unwrap();
            g = gpu().matmul(&g, &gw, false).unwrap();
        } else {
            // Exact in binary, and the offsets cancel over 22 steps.
            let factor = if step % 2 == 0 { 0.5 } else { 2.0 };
            let offset = ((step % 11) as f32 - 5.0) * 0.125;
            c = cpu().affine(&c, factor, offset).unwrap();
            g = gpu().affine(&g, factor, offset).unwrap();
        }
    }
    assert_close("long recording", &g, &c, 1e-3, 1e-3);
}

/// Variable-length attention over 6,000 tokens has a token table of 72 KB,
/// more than one arena buffer holds; the ops recorded after it in the same
/// submission still read their own words.
#[test]
fn a_table_larger_than_an_arena_buffer_is_read_whole() {
    let mut rng = Rng::new(41);
    let mut offsets = vec![0];
    for i in 0..2000 {
        offsets.push(offsets[i] + 1 + i % 5);
    }
    let total = offsets[offsets.len() - 1];
    let q = rng.tensor(&[total, 1, 4], -1.0, 1.0);
    let k = rng.tensor(&[total, 1, 4], -1.0, 1.0);
    let v = rng.tensor(&[total, 1, 4], -1.0, 1.0);
    let p = Attention {
        scale: None,
        causal: true,
    };
    let want = cpu().attention_varlen([&q, &k, &v], &offsets, p).unwrap();
    let got = gpu()
        .attention_varlen([&up(&q), &up(&k), &up(&v)], &offsets, p)
        .unwrap();
    let want_after = cpu().affine(&want, 2.0, 0.5).unwrap();
    let got_after = gpu().affine(&got, 2.0, 0.5).unwrap();
    assert_close(
        "affine after the table",
        &got_after,
        &want_after,
        1e-5,
        1e-4,
    );
    assert_close("attention-varlen, 6000 tokens", &got, &want, 1e-5, 1e-4);
}

/// Bind groups are reused within a recording (see `stream`): this records
/// 600 steps over few buffers, so the same buffers meet again and again in
/// the same roles, while results are freed and their buffers handed to new
/// results, and every step uploads a fresh operand and drops it (a new
/// buffer, whose identity a freed one could otherwise pass on). Every step
/// reads two live results and the fresh operand with its own offset: a
/// bind group that bound another dispatch's buffers, or a freed one, would
/// put a wrong value in some result. Read-backs at steps 199 and 399 end
/// recordings part-way, and every result still alive is checked.
#[test]
fn reused_bind_groups_bind_their_own_buffers() {
    let mut rng = Rng::new(42);
    let mut live: VecDeque<_> = (0..5)
        .map(|_| {
            let x = rng.tensor(&[64], -1.0, 1.0);
            (up(&x), x)
        })
        .collect();
    for step in 0..600usize {
        let (a, b) = (step % live.len(), (step * 3 + 1) % live.len());
        let fresh = rng.tensor(&[64], -1.0, 1.0);
        let offset = (step % 7) as f32 * 0.125;
        let c = cpu().binary(Add, &live[a].1, &live[b].1).unwrap();
        let c = cpu().binary(Mul, &c, &fresh).unwrap();
        let c = cpu().affine(&c, 0.5, offset).unwrap();
        let g = gpu().binary(Add, &live[a].0, &live[b].0).unwrap();
        let g = gpu().binary(Mul, &g, &up(&fresh)).unwrap();
        let g = gpu().affine(&g, 0.5, offset).unwrap();
        // The oldest result goes; its buffer serves the next step's.
        live.pop_front();
        live.push_back((g, c));
        if step % 200 == 199 {
            let (g, c) = live.back().unwrap();
            assert_close(&format!("step {step}"), g, c, 1e-5, 1e-5);
        }
    }
    for (i, (g, c)) in live.iter().enumerate() {
        assert_close(&format!("live result {i}"), g, c, 1e-5, 1e-5);
    }
}

/// Bind groups outlive their recording (see `stream`): here every step
/// ends in a read-back, a submission of its own, and the next step binds
/// the same pooled buffers and weights again, holding other values and
/// often in other roles (the result of one step is the input of the
/// next, and its buffer returns as a later result). Each step is checked
/// against the CPU: a kept bind group that bound another step's buffers
/// would put a wrong value in it.
#[test]
fn kept_bind_groups_bind_their_own_buffers_across_submissions() {
    let mut rng = Rng::new(43);
    let weights: Vec<_> = (0..3)
        .map(|_| {
            let w = rng.tensor(&[8, 8], -0.3, 0.3);
            (up(&w), w)
        })
        .collect();
    let x = rng.tensor(&[4, 8], -1.0, 1.0);
    let (mut c, mut g) = (x.clone(), up(&x));
    for step in 0..60usize {
        let (gw, cw) = &weights[step % weights.len()];
        let offset = (step % 5) as f32 * 0.25;
        c = cpu().matmul(&c, cw, false).unwrap();
        c = cpu().affine(&c, 0.5, offset).unwrap();
        g = gpu().matmul(&g, gw, false).unwrap();
        g = gpu().affine(&g, 0.5, offset).unwrap();
        assert_close(&format!("step {step}"), &g, &c, 1e-5, 1e-4);
    }
}
