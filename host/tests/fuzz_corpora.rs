//! The fuzz targets on stable, in the test suite: every committed input
//! (the seeds in `fuzz/corpus/<target>/` and the inputs of fixed bugs in
//! `fuzz/regressions/<target>/`) runs through its target, then a bounded
//! random run mutates those inputs a fixed number of times from a fixed seed
//! (decompression bombs run once, unmutated). The coverage-guided runs are
//! cargo-fuzz's, on nightly (`fuzz/`, FUZZING.md).
//!
//! `EDGESERVE_FUZZ_MUTATIONS` sets the mutations per target (default 2000).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use edgeserve::fuzz::TARGETS;

/// `fuzz/`, found from `CARGO_MANIFEST_DIR` as cargo sets it for the
/// running test rather than as compiled in (see `edgeserve_e2e::repo_root`).
fn fuzz_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../fuzz")
}

/// The committed inputs of `target`, in a stable order.
fn committed(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut inputs = Vec::new();
    for folder in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(folder).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a readable corpus file");
            inputs.push((path, data));
        }
    }
    inputs.sort();
    inputs
}

/// Runs `input`; on a panic, saves it for replay and fails naming it.
fn run_one(target: &str, run: fn(&[u8]), input: &[u8], origin: &str) {
    if catch_unwind(AssertUnwindSafe(|| run(input))).is_err() {
        let saved =
            std::env::temp_dir().join(format!("edgeserve-fuzz-{target}-{:016x}", fnv1a(input)));
        std::fs::write(&saved, input).expect("saving the failing input");
        panic!(
            "{target} panicked on {origin}; the input is saved in {} (replay it with \
             `cargo +nightly fuzz run {target} {}` in fuzz/, or copy it to \
             fuzz/regressions/{target}/ once fixed)",
            saved.display(),
            saved.display()
        );
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64*: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that tend to matter to parsers: bounds, digits, JSON and TOML
/// punctuation.
const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff0123456789-.eE\"'[]{}:,=\n\\";

/// One to four stacked mutations of `data`, splicing from `other`.
fn mutate(rng: &mut Rng, data: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => out.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            3 if at < out.len() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            4 if at < out.len() => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, copy);
            }
            _ if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            _ => {}
        }
    }
    out
}

fn check(target: &str) {
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, run)| run)
        .expect("a listed target");
    let inputs = committed(target);
    assert!(!inputs.is_empty(), "fuzz/corpus/{target} holds no inputs");
    for (path, data) in &inputs {
        run_one(target, run, data, &path.display().to_string());
    }
    let mutations: usize = std::env::var("EDGESERVE_FUZZ_MUTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    // Decompression bombs run once above; mutating them would spend the
    // run's time decompressing.
    let pool: Vec<&[u8]> = inputs
        .iter()
        .filter(|(path, _)| !path.to_string_lossy().contains("bomb"))
        .map(|(_, data)| data.as_slice())
        .collect();
    let mut rng = Rng(fnv1a(target.as_bytes()) | 1);
    for i in 0..mutations {
        let data = pool[rng.below(pool.len())];
        let other = pool[rng.below(pool.len())];
        let input = mutate(&mut rng, data, other);
        run_one(target, run, &input, &format!("mutation {i}"));
    }
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_test_and_a_cargo_fuzz_binary() {
            let tested = [$(stringify!($name)),*];
            let listed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
            assert_eq!(listed, tested);
            for name in listed {
                let binary = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
                assert!(binary.is_file(), "{} is missing", binary.display());
            }
        }
    };
}

targets!(
    oip_json,
    oip_binary,
    safetensors,
    bundle_tar,
    model_config,
    shape_rules,
);
