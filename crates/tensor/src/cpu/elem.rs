//! The element types kernels compute on, and dispatch from a runtime dtype
//! to them.

use bytemuck::Pod;
use half::f16;

use crate::DType;

/// An element type the kernels compute on, with the conversions `cast` and
/// `full` need. Conversions to integers truncate toward zero and saturate.
pub(super) trait Elem: Pod + PartialOrd + Send + Sync + 'static {
    const DTYPE: DType;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn to_i64(self) -> i64;
    fn from_i64(v: i64) -> Self;

    /// Converts between element types with as few roundings as possible.
    #[inline(always)]
    fn convert<S: Elem>(s: S) -> Self {
        match (S::DTYPE.is_float(), Self::DTYPE.is_float()) {
            // f32 holds every f16 exactly and rounds an integer only once.
            (_, true) => Self::from_f32(s.to_f32()),
            // f64 holds every f32 exactly, and `as` saturates.
            (true, false) => Self::from_f64(s.to_f64()),
            (false, false) => Self::from_i64(s.to_i64()),
        }
    }
}

impl Elem for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v as f32
    }
}

impl Elem for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_i64(self) -> i64 {
        self.to_f32() as i64
    }
    fn from_i64(v: i64) -> Self {
        f16::from_f32(v as f32)
    }
}

macro_rules! int_elem {
    ($t:ty, $dtype:expr) => {
        impl Elem for $t {
            const DTYPE: DType = $dtype;
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(v: i64) -> Self {
                v.clamp(<$t>::MIN as i64, <$t>::MAX as i64) as $t
            }
        }
    };
}

int_elem!(i32, DType::I32);
int_elem!(i64, DType::I64);
int_elem!(u8, DType::U8);

/// Calls `$f::<T>(args)` with `T` the plain integer type of `$dtype`'s size,
/// for operations that only move elements.
macro_rules! by_size {
    ($dtype:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype.size() {
            1 => $f::<u8>($($arg),*),
            2 => $f::<u16>($($arg),*),
            4 => $f::<u32>($($arg),*),
            _ => $f::<u64>($($arg),*),
        }
    };
}
pub(super) use by_size;

/// Calls `$f::<T>(args)` with `T` the element type of `$dtype`; a leading
/// type argument (`f::<S>`) is passed through ahead of `T`.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident $(::<$pre:ty>)? ($($arg:expr),* $(,)?)) => {
        match $dtype {
            DType::F32 => $f::<$($pre,)? f32>($($arg),*),
            DType::F16 => $f::<$($pre,)? half::f16>($($arg),*),
            DType::I32 => $f::<$($pre,)? i32>($($arg),*),
            DType::I64 => $f::<$($pre,)? i64>($($arg),*),
            DType::U8 => $f::<$($pre,)? u8>($($arg),*),
        }
    };
}
pub(super) use by_dtype;

/// The little-endian bytes of `value` as one element of `dtype`, converted
/// as `full` converts it (truncating toward zero, saturating).
pub(crate) fn element_bytes(dtype: DType, value: f64) -> Vec<u8> {
    fn of<T: Elem>(value: f64) -> Vec<u8> {
        bytemuck::bytes_of(&T::from_f64(value)).to_vec()
    }
    by_dtype!(dtype, of(value))
}
