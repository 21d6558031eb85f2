//! Row-major and broadcast indexing written out by hand, for references
//! that must not lean on the crate's own stride helpers. Shared by the
//! `cpu_ops` and `shape_properties` test binaries.

/// Row-major multi-index of `index` in `shape`.
pub fn coords(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        c[d] = index % shape[d];
        index /= shape[d];
    }
    c
}

/// Row-major flat position of multi-index `c` in `shape`.
pub fn flat(c: &[usize], shape: &[usize]) -> usize {
    c.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Index into `shape` of output coordinates `c` under NumPy broadcasting:
/// trailing dimensions aligned, size-1 dimensions pinned to 0.
pub fn bcast_index(c: &[usize], shape: &[usize]) -> usize {
    let lead = c.len() - shape.len();
    let cc: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 1 { 0 } else { c[lead + i] })
        .collect();
    flat(&cc, shape)
}
