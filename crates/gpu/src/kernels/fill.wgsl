// Fills words with a two-word pattern. p: [n_words, even word, odd word].
@group(0) @binding(1) var<storage, read_write> y: array<u32>;

fn item(idx: u32) {
    y[idx] = select(p[1], p[2], (idx & 1u) == 1u);
}
