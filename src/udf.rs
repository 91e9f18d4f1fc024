//! Scalar functions the SQL stages call, registered with [`register_all`].
//!
//! - `binomial_p_value(k, n, p, d)`: the one-sided p-value of seeing k or
//!   more follow-ups among n triggers when each is followed with the baseline
//!   probability p, on effective counts k/d and n/d: P(X ≥ k/d) for
//!   X ~ Binomial(n/d, p), computed as the regularized incomplete beta
//!   I_p(k/d, n/d − k/d + 1) so that non-integer counts are exact. d ≥ 1 is the
//!   design effect of clustered trials (contacts of one customer are not
//!   independent); d = 1 is the plain binomial test. Null when an input is
//!   null; 1 when k ≤ 0; 0 when k > n or p = 0.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use statrs::function::beta::beta_reg;

/// P(X ≥ k) for X ~ Binomial(n, p), for real k and n (the regularized
/// incomplete beta function I_p(k, n − k + 1)).
pub fn binomial_upper_tail(k: f64, n: f64, p: f64) -> f64 {
    if k <= 0.0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    beta_reg(k, n - k + 1.0, p).clamp(0.0, 1.0)
}

/// The p-value of k follow-ups among n triggers at baseline p, with design
/// effect d (see the module docs).
pub fn clustered_p_value(k: f64, n: f64, p: f64, d: f64) -> f64 {
    let d = if d.is_finite() && d >= 1.0 { d } else { 1.0 };
    binomial_upper_tail(k / d, n / d, p)
}

fn binomial_p_value(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let len = args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1);
    let arrays = args
        .iter()
        .map(|a| {
            let arr = a.to_array(len)?;
            Ok(cast(&arr, &DataType::Float64)?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let (k, n, p, d) = (
        arrays[0].as_primitive::<Float64Type>(),
        arrays[1].as_primitive::<Float64Type>(),
        arrays[2].as_primitive::<Float64Type>(),
        arrays[3].as_primitive::<Float64Type>(),
    );
    let out: Float64Array = (0..len)
        .map(|i| {
            (k.is_valid(i) && n.is_valid(i) && p.is_valid(i) && d.is_valid(i))
                .then(|| clustered_p_value(k.value(i), n.value(i), p.value(i), d.value(i)))
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

/// Registers every recur function with `ctx`.
pub fn register_all(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "binomial_p_value",
        vec![DataType::Float64; 4],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(binomial_p_value),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_tail() {
        // P(X >= 1) for Binomial(1, 0.3) = 0.3; P(X >= 2) for Binomial(2, 0.5) = 0.25
        assert!((binomial_upper_tail(1.0, 1.0, 0.3) - 0.3).abs() < 1e-12);
        assert!((binomial_upper_tail(2.0, 2.0, 0.5) - 0.25).abs() < 1e-12);
        assert_eq!(binomial_upper_tail(0.0, 10.0, 0.5), 1.0);
        assert_eq!(binomial_upper_tail(3.0, 10.0, 0.0), 0.0);
        assert!(binomial_upper_tail(700.0, 1600.0, 0.01) < 1e-100);
        // P(X >= 3) for Binomial(5, 0.5) = 0.5; with design effect 1 the same
        assert!((clustered_p_value(3.0, 5.0, 0.5, 1.0) - 0.5).abs() < 1e-12);
        // clustering makes the same counts less surprising
        assert!(
            clustered_p_value(30.0, 100.0, 0.1, 5.0) > clustered_p_value(30.0, 100.0, 0.1, 1.0)
        );
    }
}
